"""A source whose driver never returns: a forced cancel still ends the task and frees its slot.

The source is a MySQL URL at a loopback tarpit that accepts and trickles bytes without ever
finishing the handshake, so the reading thread stays blocked in pymysql however its timeouts
are set. The task must end `cancelled` shortly after `SYNCD_CANCEL_GRACE_S`, and the only slot
of the pool must run the next task.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from config.settings import Settings
from controllers.app import create_app
from tests.conftest import make_settings
from tests.helpers import task_json_once
from tests.tarpit import Tarpit

Client = TestClient[Any, Any]
CANCEL_GRACE_S = 0.5
MARGIN_S = 3.0


@pytest.fixture
def app_settings(database_url: str, tmp_path: Path) -> Settings:
    return make_settings(database_url, tmp_path, concurrency=1, cancel_grace_s=CANCEL_GRACE_S)


@pytest.fixture
def tarpit() -> Iterator[Tarpit]:
    with Tarpit() as pit:
        yield pit


@pytest.fixture
async def client(aiohttp_client: AiohttpClient, app_settings: Settings) -> Client:
    return await aiohttp_client(create_app(app_settings))


async def task_of(client: Client, task_id: str) -> dict[str, Any]:
    resp = await client.get(f"/api/sync/tasks/{task_id}")
    assert resp.status == 200, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


async def wait_status(client: Client, task_id: str, statuses: set[str], within: float) -> Any:
    return await task_json_once(client, task_id, statuses, within)


async def start_stuck_sync(client: Client, tarpit: Tarpit) -> str:
    """A full_sync from the tarpit, running and blocked in the driver's handshake."""
    resp = await client.post(
        "/api/sync/data-sources",
        json={
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
    )
    assert resp.status == 201, await resp.text()
    resp = await client.post(
        "/api/sync/tasks",
        json={"task_type": "full_sync", "data_source_id": "stuck", "max_attempts": 1},
    )
    assert resp.status == 201, await resp.text()
    task_id: str = (await resp.json())["id"]
    await wait_status(client, task_id, {"running"}, within=10)
    assert await asyncio.to_thread(tarpit.accepted.wait, 10), "the driver never connected"
    return task_id


async def test_forced_cancel_ends_a_task_stuck_in_its_driver(
    client: Client, tarpit: Tarpit
) -> None:
    task_id = await start_stuck_sync(client, tarpit)
    asked = time.monotonic()
    resp = await client.post(f"/api/sync/tasks/{task_id}/cancel")
    assert resp.status == 202, await resp.text()
    task = await wait_status(
        client, task_id, {"cancelled", "failed", "completed"}, within=CANCEL_GRACE_S + MARGIN_S
    )
    took = time.monotonic() - asked
    assert task["status"] == "cancelled", task
    assert "forced" in task["error"], task
    assert took >= CANCEL_GRACE_S  # it was forced, not stopped cooperatively
    # The pool has one slot: the next task runs in it.
    resp = await client.post("/api/sync/tasks", json={"task_type": "noop"})
    assert resp.status == 201
    noop = await wait_status(client, (await resp.json())["id"], {"completed"}, within=10)
    assert noop["status"] == "completed"
    # The blocked thread was left behind, not waited for: it is still connected.
    assert tarpit.connections == 1
