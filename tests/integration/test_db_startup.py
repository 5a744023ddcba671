"""Start-up against a bad MySQL URL: `serve` and `check-config` stop with one line naming it.

Runs the real `syncd` console script against the suite's real MariaDB (wrong password, unknown
database, wrong port), an unknown host name, and two TCP servers that are not MySQL at all (one
sends an SSH banner, one never answers).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from bench.mariadb import MariaDBServer, free_port
from schedule.database import describe_db_error, server_version_problem

SYNCD = str(Path(sys.executable).parent / "syncd")


def _env(url: str, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNCD_")}
    env.update(
        SYNCD_DATABASE_URL=url,
        SYNCD_DB_TIMEOUT_S="2",
        SYNCD_PORT="0",
        SYNCD_STATE_DIR=str(tmp_path),
        SYNCD_LOG_FORMAT="text",
    )
    return env


def run_syncd(command: str, url: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Run `syncd <command>` with only the database URL (and a short DB timeout) set."""
    return subprocess.run(
        [SYNCD, command],
        env=_env(url, tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def run_both(url: str, tmp_path: Path) -> list[subprocess.CompletedProcess[str]]:
    """`syncd check-config` and `syncd serve`, side by side (halves the wall time)."""
    procs = [
        subprocess.Popen(
            [SYNCD, command],
            env=_env(url, tmp_path),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for command in ("check-config", "serve")
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        results.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return results


def assert_one_line(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    """Non-zero exit, no traceback, and a last stderr line that names the problem."""
    assert result.returncode != 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("syncd: database mysql+pymysql://"), result.stderr
    assert ":***@" in last or "@" not in last.split("//", 1)[1].split("/", 1)[0]
    for needle in needles:
        assert needle in last, last
    return last


@pytest.fixture
def server_url(mariadb_url: str) -> str:
    return mariadb_url


def _both(url: str, tmp_path: Path, *needles: str) -> None:
    for result in run_both(url, tmp_path):
        assert_one_line(result, *needles)


def test_wrong_password(server_url: str, tmp_path: Path) -> None:
    url = make_url(server_url).set(password="not-the-password")
    rendered = url.render_as_string(hide_password=False)
    _both(rendered, tmp_path, "access denied", "wrong user name or password")


def test_unknown_database(mariadb_server: MariaDBServer, tmp_path: Path) -> None:
    url = mariadb_server.url("no_such_database")
    _both(url, tmp_path, "unknown database 'no_such_database'", "syncd migrate")


def test_wrong_port(server_url: str, tmp_path: Path) -> None:
    url = make_url(server_url).set(port=free_port()).render_as_string(hide_password=False)
    _both(url, tmp_path, "cannot connect", "connection refused")


def test_unknown_host(tmp_path: Path) -> None:
    url = "mysql+pymysql://syncd:pw@no-such-host.invalid:3306/syncd"
    _both(url, tmp_path, "no-such-host.invalid:3306", "unknown host name")


class FakeServer:
    """A TCP listener that is not MySQL: it sends `banner` (or nothing) and holds the line."""

    def __init__(self, banner: bytes) -> None:
        self.banner = banner
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port: int = self.sock.getsockname()[1]
        self.closed = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conns = []
        self.sock.settimeout(0.2)
        while not self.closed.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                break
            if self.banner:
                conn.sendall(self.banner)
            conns.append(conn)
        for conn in conns:
            conn.close()

    def close(self) -> None:
        self.closed.set()
        self.thread.join(timeout=5)
        self.sock.close()


@pytest.fixture(params=[b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n", b""], ids=["ssh", "silent"])
def fake_server(request: pytest.FixtureRequest) -> Iterator[FakeServer]:
    server = FakeServer(request.param)
    yield server
    server.close()


def test_not_a_mysql_server(fake_server: FakeServer, tmp_path: Path) -> None:
    url = f"mysql+pymysql://syncd:pw@127.0.0.1:{fake_server.port}/syncd"
    needle = "not a MySQL/MariaDB server" if fake_server.banner else "MySQL-compatible server"
    _both(url, tmp_path, f"127.0.0.1:{fake_server.port}", needle)


def test_supported_server_passes_the_version_check(
    server_url: str, mariadb_server: MariaDBServer, tmp_path: Path
) -> None:
    assert server_version_problem(mariadb_server.version) is None
    result = run_syncd("check-config", server_url, tmp_path)
    # The server is fine; only the schema is missing, and that is what it says.
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].endswith("run `syncd migrate`")


@pytest.mark.parametrize(
    ("version", "problem"),
    [
        ("10.11.6-MariaDB-0+deb12u1", None),
        ("10.6.0-MariaDB", None),
        ("5.5.5-10.11.6-MariaDB", None),
        ("8.0.36", None),
        ("8.4.0-commercial", None),
        ("10.5.23-MariaDB", "MariaDB 10.5.23 is too old"),
        ("10.3.39-MariaDB-log", "MariaDB 10.3.39 is too old"),
        ("5.7.44-log", "MySQL 5.7.44 is too old"),
        ("TiDB-ish", "cannot read the server version"),
    ],
)
def test_server_version_rule(version: str, problem: str | None) -> None:
    found = server_version_problem(version)
    if problem is None:
        assert found is None
    else:
        assert found is not None and found.startswith(problem)
        assert "MariaDB >= 10.6 or MySQL >= 8.0" in found


def test_describe_hides_the_password() -> None:
    text = describe_db_error(RuntimeError("boom"), "mysql+pymysql://u:secret@h:1/d")
    assert "secret" not in text and text == "database mysql+pymysql://u:***@h:1/d: boom"
