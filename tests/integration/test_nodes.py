"""The daemons of a database (`sync_nodes`) and why pending tasks wait, on both dialects:
heartbeats, alive and stopped nodes, what each runs, the claim-order place of a task, and the
answers of `GET /api/nodes` and of the task routes' `waiting`."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from config.settings import Settings
from controllers.app import create_app
from schedule.nodes import NodeBeat, NodeStore
from schedule.store import Connector, make_store
from schedule.task import NewTask
from schedule.waiting import queue_position
from tests.conftest import make_settings
from tests.helpers import Clock

Client = TestClient[Any, Any]
LATER = "2099-01-01T00:00:00Z"


def noop(**kw: Any) -> NewTask:
    return NewTask(task_type="noop", parameters={}, max_attempts=3, **kw)


async def test_heartbeats_alive_stopped_forgotten_and_what_each_runs(
    dialect_connector: Connector,
) -> None:
    clock = Clock()
    nodes = NodeStore(dialect_connector, alive_s=30, clock=clock)
    store = make_store(dialect_connector, clock)
    await nodes.beat(NodeBeat("node-a", "1.2.3", clock.now, slots=4))
    await nodes.beat(NodeBeat("node-b", "1.2.3", clock.now, slots=2))
    task, _ = await store.create(noop())
    (claimed,) = await store.claim("node-a", 1, lease_s=60)
    assert claimed.id == task.id
    clock.advance(10)
    await nodes.beat(NodeBeat("node-a", "1.2.3", clock.now - timedelta(seconds=10), slots=4))

    listed = {n.node_id: n for n in await nodes.nodes()}
    a, b = listed["node-a"], listed["node-b"]
    assert (a.alive, a.slots, a.busy, a.version) == (True, 4, 1, "1.2.3")
    assert a.heartbeat_at == clock.now and a.started_at == clock.now - timedelta(seconds=10)
    assert [t.reference for t in a.running] == [task.reference]
    assert (b.alive, b.busy, b.running) == (True, 0, [])
    load = await nodes.load()
    assert (load.nodes, load.slots, load.busy, load.running_by_type["noop"]) == (2, 6, 1, 1)

    clock.advance(25)  # node-b last beat 35 s ago: gone quiet
    await nodes.stopped("node-a")  # node-a stopped gracefully
    listed = {n.node_id: n for n in await nodes.nodes()}
    assert not listed["node-a"].alive and listed["node-a"].stopped_at == clock.now
    assert not listed["node-b"].alive
    assert (await nodes.load()).nodes == 0

    clock.advance(days=2)  # a day without a heartbeat: forgotten at the next beat of anyone
    await nodes.beat(NodeBeat("node-c", "1.2.4", clock.now, slots=1))
    assert [n.node_id for n in await nodes.nodes()] == ["node-c"]


async def test_queue_position_follows_the_claim_order(dialect_connector: Connector) -> None:
    clock = Clock()
    store = make_store(dialect_connector, clock)
    first, _ = await store.create(noop(priority=5))
    clock.advance(1)
    second, _ = await store.create(noop(priority=5))
    third, _ = await store.create(noop(priority=0))
    urgent, _ = await store.create(noop(priority=9))
    later, _ = await store.create(noop(priority=100, run_after=clock.now + timedelta(hours=1)))
    external, _ = await store.create(noop(priority=100, service="erp"))
    clock.advance(1)
    now = clock.now
    places = [
        await queue_position(dialect_connector, t, now) for t in (urgent, first, second, third)
    ]
    assert places == [1, 2, 3, 4]  # the future and the external task are in no local line
    assert (
        await queue_position(dialect_connector, external, now) == 1
    )  # first of its service's line
    assert later.run_after > now


@pytest.fixture
def app_settings(database_url: str, tmp_path: Path) -> Settings:
    # One slot, and a retry that waits long enough to be seen waiting.
    return make_settings(database_url, tmp_path, concurrency=1, retry_backoff_s=60.0)


@pytest.fixture
async def client(aiohttp_client: AiohttpClient, app_settings: Settings) -> Client:
    return await aiohttp_client(create_app(app_settings))


async def task_until(client: Client, task_id: str, check: Any) -> dict[str, Any]:
    """GET the task until `check(task)` holds (bounded): the engine changes it on its own."""
    async with asyncio.timeout(15):
        while True:
            task: dict[str, Any] = await (await client.get(f"/api/sync/tasks/{task_id}")).json()
            if check(task):
                return task
            await asyncio.sleep(0.02)


async def create(client: Client, **body: Any) -> dict[str, Any]:
    resp = await client.post("/api/sync/tasks", json={"task_type": "noop", **body})
    assert resp.status == 201, await resp.text()
    task: dict[str, Any] = await resp.json()
    return task


async def test_nodes_route_and_why_tasks_wait(client: Client, app_settings: Settings) -> None:
    later = await create(client, run_after=LATER)
    shown = await (await client.get(f"/api/sync/tasks/{later['id']}")).json()
    assert shown["waiting"] == {
        "reason": "due_later",
        "due_at": "2099-01-01T00:00:00.000Z",
        "next_attempt": 1,
        "max_attempts": 3,
        "last_error": None,
        "slots": None,
        "position": None,
        "type_limit": None,
    }
    assert later["waiting"] is None  # only GET of one task and the list explain

    slow = await create(client, parameters={"sleep_s": 60, "steps": 600})
    await task_until(client, slow["id"], lambda t: t["status"] == "running")
    queued = [await create(client, priority=p) for p in (0, 5)]
    low = await (await client.get(f"/api/sync/tasks/{queued[0]['id']}")).json()
    assert low["waiting"]["reason"] == "no_free_slot"
    assert low["waiting"]["slots"] == {"busy": 1, "total": 1}
    assert low["waiting"]["position"] == 2  # behind the priority-5 task
    listed = await (await client.get("/api/sync/tasks", params={"status": "pending"})).json()
    reasons = {t["id"]: t["waiting"]["reason"] for t in listed["tasks"]}
    assert reasons[queued[1]["id"]] == "no_free_slot" and reasons[later["id"]] == "due_later"
    assert all(t["waiting"]["position"] is None for t in listed["tasks"])  # GET one only

    nodes = (await (await client.get("/api/nodes")).json())["nodes"]
    assert len(nodes) == 1
    node = nodes[0]
    assert (node["node_id"], node["alive"], node["stopped_at"]) == ("test-node", True, None)
    assert node["slots"] == {"busy": 1, "total": 1}
    assert [t["reference"] for t in node["running_tasks"]] == [slow["reference"]]
    assert node["running_tasks"][0]["task_type"] == "noop"
    started = datetime.fromisoformat(node["started_at"])
    assert started <= datetime.fromisoformat(node["heartbeat_at"]) <= datetime.now(UTC)
    assert node["version"]

    for task in (slow, *queued, later):
        await client.post(f"/api/sync/tasks/{task['id']}/cancel")
    failing = await create(client, parameters={"fail_times": 1})
    retried = await task_until(
        client, failing["id"], lambda t: t["status"] == "pending" and t["attempt"] == 1
    )
    waiting = retried["waiting"]
    assert (waiting["reason"], waiting["next_attempt"], waiting["max_attempts"]) == (
        "retry_backoff",
        2,
        3,
    )
    assert waiting["last_error"] == "noop: planned failure 1/1"
    assert waiting["due_at"] == retried["run_after"]
    await client.post(f"/api/sync/tasks/{failing['id']}/cancel")
