"""Start-up and defaults of the real `syncd` command: where its state lives, what it creates
(nothing but on `migrate`), what it says about misspelt settings and a busy port, how it logs,
and the last lines of a start and of a stop."""

from __future__ import annotations

import json
import os
import pty
import socket
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.daemon import SYNCD, Daemon, free_port, wait_until

pytestmark = pytest.mark.acceptance


def bare_env(**extra: str) -> dict[str, str]:
    """The environment without any SYNCD_* (or systemd) variable, plus `extra`."""
    drop = ("SYNCD_", "STATE_DIRECTORY", "JOURNAL_STREAM", "INVOCATION_ID")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env["SYNCD_PORT"] = str(free_port())
    env.update(extra)
    return env


def syncd(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SYNCD, *args], cwd=cwd, env=bare_env(**env), capture_output=True, text=True, timeout=60
    )


def test_serve_and_check_config_create_no_database(tmp_path: Path) -> None:
    expected = f"syncd: no database at {tmp_path}/var/syncd.db: run `syncd migrate` first"
    served = syncd(tmp_path, "serve")
    assert served.returncode == 1
    assert served.stderr.splitlines()[-1].startswith(expected)
    # The state directory is absolute and said at start (JSON lines: stderr is no terminal).
    start = json.loads(served.stderr.splitlines()[0])
    assert start["state_dir"] == str(tmp_path / "var")
    checked = syncd(tmp_path, "check-config")
    assert checked.returncode == 1
    assert f"state_dir = {tmp_path}/var\n" in checked.stdout
    assert checked.stderr.splitlines()[-1].startswith(expected)
    assert list(tmp_path.iterdir()) == []  # no var/, no syncd.db


def test_migrate_makes_the_state_directory_but_not_a_mistyped_path(tmp_path: Path) -> None:
    typo = tmp_path / "sate" / "syncd.db"
    refused = syncd(tmp_path, "migrate", SYNCD_DATABASE_URL=f"sqlite:///{typo}")
    assert refused.returncode == 1
    assert refused.stderr.splitlines()[-1].startswith(
        f"syncd: directory {typo.parent} does not exist: create it first"
    )
    assert not typo.parent.exists()
    done = syncd(tmp_path, "migrate")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "var" / "syncd.db").is_file()
    checked = syncd(tmp_path, "check-config")
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.splitlines()[-1].startswith("database: reachable, schema at ")


def test_unknown_variables_are_named_with_the_nearest_setting(tmp_path: Path) -> None:
    result = syncd(tmp_path, "check-config", SYNCD_CONCURENCY="8", SYNCD_ZZZ_QQQ="1")
    assert (
        "syncd: warning: SYNCD_CONCURENCY is not a setting and is ignored;"
        " did you mean SYNCD_CONCURRENCY?"
    ) in result.stderr.splitlines()
    assert "syncd: warning: SYNCD_ZZZ_QQQ is not a setting and is ignored" in result.stderr
    assert "concurrency = 4\n" in result.stdout
    client_only = syncd(tmp_path, "check-config", SYNCD_URL="http://x", SYNCD_TOKEN="t")
    assert "warning" not in client_only.stderr


def test_a_busy_port_is_named_as_such(tmp_path: Path) -> None:
    assert syncd(tmp_path, "migrate").returncode == 0
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = syncd(tmp_path, "serve", SYNCD_PORT=str(port))
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == (
        f"syncd: cannot listen on 127.0.0.1:{port}: the port is already in use (another syncd,"
        " or another program: stop it or choose another SYNCD_PORT)"
    )
    assert "database" not in result.stderr.splitlines()[-1]


def on_a_terminal(cwd: Path, *args: str, **env: str) -> tuple[int, str]:
    """Run `syncd` with its stderr on a pseudo-terminal; (exit code, what it wrote there)."""
    primary, replica = pty.openpty()
    try:
        process = subprocess.run(
            [SYNCD, *args],
            cwd=cwd,
            env=bare_env(**env),
            stdout=subprocess.DEVNULL,
            stderr=replica,
            timeout=60,
        )
        os.close(replica)
        output = b""
        while True:
            try:
                chunk = os.read(primary, 65536)
            except OSError:  # EIO: nothing more
                break
            if not chunk:
                break
            output += chunk
    finally:
        os.close(primary)
    return process.returncode, output.decode()


def test_readable_logs_on_a_terminal_and_json_under_systemd(tmp_path: Path) -> None:
    code, text = on_a_terminal(tmp_path, "migrate")
    assert code == 0
    last = text.strip().splitlines()[-1]
    assert " INFO syncd: database migrated to " in last and not last.startswith("{")
    code, text = on_a_terminal(tmp_path, "migrate", INVOCATION_ID="0123abcd")
    assert code == 0
    assert json.loads(text.strip().splitlines()[-1])["msg"].startswith("database migrated to ")
    code, text = on_a_terminal(tmp_path, "migrate", SYNCD_LOG_FORMAT="json")
    assert json.loads(text.strip().splitlines()[-1])["level"] == "INFO"


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    env = {
        "SYNCD_DATABASE_URL": f"sqlite:///{tmp_path / 'syncd.db'}",
        "SYNCD_STATE_DIR": str(tmp_path / "state"),
        "SYNCD_SHUTDOWN_GRACE_S": "0.5",
        "SYNCD_LOG_FORMAT": "text",
    }
    d = Daemon(env, tmp_path / "daemon.log")
    d.run("migrate")
    yield d
    d.close()


def test_start_ends_with_the_dashboard_url_and_stop_logs_release_and_end(daemon: Daemon) -> None:
    daemon.start()
    wait_until(lambda: "ready: " in daemon.log_tail(), 10, "the ready line")
    assert f"ready: the dashboard is at http://127.0.0.1:{daemon.port}/" in daemon.log_tail()
    slow = {"task_type": "noop", "parameters": {"sleep_s": 60, "steps": 600}}
    ids = [daemon.call("POST", "/api/sync/tasks", slow, expect=201)["id"] for _ in range(2)]

    def both_running() -> bool:
        statuses = [daemon.call("GET", f"/api/sync/tasks/{i}")["status"] for i in ids]
        return statuses == ["running", "running"]

    wait_until(both_running, 10, "the slow tasks to start")
    assert daemon.terminate() == 0
    lines = daemon.log_tail(10).splitlines()
    said = [
        next(i for i, line in enumerate(lines) if text in line)
        for text in (
            "INFO syncd: stopping ",
            "waiting up to 0.5 s for 2 running task(s) to finish",
            "0 task(s) finished, 2 given back to the queue",
        )
    ]
    assert said == sorted(said)
    assert " INFO syncd: stopped " in lines[-1]  # the last word
    db = daemon.env["SYNCD_DATABASE_URL"].removeprefix("sqlite:///")
    with sqlite3.connect(db) as conn:
        statuses = {row[0] for row in conn.execute("SELECT status FROM sync_tasks")}
    conn.close()
    assert statuses == {"pending"}
