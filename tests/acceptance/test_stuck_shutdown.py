"""SIGTERM ends the real daemon in time even while a source read is stuck in its driver.

The running `full_sync` reads from a loopback tarpit (a MySQL port that accepts and trickles
bytes without ever finishing the handshake), so its reading thread never returns. The daemon
must still exit within `SYNCD_SHUTDOWN_GRACE_S` plus a few seconds, with exit code 0, and the
task must be back to `pending` with its attempt not counted, for the next start to run.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.daemon import Daemon, wait_until
from tests.tarpit import Tarpit

pytestmark = pytest.mark.acceptance
SHUTDOWN_GRACE_S = 2.0
FEW_S = 5.0


@pytest.fixture
def tarpit() -> Iterator[Tarpit]:
    with Tarpit() as pit:
        yield pit


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    env = {
        "SYNCD_DATABASE_URL": f"sqlite:///{tmp_path / 'syncd.db'}",
        "SYNCD_STATE_DIR": str(tmp_path / "state"),
        "SYNCD_CONCURRENCY": "2",
        "SYNCD_CANCEL_GRACE_S": "30",
        "SYNCD_SHUTDOWN_GRACE_S": str(SHUTDOWN_GRACE_S),
        "SYNCD_NODE_ID": "stuck",
        "SYNCD_LOG_FORMAT": "text",
    }
    d = Daemon(env, tmp_path / "daemon.log")
    d.run("migrate")
    yield d.start()
    d.close()


def test_sigterm_gives_back_a_task_stuck_in_its_driver(
    daemon: Daemon, tarpit: Tarpit, tmp_path: Path
) -> None:
    daemon.call(
        "POST",
        "/api/sync/data-sources",
        {
            "id": "stuck",
            "name": "never answers",
            "kind": "sql",
            "connection": {
                "url": f"mysql+pymysql://u:p@127.0.0.1:{tarpit.port}/db",
                "table": "parts",
            },
            "target_table": "lot_partnumbers",
            "key_columns": ["vendor", "partnumber"],
        },
        expect=201,
    )
    task = daemon.call(
        "POST", "/api/sync/tasks", {"task_type": "full_sync", "data_source_id": "stuck"}, 201
    )
    wait_until(
        lambda: daemon.call("GET", f"/api/sync/tasks/{task['id']}")["status"] == "running",
        10,
        "the sync to start",
    )
    assert tarpit.accepted.wait(10), "the driver never connected"
    sent = time.monotonic()
    code = daemon.terminate(timeout=SHUTDOWN_GRACE_S + 30)
    took = time.monotonic() - sent
    assert code == 0, daemon.log_tail()
    assert took < SHUTDOWN_GRACE_S + FEW_S, (took, daemon.log_tail())
    row = _row(tmp_path, task["id"])
    assert row == ("pending", 0, None), (row, daemon.log_tail())
    assert "left reader thread" in daemon.log_tail(50)


def _row(tmp_path: Path, task_id: str) -> tuple[Any, ...]:
    with sqlite3.connect(tmp_path / "syncd.db") as conn:
        row: tuple[Any, ...] = conn.execute(
            "SELECT status, attempt, lease_owner FROM sync_tasks WHERE id = ?", (task_id,)
        ).fetchone()
    return row


def test_sigterm_leaves_a_thread_blocked_on_the_default_executor(
    daemon: Daemon, tmp_path: Path
) -> None:
    # A records import whose payload is a FIFO nobody writes to: the task's thread (on the
    # event loop's default executor, `asyncio.to_thread`) blocks in open() for good.
    uploads = tmp_path / "state" / "uploads"
    uploads.mkdir(parents=True, exist_ok=True)
    name = "0" * 32 + ".json"
    os.mkfifo(uploads / name)
    task = daemon.call(
        "POST",
        "/api/sync/tasks",
        {"task_type": "records_import", "parameters": {"target": "tools", "file": name}},
        201,
    )
    wait_until(
        lambda: daemon.call("GET", f"/api/sync/tasks/{task['id']}")["status"] == "running",
        10,
        "the import to start",
    )
    sent = time.monotonic()
    code = daemon.terminate(timeout=SHUTDOWN_GRACE_S + 30)
    took = time.monotonic() - sent
    assert code == 0, daemon.log_tail()
    assert took < SHUTDOWN_GRACE_S + FEW_S, (took, daemon.log_tail())
    assert _row(tmp_path, task["id"]) == ("pending", 0, None), daemon.log_tail()
    assert "exiting without waiting for 1 blocked thread(s)" in daemon.log_tail(50)


def test_sigterm_does_not_wait_for_a_stalled_upload(daemon: Daemon, tmp_path: Path) -> None:
    # A client that sends the start of a 10 MB upload and then nothing (aiohttp waits for a
    # request in flight for 60 s by default).
    boundary = "b0undary"
    head = (
        (
            f"--{boundary}\r\n"
            'Content-Disposition: form-data; name="file"; filename="stock.xlsx"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + b"PK\x03\x04"
        + b"\0" * (1024 * 1024)
    )
    request = (
        "POST /api/imports/stock HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{daemon.port}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Content-Length: {10 * 1024 * 1024}\r\n\r\n"
    ).encode() + head
    uploads = tmp_path / "state" / "uploads"
    with socket.create_connection(("127.0.0.1", daemon.port), timeout=10) as client:
        client.sendall(request)
        wait_until(lambda: uploads.is_dir() and any(uploads.iterdir()), 10, "the upload file")
        sent = time.monotonic()
        code = daemon.terminate(timeout=SHUTDOWN_GRACE_S + 90)
        took = time.monotonic() - sent
    assert code == 0, daemon.log_tail()
    assert took < SHUTDOWN_GRACE_S + FEW_S, (took, daemon.log_tail())
    assert list(uploads.iterdir()) == []  # the partial file went with its request
