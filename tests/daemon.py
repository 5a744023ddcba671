"""A real `syncd serve` subprocess on a free port, for the CLI and browser tests."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.error import HTTPError, URLError
from urllib.request import Request, urlopen

from tests.conftest import FAST

START_TIMEOUT_S = 30.0


@dataclass
class Daemon:
    """A running daemon: its base URL, process and log file."""

    url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    database_url: str

    def log(self) -> str:
        """What the daemon wrote so far (for assertion messages)."""
        return self.log_path.read_text(errors="replace")

    def call(self, method: str, path: str, body: Any = None, token: str | None = None) -> Any:
        """A JSON request to the daemon; raises HTTPError for error answers."""
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if data is not None else {}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        with urlopen(Request(self.url + path, data, headers, method=method), timeout=10) as r:
            raw = r.read()
        return json.loads(raw) if raw else None


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def daemon_env(database_url: str, state_dir: Path, port: int, **extra: str) -> dict[str, str]:
    """The environment of a fast test daemon."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNCD_")}
    for name, value in FAST.items():
        env[f"SYNCD_{name.upper()}"] = str(value)
    env.update(
        SYNCD_DATABASE_URL=database_url,
        SYNCD_STATE_DIR=str(state_dir),
        SYNCD_HOST="127.0.0.1",
        SYNCD_PORT=str(port),
        SYNCD_NODE_ID="test-daemon",
        SYNCD_LOG_LEVEL="WARNING",
    )
    env.update(extra)
    return env


@contextmanager
def running_daemon(template: Path, workdir: Path, **extra_env: str) -> Iterator[Daemon]:
    """Start `syncd serve` on a copy of the migrated template database; SIGTERM at the end."""
    workdir.mkdir(parents=True, exist_ok=True)
    db_path = workdir / "syncd.db"
    shutil.copyfile(template, db_path)
    database_url = f"sqlite:///{db_path}"
    port = free_port()
    log_path = workdir / "daemon.log"
    env = daemon_env(database_url, workdir / "state", port, **extra_env)
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "controllers.cli", "serve"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    daemon = Daemon(f"http://127.0.0.1:{port}", process, log_path, database_url)
    try:
        wait_ready(daemon)
        yield daemon
    finally:
        stop(daemon)


def wait_ready(daemon: Daemon) -> None:
    """Poll /readyz until it answers 200 (bounded); fail with the daemon's log otherwise."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if daemon.process.poll() is not None:
            raise RuntimeError(f"daemon exited with {daemon.process.returncode}:\n{daemon.log()}")
        try:
            with urlopen(daemon.url + "/readyz", timeout=2) as response:
                if response.status == 200:
                    return
        except HTTPError as exc:
            exc.close()
        except (URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.05)
    raise RuntimeError(f"daemon not ready within {START_TIMEOUT_S} s:\n{daemon.log()}")


def stop(daemon: Daemon) -> None:
    """SIGTERM and wait; kill only if it does not stop within the timeout."""
    if daemon.process.poll() is None:
        daemon.process.send_signal(signal.SIGTERM)
        try:
            daemon.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            daemon.process.kill()
            daemon.process.wait(timeout=5)
