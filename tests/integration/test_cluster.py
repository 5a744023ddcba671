"""Several nodes on one database, and database faults survived.

Each "node" is a full `SyncEngine` with its own node id, connection pool and loops, as a
separate daemon would have; they share only the database (and, so that the test can wait on
what any of them does, one event bus). The outage tests stop (or freeze) the suite's real
MariaDB server and start it again.
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

from bench.mariadb import MariaDBServer
from config.settings import Settings
from controllers.app import create_app
from controllers.keys import BUS, POOL
from engine.context import TaskContext
from engine.engine import SyncEngine
from engine.handlers import default_registry
from engine.handlers.base import HandlerSpec, JsonObject, Registry
from schedule.database import create_engine
from schedule.events import EventBus
from schedule.models import sync_tasks
from schedule.records import Outcome, TaskRequest
from schedule.service import ScheduleService
from schedule.store import TaskStore, connect, make_store
from schedule.stores import open_stores
from schedule.task import NewTask, TaskStatus
from tests.conftest import make_settings, migrate_url
from tests.helpers import Events

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

    pool: SyncEngine
    service: ScheduleService
    store: TaskStore


@pytest.fixture
def gates() -> Gates:
    return Gates()


@pytest.fixture
def bus() -> EventBus:
    """The bus every node of a test publishes on."""
    return EventBus()


@pytest.fixture
def events(bus: EventBus) -> Events:
    return Events(bus)


async def start(node: Node, registry: Registry, bus: EventBus) -> Running:
    stores = open_stores(connect(node.db, node.settings.db_timeout_s))
    pool = SyncEngine(stores, registry, node.settings, bus=bus)
    await pool.start()
    service = ScheduleService(stores.tasks, registry, node.settings, pool, bus)
    return Running(pool, service, stores.tasks)


@pytest.fixture
async def cluster_nodes(database_url: str, tmp_path: Path) -> AsyncIterator[list[Node]]:
    nodes = await asyncio.to_thread(build_nodes, database_url, tmp_path, 3, lease_s=3.0)
    yield nodes
    for node in nodes:
        await node.db.dispose()


async def count_status(store: TaskStore, status: TaskStatus) -> int:
    async with store.db.engine.connect() as conn:
        query = text("SELECT COUNT(*) FROM sync_tasks WHERE status = :s")
        return int((await conn.execute(query, {"s": status.value})).scalar_one())


# ---- several nodes ------------------------------------------------------------------------


async def test_three_nodes_run_every_task_exactly_once(
    cluster_nodes: list[Node], gates: Gates, bus: EventBus, events: Events
) -> None:
    registry = gates.registry()
    running = [await start(n, registry, bus) for n in cluster_nodes]
    try:
        requests = [TaskRequest("noop") for _ in range(300)]
        for offset in range(0, 300, 100):
            await running[offset // 100].service.create_many(requests[offset : offset + 100])
        store = running[0].store
        await events.until(lambda: events.count("finished") >= 300, WAIT_S)
        assert await count_status(store, TaskStatus.COMPLETED) == 300
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
            await r.pool.stop()


async def test_cancel_on_any_node_reaches_the_running_node(
    cluster_nodes: list[Node], gates: Gates, bus: EventBus, events: Events
) -> None:
    registry = gates.registry()
    a, b = [await start(n, registry, bus) for n in cluster_nodes[:2]]
    try:
        # Only node 1 may claim it: node 2 starts after the task runs on node 1.
        await b.pool.stop()
        params = {"sleep_s": 60, "steps": 600}
        task, _ = await a.service.create(TaskRequest("noop", parameters=params))
        await events.wait(task.id, "started", within=WAIT_S)
        b = await start(cluster_nodes[1], registry, bus)
        asked = time.monotonic()
        await b.service.cancel(task.id)  # sent to the node that does not run it
        await events.ended(task.id, within=WAIT_S)
        assert await _status_is(a.store, task.id, TaskStatus.CANCELLED)
        took = time.monotonic() - asked
        heartbeat = cluster_nodes[0].settings.lease_s / 3
        assert took < heartbeat + 1.5, f"cancel took {took:.2f} s, heartbeat is {heartbeat} s"
        attempts = await a.store.attempts(task.id)
        assert [(x.node_id, x.outcome) for x in attempts] == [("node-1", "cancelled")]
    finally:
        for r in (a, b):
            await r.pool.stop()


async def _status_is(store: TaskStore, task_id: str, status: TaskStatus) -> bool:
    task = await store.get(task_id)
    return task is not None and task.status is status


async def test_dead_nodes_lease_is_rescued_by_another(
    cluster_nodes: list[Node], gates: Gates, bus: EventBus, events: Events
) -> None:
    registry = gates.registry()
    store = make_store(connect(cluster_nodes[0].db))
    task, _ = await store.create(NewTask(task_type="noop", parameters={}, max_attempts=3))
    # A node claims it and dies at once: no heartbeat, no finish, a 1 s lease.
    (claimed,) = await store.claim("dead-node", 1, lease_s=1.0)
    assert claimed.id == task.id
    live = await start(cluster_nodes[1], registry, bus)
    try:
        await events.ended(task.id, within=WAIT_S)
        assert await _status_is(store, task.id, TaskStatus.COMPLETED)
        attempts = await store.attempts(task.id)
        assert [(x.attempt, x.node_id, x.outcome) for x in attempts] == [
            (1, "dead-node", "lost"),
            (2, "node-2", "completed"),
        ]
    finally:
        await live.pool.stop()


async def test_statistics_show_running_tasks_per_node(
    cluster_nodes: list[Node], gates: Gates, bus: EventBus, events: Events
) -> None:
    a = await start(cluster_nodes[0], gates.registry(), bus)
    try:
        await a.service.create_many([TaskRequest("gated") for _ in range(2)])
        await events.until(_running_is(a.store, {"node-1": 2}), WAIT_S)
        # Node 2 also knows `gated_b`, which node 1 never claims: the split is certain.
        b = await start(cluster_nodes[1], gates.registry("gated_b"), bus)
        try:
            await b.service.create_many([TaskRequest("gated_b") for _ in range(3)])
            await events.until(_running_is(a.store, {"node-1": 2, "node-2": 3}), WAIT_S)
            stats = await b.service.statistics(since=_long_ago())
            assert stats.running_by_node == {"node-1": 2, "node-2": 3}
            gates.gate("node-1").set()
            gates.gate("node-2").set()
            await events.until(_running_is(a.store, {}), WAIT_S)
        finally:
            await b.pool.stop()
    finally:
        await a.pool.stop()


def _running_is(store: TaskStore, expected: dict[str, int]) -> Callable[[], Awaitable[bool]]:
    """A check, run again after each event: tasks start and finish with one."""

    async def check() -> bool:
        return (await store.stats.summary(_long_ago())).running_by_node == expected

    return check


def _long_ago() -> Any:
    from datetime import UTC, datetime

    return datetime(2000, 1, 1, tzinfo=UTC)


async def keep_lapsed(engine: AsyncEngine, task_id: str, owner: str) -> None:
    """Keep the lease of `owner` on the task lapsed, as if its heartbeats did not land."""
    while True:
        async with engine.begin() as conn:
            await conn.execute(
                update(sync_tasks)
                .where(sync_tasks.c.id == task_id, sync_tasks.c.lease_owner == owner)
                .values(lease_expires_at=sync_tasks.c.started_at)
            )
        await asyncio.sleep(0.05)


async def test_a_node_that_lost_its_lease_never_writes_its_result(
    cluster_nodes: list[Node], gates: Gates, bus: EventBus, events: Events
) -> None:
    registry = gates.registry()
    a = await start(cluster_nodes[0], registry, bus)
    b: Running | None = None
    cut_off: asyncio.Task[None] | None = None
    try:
        task, _ = await a.service.create(TaskRequest("gated"))
        await asyncio.wait_for(gates.entered("node-1").wait(), WAIT_S)
        # Node 1 is cut off from the database: its heartbeats no longer land, so its lease
        # lapses (kept lapsed until node 2 rescued the task: node 1's own heartbeat, every
        # second, would extend it again before a slow start of node 2 saw it lapsed).
        cut_off = asyncio.create_task(keep_lapsed(a.store.db.engine, task.id, "node-1"))
        gates.gate("node-2").set()
        b = await start(cluster_nodes[1], registry, bus)  # rescues the task, then runs it
        await events.ended(task.id, within=WAIT_S)
        assert await _status_is(a.store, task.id, TaskStatus.COMPLETED)
        gates.gate("node-1").set()  # node 1's handler now finishes too, too late
        await events.wait(task.id, "lost", within=WAIT_S)
        final = await a.store.require(task.id)
        assert final.result == {"node": "node-2"}
        attempts = await a.store.attempts(task.id)
        assert [(x.attempt, x.node_id, x.outcome) for x in attempts] == [
            (1, "node-1", "lost"),
            (2, "node-2", "completed"),
        ]
    finally:
        if cut_off is not None:
            cut_off.cancel()
        await a.pool.stop()
        if b is not None:
            await b.pool.stop()


# ---- database faults (real MariaDB stopped or frozen) -------------------------------------


@pytest.fixture
def outage_settings(mariadb_url: str, tmp_path: Path) -> Settings:
    migrate_url(mariadb_url)
    return make_settings(mariadb_url, tmp_path, db_timeout_s=2.0, lease_s=3.0, concurrency=4)


async def test_database_outage_is_survived(
    aiohttp_client: ClientFactory, outage_settings: Settings, mariadb_server: MariaDBServer
) -> None:
    client = await aiohttp_client(create_app(outage_settings))
    pool = client.app[POOL]
    events = Events(client.app[BUS])
    body = {"tasks": [{"task_type": "noop", "parameters": {"sleep_s": 0.5}} for _ in range(12)]}
    resp = await client.post("/api/sync/tasks/batch", json=body)
    assert resp.status == 201
    ids = [t["id"] for t in (await resp.json())["tasks"]]
    await events.until(lambda: events.count("started"), WAIT_S)
    assert await _api_running(client)

    await asyncio.to_thread(mariadb_server.stop)
    try:
        await events.until(lambda: events.count("database_down"), WAIT_S)
        assert not pool.database_ok
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
        assert pool.running  # the daemon keeps going
    finally:
        await asyncio.to_thread(mariadb_server.start)

    await events.until(lambda: all(events.end_of(i) for i in ids), 60)
    assert (await client.get("/readyz")).status == 200
    for task_id in ids:
        detail = await (await client.get(f"/api/sync/tasks/{task_id}")).json()
        assert detail["status"] == "completed"


async def test_frozen_database_answers_503_within_the_timeout(
    aiohttp_client: ClientFactory, outage_settings: Settings, mariadb_server: MariaDBServer
) -> None:
    client = await aiohttp_client(create_app(outage_settings))
    events = Events(client.app[BUS])
    assert (await client.get("/api/sync/tasks")).status == 200
    await asyncio.to_thread(mariadb_server.pause)  # no RST, no answer: a partition
    try:
        for path in ("/api/sync/tasks", "/api/sync/tasks/statistics", "/readyz"):
            began = time.monotonic()
            resp = await client.get(path)
            took = time.monotonic() - began
            assert resp.status == 503, (path, await resp.text())
            assert took < outage_settings.db_timeout_s + 1.0, (path, took)
        # The pool's own claims (every poll) met the same silence meanwhile.
        await events.until(lambda: events.count("database_down"), WAIT_S)
    finally:
        await asyncio.to_thread(mariadb_server.resume)
    await events.until(lambda: events.count("database_up"), WAIT_S)
    assert (await client.get("/readyz")).status == 200
    resp = await client.post("/api/sync/tasks", json={"task_type": "noop"})
    assert resp.status == 201
    task_id = (await resp.json())["id"]
    await events.ended(task_id, WAIT_S)
    shown = await (await client.get(f"/api/sync/tasks/{task_id}")).json()
    assert shown["status"] == "completed"


async def _api_running(client: TestClient[Any, Any]) -> bool:
    resp = await client.get("/api/sync/tasks", params={"status": "running"})
    return resp.status == 200 and (await resp.json())["pagination"]["total"] > 0


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
