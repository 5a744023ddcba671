"""Every write of every store goes through its connector's one write path.

On MariaDB that path bounds each transaction by `SYNCD_DB_TIMEOUT_S`: with the suite's server
frozen (no answer, no RST: a partition), the external workers' claim and report, a callback's
claim and settle and a schedule's pause answer 503 within the timeout. On SQLite it queues on
the writer thread's lock: while the lock is held, each store's writes wait for it, bounded by
the timeout (a task's bulk writes are not bounded, and still wait).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.mariadb import MariaDBServer
from config.settings import Settings
from controllers.app import create_app
from controllers.keys import BUS, STORE
from schedule.books import BookStore
from schedule.datasources import DataSourceStore, TargetWriter
from schedule.definition import ScheduleRecord
from schedule.imports import ImportStore, StockEntry
from schedule.models import lot_partnumbers
from schedule.records import ExternalReport
from schedule.schedules import ScheduleStore
from schedule.store import SqliteConnector, TaskStore, connect, make_store
from schedule.task import NewTask
from tests.conftest import make_settings, migrate_url
from tests.helpers import Events

Client = TestClient[web.Request, web.Application]
ClientFactory = Callable[[web.Application], Awaitable[Client]]
TIMEOUT_S = 2.0
MARGIN_S = 1.0


# ---- MariaDB: a silent server -------------------------------------------------------------


async def settle_callback(request: web.Request) -> web.Response:
    """A delivery attempt's result, recorded as the callback sender records it."""
    await request.app[STORE].callbacks.settle(request.match_info["id"], 1, None, None)
    return web.json_response({"ok": True})


async def claim_callbacks(request: web.Request) -> web.Response:
    """The callback sender's claim of due deliveries."""
    claimed = await request.app[STORE].callbacks.claim(20, 40)
    return web.json_response({"claimed": len(claimed)})


@pytest.fixture
def outage_settings(mariadb_url: str, tmp_path: Path) -> Settings:
    migrate_url(mariadb_url)
    return make_settings(mariadb_url, tmp_path, db_timeout_s=TIMEOUT_S)


async def test_a_silent_mariadb_answers_503_within_the_timeout(
    aiohttp_client: ClientFactory, outage_settings: Settings, mariadb_server: MariaDBServer
) -> None:
    app = create_app(outage_settings)
    # Routes that run the callback sender's store calls, answered by the daemon's error
    # middleware like any API call (the sender itself only logs a failure and retries).
    app.router.add_post("/test/callbacks/{id}/settle", settle_callback)
    app.router.add_post("/test/callbacks/claim", claim_callbacks)
    client = await aiohttp_client(app)
    events = Events(app[BUS])
    external = {"task_type": "external", "parameters": {"service": "s"}}
    for _ in range(2):
        assert (await client.post("/api/sync/tasks", json=external)).status == 201
    claimed = await client.get("/api/crontask", params={"service": "s"})
    assert claimed.status == 200
    task_id = (await claimed.json())["id"]

    await asyncio.to_thread(mariadb_server.pause)  # no RST, no answer: a partition
    try:
        for method, path, body in [
            ("GET", "/api/crontask?service=s", None),
            ("PUT", f"/api/crontask/{task_id}", {"progress": 5}),
            ("POST", f"/test/callbacks/{task_id}/settle", None),
            ("POST", "/test/callbacks/claim", None),
            ("POST", "/api/schedules/task_retention/pause", None),
        ]:
            began = time.monotonic()
            resp = await client.request(method, path, json=body)
            took = time.monotonic() - began
            assert resp.status == 503, (path, await resp.text())
            assert (await resp.json())["error"]["code"] == "unavailable"
            assert took < TIMEOUT_S + MARGIN_S, (path, took)
        # The pool's own claims (every poll) met the same silence meanwhile.
        await events.until(lambda: events.count("database_down"), 30)
    finally:
        await asyncio.to_thread(mariadb_server.resume)

    await events.until(lambda: events.count("database_up"), 30)  # the pool's connections recover
    assert (await client.get("/readyz")).status == 200
    report = await client.put(f"/api/crontask/{task_id}", json={"status": "completed"})
    assert report.status == 200 and (await report.json())["status"] == "completed"
    assert (await client.get("/api/crontask", params={"service": "s"})).status == 200
    assert (await client.post(f"/test/callbacks/{task_id}/settle")).status == 200


# ---- SQLite: the writer's lock -------------------------------------------------------------

Thunk = Callable[[], Awaitable[Any]]
Prepare = Callable[[TaskStore], Awaitable[Thunk]]


async def external_claim(store: TaskStore) -> Thunk:
    await store.create(NewTask("external", {"service": "s"}, 3, service="s"))
    return lambda: store.external.claim("w", "s", None, 30)


async def external_report(store: TaskStore) -> Thunk:
    task, _ = await store.create(NewTask("external", {"service": "s"}, 3, service="s"))
    assert await store.external.claim("w", "s", None, 30) is not None
    return lambda: store.external.report(task.id, ExternalReport(progress=1), 30)


async def callback_claim(store: TaskStore) -> Thunk:
    return lambda: store.callbacks.claim(10, 30)


async def callback_settle(store: TaskStore) -> Thunk:
    task, _ = await store.create(NewTask("noop", {}, 1, callback_url="http://127.0.0.1/x"))
    await store.cancel(task.id)
    (delivery,) = await store.callbacks.claim(10, 30)
    return lambda: store.callbacks.settle(task.id, delivery.attempt, None, None)


async def cancel(store: TaskStore) -> Thunk:
    task, _ = await store.create(NewTask("noop", {}, 1))
    return lambda: store.cancel(task.id)


async def schedule(store: TaskStore) -> Thunk:
    schedules = ScheduleStore(store.db)
    values: dict[str, Any] = {f.name: None for f in ScheduleRecord.row_fields()}
    now = datetime.now(UTC)
    values.update(id="nightly", task_type="noop", paused=False, created_at=now, updated_at=now)
    await schedules.save(ScheduleRecord(**values), create=True)
    return lambda: schedules.set_paused("nightly", True, "a test", None)


async def data_source(store: TaskStore) -> Thunk:
    values = {
        "name": "n",
        "kind": "sql",
        "connection": {},
        "target_table": "tools",
        "key_columns": ["tool_id"],
        "column_mapping": {},
        "interfaces": {},
    }
    return lambda: DataSourceStore(store.db).create("src", values)


async def book_snapshot(store: TaskStore) -> Thunk:
    async with store.db.write() as conn:
        await conn.execute(insert(lot_partnumbers).values(partnumber="PN-1", lot_name="LOT"))
    return lambda: BookStore(store.db).snapshot(UTC, None, "n")


BOUNDED: dict[str, Prepare] = {
    "external claim": external_claim,
    "external report": external_report,
    "callback claim": callback_claim,
    "callback settle": callback_settle,
    "cancel": cancel,
    "schedule": schedule,
    "data source": data_source,
    "book snapshot": book_snapshot,
}


@pytest.mark.parametrize("name", list(BOUNDED))
async def test_sqlite_writes_wait_for_the_writer_lock_within_the_timeout(
    name: str, db: AsyncEngine
) -> None:
    connector = connect(db, timeout=0.5)
    assert isinstance(connector, SqliteConnector)
    store = make_store(connector)
    write = await BOUNDED[name](store)
    async with connector.writer.lock:  # as a writer transaction in progress would hold it
        began = time.monotonic()
        with pytest.raises(TimeoutError):
            await write()
        assert time.monotonic() - began < 0.5 + MARGIN_S
    await write()  # and with the lock free, it is written


async def test_sqlite_bulk_writes_wait_for_the_writer_lock_unbounded(db: AsyncEngine) -> None:
    """A task's long writes (an import batch, a sync batch) take the same lock, without the
    time bound."""
    connector = connect(db, timeout=0.1)
    assert isinstance(connector, SqliteConnector)
    entry = StockEntry(2, "PN-1", "V", None, Decimal(1), None, None)
    imports = ImportStore(connector)
    writer = TargetWriter(connector, "tools", ["tool_id"], targets={"tools"}, track_keys=True)
    row: dict[str, list[Any]] = {
        "tool_id": ["t1"],
        "tool_name": ["one"],
        "features": [[]],
        "updated_at": [datetime(2026, 1, 1)],
    }
    writes: list[Thunk] = [
        lambda: imports.write_stock_batch("task", [entry], []),
        lambda: writer.write(row),
    ]
    async with writer:
        for write in writes:
            async with connector.writer.lock:
                job = asyncio.ensure_future(write())
                done, _ = await asyncio.wait([job], timeout=0.5)  # five times the timeout
                assert not done, "a bulk write went past the writer's lock"
            await asyncio.wait_for(job, 10)
    async with db.connect() as conn:
        logged = await conn.scalar(text("SELECT COUNT(*) FROM stock_log"))
        written = await conn.scalar(text("SELECT COUNT(*) FROM tools"))
    assert (logged, written) == (1, 1)
