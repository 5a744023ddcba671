"""Several nodes on one database, and database faults survived (issue 5).

Each "node" is a full `SyncEngine` with its own node id, connection pool and loops, as a
separate daemon would have; they share only the database. The outage tests stop (or freeze)
the suite's real MariaDB server and start it again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import text, update
from sqlalchemy.ext.asyncio import AsyncEngine

from config.settings import Settings
from controllers.app import create_app
from controllers.keys import ENGINE
from engine.context import TaskContext
from engine.engine import EngineEvent, SyncEngine
from engine.handlers import default_registry
from engine.handlers.base import HandlerSpec, JsonObject, Registry
from schedule.database import create_engine
from schedule.models import sync_tasks
from schedule.records import Outcome, TaskRequest
from schedule.service import ScheduleService
from schedule.store import TaskStore, connect, make_store
from schedule.task import NewTask, TaskStatus
from tests.conftest import make_settings, migrate_url
from tests.mariadb import MariaDBServer

ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]
WAIT_S = 30.0


class Gates:
    """Per-node gates for the `gated` task type: a task waits until its node's gate opens."""

    def __init__(self) -> None:
        self.events: dict[str, asyncio.Event] = {}
        self.started: dict[str, asyncio.Event] = {}

    def gate(self, node: str) -> asyncio.Event:
        return self.events.setdefault(node, asyncio.Event())

    def entered(self, node: str) -> asyncio.Event:
        return self.started.setdefault(node, asyncio.Event())

    def registry(self, *extra_types: str) -> Registry:
        """The built-in types plus `gated` (and `extra_types`, run the same way)."""

        async def run(ctx: TaskContext) -> JsonObject:
            node = ctx.settings.node_id
            self.entered(node).set()
            await self.gate(node).wait()
            return {"node": node}

        registry = default_registry()
        for task_type in ("gated", *extra_types):
            registry.register(HandlerSpec(task_type=task_type, run=run))
        return registry


@dataclass
class Node:
    """One node's settings and database engine (built outside the event loop)."""

    settings: Settings
    db: AsyncEngine


def build_nodes(url: str, tmp_path: Path, count: int, **overrides: Any) -> list[Node]:
    nodes = []
    for index in range(count):
        settings = make_settings(
            url, tmp_path / f"n{index}", node_id=f"node-{index + 1}", **overrides
        )
        nodes.append(Node(settings, create_engine(settings)))
    return nodes


@dataclass
class Running:
    """A started node."""

    engine: SyncEngine
    service: ScheduleService
    store: TaskStore


@pytest.fixture
def gates() -> Gates:
    return Gates()


async def start(node: Node, registry: Registry) -> Running:
    db = connect(node.db, node.settings.db_timeout_s)
    store = make_store(db)
    engine = SyncEngine(store, registry, node.settings, db)
    await engine.start()
    return Running(engine, ScheduleService(store, registry, node.settings, engine), store)


@pytest.fixture
async def cluster_nodes(database_url: str, tmp_path: Path) -> AsyncIterator[list[Node]]:
    nodes = await asyncio.to_thread(build_nodes, database_url, tmp_path, 3, lease_s=3.0)
    yield nodes
    for node in nodes:
        await node.db.dispose()


async def wait_for(check: Callable[[], Awaitable[bool]], limit_s: float = WAIT_S) -> None:
    """Poll `check` (a cheap query) until it holds, bounded by `limit_s`."""
    async with asyncio.timeout(limit_s):
        while not await check():  # noqa: ASYNC110 (the database has no event to await)
            await asyncio.sleep(0.05)


async def count_status(store: TaskStore, status: TaskStatus) -> int:
    async with store.db.engine.connect() as conn:
        query = text("SELECT COUNT(*) FROM sync_tasks WHERE status = :s")
        return int((await conn.execute(query, {"s": status.value})).scalar_one())


# ---- several nodes ------------------------------------------------------------------------


async def test_three_nodes_run_every_task_exactly_once(
    cluster_nodes: list[Node], gates: Gates
) -> None:
    registry = gates.registry()
    running = [await start(n, registry) for n in cluster_nodes]
    try:
        requests = [TaskRequest("noop") for _ in range(300)]
        for offset in range(0, 300, 100):
            await running[offset // 100].service.create_many(requests[offset : offset + 100])
        store = running[0].store
        await wait_for(lambda: _all_done(store, 300))
        async with store.db.engine.connect() as conn:
            attempts = (await conn.execute(text("SELECT attempt FROM sync_tasks"))).scalars()
            assert set(attempts) == {1}  # every claim bumps `attempt`: each task claimed once
            rows = (
                await conn.execute(
                    text(
                        "SELECT task_id, COUNT(*), MIN(outcome), MIN(node_id) "
                        "FROM sync_task_attempts GROUP BY task_id"
                    )
                )
            ).all()
        assert len(rows) == 300
        assert all(r[1] == 1 and r[2] == "completed" for r in rows)
        assert {r[3] for r in rows} <= {"node-1", "node-2", "node-3"}
    finally:
        for r in running:
            await r.engine.stop()


async def _all_done(store: TaskStore, count: int) -> bool:
    return await count_status(store, TaskStatus.COMPLETED) >= count


async def test_cancel_on_any_node_reaches_the_running_node(
    cluster_nodes: list[Node], gates: Gates
) -> None:
    registry = gates.registry()
    a, b = [await start(n, registry) for n in cluster_nodes[:2]]
    try:
        # Only node 1 may claim it: node 2 starts after the task runs on node 1.
        await b.engine.stop()
        params = {"sleep_s": 60, "steps": 600}
        task, _ = await a.service.create(TaskRequest("noop", parameters=params))
        await wait_for(lambda: _status_is(a.store, task.id, TaskStatus.RUNNING))
        b = await start(cluster_nodes[1], registry)
        asked = time.monotonic()
        await b.service.cancel(task.id)  # sent to the node that does not run it
        await wait_for(lambda: _status_is(a.store, task.id, TaskStatus.CANCELLED))
        took = time.monotonic() - asked
        heartbeat = cluster_nodes[0].settings.lease_s / 3
        assert took < heartbeat + 1.5, f"cancel took {took:.2f} s, heartbeat is {heartbeat} s"
        attempts = await a.store.attempts(task.id)
        assert [(x.node_id, x.outcome) for x in attempts] == [("node-1", "cancelled")]
    finally:
        for r in (a, b):
            await r.engine.stop()


async def _status_is(store: TaskStore, task_id: str, status: TaskStatus) -> bool:
    task = await store.get(task_id)
    return task is not None and task.status is status


async def test_dead_nodes_lease_is_rescued_by_another(
    cluster_nodes: list[Node], gates: Gates
) -> None:
    registry = gates.registry()
    store = make_store(connect(cluster_nodes[0].db))
    task, _ = await store.create(NewTask(task_type="noop", parameters={}, max_attempts=3))
    # A node claims it and dies at once: no heartbeat, no finish, a 1 s lease.
    (claimed,) = await store.claim("dead-node", 1, lease_s=1.0)
    assert claimed.id == task.id
    live = await start(cluster_nodes[1], registry)
    try:
        await wait_for(lambda: _status_is(store, task.id, TaskStatus.COMPLETED))
        attempts = await store.attempts(task.id)
        assert [(x.attempt, x.node_id, x.outcome) for x in attempts] == [
            (1, "dead-node", "lost"),
            (2, "node-2", "completed"),
        ]
    finally:
        await live.engine.stop()


async def test_statistics_show_running_tasks_per_node(
    cluster_nodes: list[Node], gates: Gates
) -> None:
    a = await start(cluster_nodes[0], gates.registry())
    try:
        await a.service.create_many([TaskRequest("gated") for _ in range(2)])
        await wait_for(lambda: _running_is(a.store, {"node-1": 2}))
        # Node 2 also knows `gated_b`, which node 1 never claims: the split is certain.
        b = await start(cluster_nodes[1], gates.registry("gated_b"))
        try:
            await b.service.create_many([TaskRequest("gated_b") for _ in range(3)])
            await wait_for(lambda: _running_is(a.store, {"node-1": 2, "node-2": 3}))
            stats = await b.service.statistics(since=_long_ago())
            assert stats.running_by_node == {"node-1": 2, "node-2": 3}
            gates.gate("node-1").set()
            gates.gate("node-2").set()
            await wait_for(lambda: _running_is(a.store, {}))
        finally:
            await b.engine.stop()
    finally:
        await a.engine.stop()


async def _running_is(store: TaskStore, expected: dict[str, int]) -> bool:
    return (await store.stats.summary(_long_ago())).running_by_node == expected


def _long_ago() -> Any:
    from datetime import UTC, datetime

    return datetime(2000, 1, 1, tzinfo=UTC)


async def test_a_node_that_lost_its_lease_never_writes_its_result(
    cluster_nodes: list[Node], gates: Gates
) -> None:
    registry = gates.registry()
    a = await start(cluster_nodes[0], registry)
    lost: list[EngineEvent] = []
    a.engine.listeners.append(lambda e: lost.append(e) if e.kind == "lost" else None)
    b: Running | None = None
    try:
        task, _ = await a.service.create(TaskRequest("gated"))
        await asyncio.wait_for(gates.entered("node-1").wait(), WAIT_S)
        # Node 1 stops heartbeating as if cut off from the database: its lease lapses.
        async with a.store.db.engine.begin() as conn:
            await conn.execute(
                update(sync_tasks)
                .where(sync_tasks.c.id == task.id)
                .values(lease_expires_at=sync_tasks.c.started_at)
            )
        gates.gate("node-2").set()
        b = await start(cluster_nodes[1], registry)  # rescues the task, then runs it
        await wait_for(lambda: _status_is(a.store, task.id, TaskStatus.COMPLETED))
        gates.gate("node-1").set()  # node 1's handler now finishes too, too late
        await wait_for(lambda: _has_event(lost))
        final = await a.store.require(task.id)
        assert final.result == {"node": "node-2"}
        attempts = await a.store.attempts(task.id)
        assert [(x.attempt, x.node_id, x.outcome) for x in attempts] == [
            (1, "node-1", "lost"),
            (2, "node-2", "completed"),
        ]
    finally:
        await a.engine.stop()
        if b is not None:
            await b.engine.stop()


async def _has_event(events: list[EngineEvent]) -> bool:
    return bool(events)


# ---- database faults (real MariaDB stopped or frozen) -------------------------------------


@pytest.fixture
def outage_settings(mariadb_url: str, tmp_path: Path) -> Settings:
    migrate_url(mariadb_url)
    return make_settings(mariadb_url, tmp_path, db_timeout_s=2.0, lease_s=3.0, concurrency=4)


async def test_database_outage_is_survived(
    aiohttp_client: ClientFactory, outage_settings: Settings, mariadb_server: MariaDBServer
) -> None:
    client = await aiohttp_client(create_app(outage_settings))
    engine = client.app[ENGINE]
    body = {"tasks": [{"task_type": "noop", "parameters": {"sleep_s": 0.5}} for _ in range(12)]}
    resp = await client.post("/api/sync/tasks/batch", json=body)
    assert resp.status == 201
    ids = [t["id"] for t in (await resp.json())["tasks"]]
    await wait_for(lambda: _api_running(client))

    await asyncio.to_thread(mariadb_server.stop)
    try:
        await wait_for(lambda: _engine_down(engine))
        limit = outage_settings.db_timeout_s + 1.0
        for method, path, payload in [
            ("GET", "/api/sync/tasks", None),
            ("GET", f"/api/sync/tasks/{ids[0]}", None),
            ("POST", "/api/sync/tasks", {"task_type": "noop"}),
            ("GET", "/readyz", None),
        ]:
            began = time.monotonic()
            resp = await client.request(method, path, json=payload)
            assert time.monotonic() - began < limit
            assert resp.status == 503, (path, await resp.text())
            if path != "/readyz":
                assert (await resp.json())["error"]["code"] == "unavailable"
        assert (await client.get("/healthz")).status == 200
        assert engine.running  # the daemon keeps going
    finally:
        await asyncio.to_thread(mariadb_server.start)

    await wait_for(lambda: _api_all_completed(client, ids), limit_s=60)
    assert (await client.get("/readyz")).status == 200
    for task_id in ids:
        detail = await (await client.get(f"/api/sync/tasks/{task_id}")).json()
        assert detail["status"] == "completed"


async def test_frozen_database_answers_503_within_the_timeout(
    aiohttp_client: ClientFactory, outage_settings: Settings, mariadb_server: MariaDBServer
) -> None:
    client = await aiohttp_client(create_app(outage_settings))
    assert (await client.get("/api/sync/tasks")).status == 200
    await asyncio.to_thread(mariadb_server.pause)  # no RST, no answer: a partition
    try:
        for path in ("/api/sync/tasks", "/api/sync/tasks/statistics", "/readyz"):
            began = time.monotonic()
            resp = await client.get(path)
            took = time.monotonic() - began
            assert resp.status == 503, (path, await resp.text())
            assert took < outage_settings.db_timeout_s + 1.0, (path, took)
    finally:
        await asyncio.to_thread(mariadb_server.resume)
    await wait_for(lambda: _api_ok(client))
    resp = await client.post("/api/sync/tasks", json={"task_type": "noop"})
    assert resp.status == 201
    task_id = (await resp.json())["id"]
    await wait_for(lambda: _api_all_completed(client, [task_id]))


async def _api_running(client: TestClient[Any, Any]) -> bool:
    resp = await client.get("/api/sync/tasks", params={"status": "running"})
    return resp.status == 200 and (await resp.json())["pagination"]["total"] > 0


async def _engine_down(engine: SyncEngine) -> bool:
    return not engine.database_ok


async def _api_ok(client: TestClient[Any, Any]) -> bool:
    return (await client.get("/readyz")).status == 200


async def _api_all_completed(client: TestClient[Any, Any], ids: list[str]) -> bool:
    resp = await client.get("/api/sync/tasks", params={"status": "completed", "size": 500})
    if resp.status != 200:
        return False
    done = {t["id"] for t in (await resp.json())["tasks"]}
    return done >= set(ids)


async def test_finish_groups_identical_outcomes_and_keeps_the_rest_apart(
    cluster_nodes: list[Node],
) -> None:
    store = make_store(connect(cluster_nodes[0].db))
    new = NewTask(task_type="noop", parameters={}, max_attempts=3, dedupe_key=None)
    pairs = await store.create_many([new] * 5)
    claimed = await store.claim("n1", 5, lease_s=30)
    assert len(claimed) == 5
    done = {"ok": True}
    outcomes = [
        Outcome(t.id, t.attempt, TaskStatus.COMPLETED, "completed", result=done)
        for t in claimed[:3]
    ]
    outcomes.append(
        Outcome(claimed[3].id, 1, TaskStatus.COMPLETED, "completed", result={"other": 1})
    )
    outcomes.append(Outcome(claimed[4].id, 1, TaskStatus.FAILED, "failed", error="boom"))
    written = await store.finish("n1", outcomes)
    assert written == {t.id for t, _ in pairs}
    by_id = {t.id: await store.require(t.id) for t, _ in pairs}
    for outcome in outcomes:
        task = by_id[outcome.task_id]
        assert task.status is outcome.status
        assert task.result == outcome.result and task.error == outcome.error
        assert task.lease_owner is None and task.finished_at is not None
    assert await store.finish("n1", outcomes) == set()  # nothing owned any more
