"""Running the real `syncd serve` as a subprocess and talking to it over HTTP."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
SYNCD = shutil.which("syncd", path=str(Path(sys.executable).parent)) or "syncd"


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until(check: Callable[[], T | None], timeout: float, what: str) -> T:
    """Poll a condition of another process until it holds; fail after `timeout` seconds.

    A subprocess cannot signal this test directly, so its HTTP API is polled at a short
    interval; the deadline bounds the wait.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value is not None and value is not False:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


class Daemon:
    """One `syncd serve` process with its environment, log file and HTTP helpers."""

    def __init__(self, env: Mapping[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.env = {**os.environ, **env, "SYNCD_PORT": str(self.port)}
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"http://127.0.0.1:{self.port}"

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a one-off `syncd` command (migrate, check-config) with this environment."""
        return subprocess.run(
            [SYNCD, *args], env=self.env, capture_output=True, text=True, timeout=60, check=check
        )

    def start(self) -> Daemon:
        """Start serving and wait until `/readyz` says ready."""
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen([SYNCD, "serve"], env=self.env, stdout=log, stderr=log)
        log.close()
        wait_until(self._ready, 30, f"daemon on port {self.port} to be ready")
        return self

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"daemon exited with {self.proc.returncode}: {self.log_tail()}")
        try:
            return self.request("GET", "/readyz")[0] == 200
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL: no clean-up at all."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def terminate(self, timeout: float = 30) -> int:
        """SIGTERM and wait for the exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def close(self) -> None:
        """Make sure the process is gone (test teardown)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def log_tail(self, lines: int = 20) -> str:
        """The end of the daemon's log, for failure messages."""
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """One HTTP call; returns (status, decoded JSON or None)."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                raw = resp.read()
                return resp.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            return exc.code, json.loads(raw) if raw else None

    def call(self, method: str, path: str, body: Any = None, expect: int = 200) -> Any:
        """An HTTP call that must answer `expect`."""
        status, data = self.request(method, path, body)
        assert status == expect, (status, data)
        return data
