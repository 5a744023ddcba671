"""The partnumber-book and retention task types run by a real worker pool on every dialect."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine

from config.settings import Settings
from engine.engine import SyncEngine
from engine.handlers import default_registry
from schedule.books import BookStore
from schedule.events import EventBus
from schedule.models import sync_task_attempts, sync_task_errors, sync_tasks
from schedule.records import Page, TaskFilter, TaskRequest
from schedule.service import ScheduleService
from schedule.store import Connector, TaskStore, connect
from schedule.stores import open_stores
from schedule.task import NewTask, TaskRecord, TaskStatus
from tests.conftest import make_settings
from tests.helpers import Clock, Events
from tests.integration.pnbooks import load, mapping, seen


@pytest.fixture
def dialect_settings(database_url: str, tmp_path: Path) -> Settings:
    return make_settings(
        database_url, tmp_path, keep_daily=1, keep_weekly=0, keep_monthly=0, keep_yearly=0
    )


@pytest.fixture
async def svc(
    dialect_connector: Connector, dialect_settings: Settings
) -> AsyncIterator[ScheduleService]:
    stores = open_stores(dialect_connector)
    registry = default_registry()
    bus = EventBus()
    pool = SyncEngine(stores, registry, dialect_settings, bus=bus)
    await pool.start()
    yield ScheduleService(stores.tasks, registry, dialect_settings, pool, bus)
    await pool.stop()


async def run_task(svc: ScheduleService, task_type: str, **params: object) -> TaskRecord:
    """Create a task and return it once it ended."""
    events = Events(svc.bus)
    try:
        task, _ = await svc.create(TaskRequest(task_type=task_type, parameters=dict(params)))
        await events.ended(task.id, within=30)
    finally:
        events.close()
    return await svc.store.require(task.id)


async def test_snapshot_task_creates_book_and_applies_retention(
    ddb: AsyncEngine, svc: ScheduleService
) -> None:
    await load(ddb, [mapping("PN-1", "LOT-1"), mapping("PN-2", "B")], bundles={"B": [("C", 3)]})
    first = await run_task(svc, "partnumber_book_create")
    second = await run_task(svc, "partnumber_book_create")
    assert first.status is TaskStatus.COMPLETED, first.error
    assert second.status is TaskStatus.COMPLETED, second.error
    result = second.result or {}
    today = datetime.now(UTC).date().isoformat()
    assert result["version"] == f"PNBOOK-{today}-002"
    assert result["item_count"] == 2
    # keep_daily=1: the first book of the day goes, the new active one stays.
    assert result["retention"]["kept"] == [f"PNBOOK-{today}-002"]
    assert result["retention"]["deleted"] == [f"PNBOOK-{today}-001"]
    assert second.progress == 100
    books = await BookStore(connect(ddb)).list_books()
    assert [(b.version, b.is_active, b.task_id) for b in books] == [
        (f"PNBOOK-{today}-002", True, second.id)
    ]


async def test_snapshot_task_fails_clearly_on_empty_and_missing_tables(
    ddb: AsyncEngine, svc: ScheduleService
) -> None:
    await load(ddb, [mapping("PN-1", "LOT-1")], seen_rows=[seen("PN-*", pattern=True)])
    empty = await run_task(svc, "partnumber_book_create")
    assert empty.status is TaskStatus.FAILED and empty.attempt == 1
    assert "empty" in (empty.error or "")
    async with ddb.begin() as conn:
        await conn.execute(text("DROP TABLE qt_vendor_partnumber_seen"))
    missing = await run_task(svc, "partnumber_book_create")
    assert missing.status is TaskStatus.FAILED and missing.attempt == 1
    assert "qt_vendor_partnumber_seen" in (missing.error or "")
    assert await BookStore(connect(ddb)).list_books() == []


async def test_retention_task_reports_kept_and_deleted(
    ddb: AsyncEngine, svc: ScheduleService
) -> None:
    await load(ddb, [mapping("PN-1", "LOT-1")])
    store = BookStore(connect(ddb))
    old = await store.snapshot(UTC, None, "n")
    new = await store.snapshot(UTC, None, "n")
    done = await run_task(svc, "partnumber_book_retention")
    assert done.status is TaskStatus.COMPLETED, done.error
    assert done.result is not None
    assert done.result["kept"] == [new.book.version]
    assert done.result["deleted"] == [old.book.version]
    assert done.result["deleted_items"] == 1


async def age(db: AsyncEngine, task_id: str, days: float) -> None:
    when = (datetime.now(UTC) - timedelta(days=days)).replace(tzinfo=None)
    async with db.begin() as conn:
        await conn.execute(
            update(sync_tasks)
            .where(sync_tasks.c.id == task_id)
            .values(created_at=when, finished_at=when)
        )


async def test_task_retention_deletes_old_finished_tasks_in_batches(
    ddb: AsyncEngine, svc: ScheduleService
) -> None:
    store: TaskStore = svc.store
    old_done = [await make_finished(store, TaskStatus.COMPLETED) for _ in range(3)]
    old_failed = await make_finished(store, TaskStatus.FAILED)
    old_cancelled = (await store.create(noop_later()))[0]
    await store.cancel(old_cancelled.id)
    recent = await make_finished(store, TaskStatus.COMPLETED)
    pending = (await store.create(noop_later()))[0]
    # The pending task gets an old finished_at too: its status alone must protect it.
    for task_id in [*old_done, old_failed, old_cancelled.id, pending.id]:
        await age(ddb, task_id, 40)
    async with ddb.begin() as conn:
        await conn.execute(
            insert(sync_task_errors).values(
                task_id=old_failed, attempt=1, reason="bad row", created_at=datetime(2026, 1, 1)
            )
        )
    done = await run_task(svc, "task_retention", batch_size=2)
    assert done.status is TaskStatus.COMPLETED, done.error
    assert done.result is not None
    assert (done.result["deleted"], done.result["batches"], done.result["days"]) == (5, 3, 30)
    left = {t.id for t in (await store.list_tasks(TaskFilter(), Page(1, 500))).tasks}
    assert left == {recent, pending.id, done.id}
    async with ddb.connect() as conn:
        for table in (sync_task_attempts, sync_task_errors):
            orphans = await conn.execute(
                select(func.count()).where(table.c.task_id.not_in(list(left)))
            )
            assert orphans.scalar_one() == 0


async def test_task_retention_reads_the_clock_of_its_context(
    ddb: AsyncEngine, dialect_settings: Settings
) -> None:
    """The cutoff comes from the daemon's clock (here 100 days ahead), not the wall clock."""
    clock = Clock(datetime.now(UTC) + timedelta(days=100))
    stores = open_stores(connect(ddb), clock)
    finished_now = await make_finished(stores.tasks, TaskStatus.COMPLETED)
    bus = EventBus()
    pool = SyncEngine(stores, default_registry(), dialect_settings, clock=clock, bus=bus)
    service = ScheduleService(stores.tasks, pool.registry, dialect_settings, pool, bus)
    await pool.start()
    try:
        done = await run_task(service, "task_retention")
    finally:
        await pool.stop()
    assert done.status is TaskStatus.COMPLETED, done.error
    assert done.result is not None and done.result["deleted"] == 1
    assert done.result["cutoff"] == (clock() - timedelta(days=30)).isoformat()
    assert await stores.tasks.get(finished_now) is None


def noop_later() -> NewTask:
    far = datetime.now(UTC) + timedelta(days=365)
    return NewTask(task_type="noop", parameters={}, max_attempts=1, run_after=far)


async def make_finished(store: TaskStore, status: TaskStatus) -> str:
    """A task that ended with `status`, with an attempt row (written directly, not run)."""
    task, _ = await store.create(noop_later())
    now = datetime.now(UTC).replace(tzinfo=None)
    async with store.db.engine.begin() as conn:
        await conn.execute(
            update(sync_tasks)
            .where(sync_tasks.c.id == task.id)
            .values(status=status.value, attempt=1, finished_at=now, dedupe_active=None)
        )
        await conn.execute(
            insert(sync_task_attempts).values(
                task_id=task.id,
                attempt=1,
                node_id="x",
                started_at=now,
                finished_at=now,
                outcome=status.value,
            )
        )
    return task.id
