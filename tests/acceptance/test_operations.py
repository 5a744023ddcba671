"""The real `syncd serve` as a subprocess: sd_notify messages, logs, auth, exposure rule."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.acceptance

SYNCD = str(Path(sys.executable).with_name("syncd"))
TOKEN = "tok-Secret-4711"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Daemon:
    """A running `syncd serve`, its notify socket, and its stderr file."""

    process: subprocess.Popen[bytes]
    notify: socket.socket
    port: int
    log_path: Path

    def messages_until(self, *wanted: str, timeout: float = 30) -> list[str]:
        """Lines received until each of `wanted` began a line at least once."""
        self.notify.settimeout(timeout)
        seen: list[str] = []
        while not all(any(line.startswith(w) for line in seen) for w in wanted):
            try:
                data = self.notify.recv(4096).decode()
            except TimeoutError:
                raise AssertionError(f"no {wanted!r} in {seen!r}; log:\n{self.log()}") from None
            seen.extend(data.splitlines())
        return seen

    def request(self, method: str, path: str, token: str | None, body: Any = None) -> int:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}", data=data, method=method
        )
        req.add_header("Content-Type", "application/json")
        if token is not None:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                status: int = resp.status
                return status
        except urllib.error.HTTPError as exc:
            return exc.code

    def log(self) -> str:
        return self.log_path.read_text()


def start(
    tmp_path: Path, sqlite_url: str, log_format: str = "json", **env: str
) -> Iterator[Daemon]:
    sock_path = tmp_path / "notify.sock"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(sock_path))
    port = free_port()
    environ = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SYNCD_")},
        "SYNCD_DATABASE_URL": sqlite_url,
        "SYNCD_HOST": "127.0.0.1",
        "SYNCD_PORT": str(port),
        "SYNCD_STATE_DIR": str(tmp_path / "state"),
        "SYNCD_NODE_ID": "acceptance-node",
        "SYNCD_POLL_INTERVAL_S": "0.05",
        "SYNCD_API_TOKENS": f"{TOKEN}:admin",
        "SYNCD_LOG_FORMAT": log_format,
        "NOTIFY_SOCKET": str(sock_path),
        "WATCHDOG_USEC": "400000",
        **env,
    }
    log_path = tmp_path / "stderr.log"
    with log_path.open("wb") as stderr:
        process = subprocess.Popen([SYNCD, "serve"], env=environ, stderr=stderr)
    daemon = Daemon(process, notify, port, log_path)
    try:
        yield daemon
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)
        notify.close()


@pytest.fixture
def daemon(tmp_path: Path, sqlite_url: str) -> Iterator[Daemon]:
    yield from start(tmp_path, sqlite_url)


def test_notify_auth_and_json_logs(daemon: Daemon) -> None:
    first = daemon.messages_until("READY=1")
    assert "STOPPING=1" not in first
    later = daemon.messages_until("STATUS=", "WATCHDOG=1")
    statuses = [line for line in first + later if line.startswith("STATUS=")]
    assert "STATUS=running=0 queued=0 database=ok" in statuses, statuses

    assert daemon.request("GET", "/healthz", None) == 200
    assert daemon.request("GET", "/api/sync/tasks", None) == 401
    assert daemon.request("GET", "/api/sync/tasks", "wrong") == 401
    assert daemon.request("POST", "/api/sync/tasks", TOKEN, {"task_type": "noop"}) == 201
    assert daemon.request("GET", "/api/sync/tasks", TOKEN) == 200

    daemon.process.send_signal(signal.SIGTERM)
    stopping = daemon.messages_until("STOPPING=1")
    assert "STOPPING=1" in stopping
    assert daemon.process.wait(timeout=30) == 0

    text = daemon.log()
    assert TOKEN not in text
    records = [json.loads(line) for line in text.splitlines()]
    for record in records:
        assert {"ts", "level", "logger", "msg"} <= record.keys()
    access = [r for r in records if r["logger"] == "aiohttp.access"]
    assert any('"GET /api/sync/tasks HTTP/1.1" 401' in r["msg"] for r in access)
    assert all("remote_address" not in r and "first_request_line" not in r for r in access)
    assert {r["http_status"] for r in access} >= {200, 201, 401}
    created = [r for r in records if r["msg"] == "task created"]
    assert created and created[0]["task_type"] == "noop" and created[0]["task_id"]
    assert all(r["node_id"] == "acceptance-node" for r in records)


def test_text_logs(tmp_path: Path, sqlite_url: str) -> None:
    for daemon in start(tmp_path, sqlite_url, log_format="text"):
        daemon.messages_until("READY=1")
        assert daemon.request("GET", "/api/sync/tasks", TOKEN) == 200
        daemon.process.send_signal(signal.SIGTERM)
        assert daemon.process.wait(timeout=30) == 0
        lines = daemon.log().splitlines()
        assert lines and not any(line.startswith("{") for line in lines)
        assert any(" INFO aiohttp.access: " in line and "http_status=200" in line for line in lines)
        assert TOKEN not in daemon.log()


def test_refuses_an_open_api_beyond_loopback(tmp_path: Path, sqlite_url: str) -> None:
    environ = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SYNCD_")},
        "SYNCD_DATABASE_URL": sqlite_url,
        "SYNCD_HOST": "0.0.0.0",
        "SYNCD_PORT": str(free_port()),
    }
    result = subprocess.run(
        [SYNCD, "serve"], env=environ, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "SYNCD_API_TOKENS" in lines[0] and "0.0.0.0" in lines[0]
