"""The one harness for running the real `syncd serve` as a subprocess and talking to it over HTTP.

Used by the acceptance and browser tests and by the benchmarks (which may not import tests/):
`Daemon` is one process with its environment, log file and HTTP helpers; `running_daemon` starts
one on a copy of a migrated SQLite template and stops it with SIGTERM; `wait_until` is the
bounded wait for something another process does (it cannot tell us, so its API is read again at
a short interval until the deadline).
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 30.0
POLL_S = 0.05
SYNCD = shutil.which("syncd", path=str(Path(sys.executable).parent)) or "syncd"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until(check: Callable[[], T | None], timeout: float, what: str) -> T:
    """Call `check` until it returns something true (returned); `AssertionError` naming
    `what` after `timeout` seconds. For state of another process, which cannot signal us."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(POLL_S)


def clean_environment() -> dict[str, str]:
    """This process's environment without any `SYNCD_*` variable (a daemon gets only ours)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("SYNCD_")}


class Daemon:
    """One `syncd serve` process: `env` holds its `SYNCD_*` settings (the port is chosen here).

    `nofile` runs it under that open-file limit (soft and hard); `ready_path` is what `start`
    waits to answer 200 (`/readyz`: migrated, writable, engine running).
    """

    def __init__(
        self,
        env: Mapping[str, str],
        log_path: Path,
        *,
        nofile: int | None = None,
        ready_path: str = "/readyz",
        cwd: Path | None = None,
    ) -> None:
        self.port = free_port()
        self.env = {**clean_environment(), **env, "SYNCD_PORT": str(self.port)}
        self.log_path = log_path
        self.nofile = nofile
        self.ready_path = ready_path
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"http://127.0.0.1:{self.port}"
        self._terminated = False

    @property
    def database_url(self) -> str:
        """Its `SYNCD_DATABASE_URL`."""
        return self.env["SYNCD_DATABASE_URL"]

    @property
    def node_id(self) -> str:
        """Its `SYNCD_NODE_ID` (empty when left to the default)."""
        return self.env.get("SYNCD_NODE_ID", "")

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a one-off `syncd` command (migrate, check-config) with this environment."""
        return subprocess.run(
            [SYNCD, *args], env=self.env, capture_output=True, text=True, timeout=60, check=check
        )

    def launch(self) -> Daemon:
        """Start serving without waiting (see `wait_ready`)."""
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [SYNCD, "serve"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.cwd,
                preexec_fn=self._limit if self.nofile is not None else None,
            )
        return self

    def start(self, timeout: float = START_TIMEOUT_S) -> Daemon:
        """Start serving and wait until `ready_path` answers 200."""
        return self.launch().wait_ready(timeout)

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> Daemon:
        """Wait until `ready_path` answers 200; fails with the log if the daemon exits."""
        wait_until(self._ready, timeout, f"daemon on port {self.port} to be ready")
        return self

    def _limit(self) -> None:
        assert self.nofile is not None
        resource.setrlimit(resource.RLIMIT_NOFILE, (self.nofile, self.nofile))

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"daemon exited with {self.proc.returncode}: {self.log_tail()}")
        try:
            return self.request("GET", self.ready_path)[0] == 200
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL: no clean-up at all."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    @property
    def alive(self) -> bool:
        """Whether the process runs."""
        return self.proc is not None and self.proc.poll() is None

    def begin_stop(self) -> None:
        """SIGTERM once, without waiting (to stop several daemons at the same time)."""
        if self.alive and not self._terminated:
            assert self.proc is not None
            self.proc.send_signal(signal.SIGTERM)
            self._terminated = True

    def terminate(self, timeout: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM (unless sent already) and wait for the exit code."""
        assert self.proc is not None
        self.begin_stop()
        return self.proc.wait(timeout=timeout)

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM (unless sent already) and wait; SIGKILL if it has not stopped in `timeout`."""
        if self.proc is None:
            return
        try:
            self.terminate(timeout)
        except subprocess.TimeoutExpired:
            self.close()

    def close(self) -> None:
        """Make sure the process is gone (teardown): SIGKILL if it still runs."""
        if self.proc is not None and self.alive:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def log(self) -> str:
        """What the daemon wrote so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 20) -> str:
        """The end of the daemon's log, for failure messages."""
        return "\n".join(self.log().splitlines()[-lines:])

    def cpu_seconds(self) -> float:
        """User + system CPU time used so far (Linux /proc)."""
        assert self.proc is not None
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def request(
        self, method: str, path: str, body: Any = None, token: str | None = None
    ) -> tuple[int, Any]:
        """One HTTP call; (status, decoded JSON or None), error statuses included."""
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if data is not None else {}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                raw = resp.read()
                return resp.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as exc:
            with exc:
                raw = exc.read()
            return exc.code, json.loads(raw) if raw else None

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        expect: int | None = None,
        token: str | None = None,
    ) -> Any:
        """An HTTP call that must answer `expect` (any 2xx when None); its decoded JSON."""
        status, data = self.request(method, path, body, token)
        ok = status == expect if expect is not None else 200 <= status < 300
        assert ok, (method, path, status, data)
        return data


def daemon_env(
    database_url: str,
    state_dir: Path,
    *,
    node_id: str = "test-daemon",
    settings: Mapping[str, object] | None = None,
    **extra: str,
) -> dict[str, str]:
    """The `SYNCD_*` environment of a daemon: `settings` (names of `Settings` fields, as the
    test fixtures hold them) then `extra` (`SYNCD_*` names) over the database and state."""
    env = {f"SYNCD_{name.upper()}": str(value) for name, value in (settings or {}).items()}
    env.update(
        SYNCD_DATABASE_URL=database_url,
        SYNCD_STATE_DIR=str(state_dir),
        SYNCD_HOST="127.0.0.1",
        SYNCD_NODE_ID=node_id,
        SYNCD_LOG_LEVEL="WARNING",
    )
    env.update(extra)
    return env


@contextmanager
def running_daemon(
    template: Path,
    workdir: Path,
    settings: Mapping[str, object] | None = None,
    **extra_env: str,
) -> Iterator[Daemon]:
    """`syncd serve` on a copy of the migrated SQLite `template`; SIGTERM at the end."""
    workdir.mkdir(parents=True, exist_ok=True)
    db_path = workdir / "syncd.db"
    shutil.copyfile(template, db_path)
    env = daemon_env(f"sqlite:///{db_path}", workdir / "state", settings=settings, **extra_env)
    daemon = Daemon(env, workdir / "daemon.log")
    try:
        yield daemon.start()
    finally:
        daemon.stop()
