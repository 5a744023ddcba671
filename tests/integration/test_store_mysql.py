"""Internals of the MariaDB/MySQL task store: its row locks and its write path's bound (the
behaviour every backend shares is in test_store.py).

Claims lock with `SKIP LOCKED`: a task another transaction holds is passed over, never waited
for. A finish locks the rows it may write and waits for them: a row its own node's heartbeat
or a rescuer holds is judged once free, never skipped. Every transaction of the write path ends
within the connector's timeout, whatever it waits for.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import event, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from schedule.database import create_engine
from schedule.exceptions import NotFound
from schedule.models import sync_tasks
from schedule.records import Outcome
from schedule.store import MySqlConnector, TaskStore, connect, make_store
from schedule.task import NewTask, TaskStatus
from tests.conftest import make_settings, migrate_url

pytestmark = pytest.mark.mariadb
TIMEOUT_S = 1.0


@pytest.fixture
def engine(mariadb_url: str, tmp_path: Path) -> AsyncEngine:
    migrate_url(mariadb_url)
    return create_engine(make_settings(mariadb_url, tmp_path))


@pytest.fixture
async def store(engine: AsyncEngine) -> AsyncIterator[TaskStore]:
    db = connect(engine, TIMEOUT_S)
    assert isinstance(db, MySqlConnector)
    yield make_store(db)
    await engine.dispose()


async def lock_row(engine: AsyncEngine, task_id: str) -> AsyncConnection:
    """Another transaction holding the task's row lock (until its connection is closed)."""
    conn = await engine.connect()
    await conn.begin()
    await conn.execute(select(sync_tasks.c.id).where(sync_tasks.c.id == task_id).with_for_update())
    return conn


async def test_a_claim_skips_a_task_another_transaction_holds(
    store: TaskStore, engine: AsyncEngine
) -> None:
    first, _ = await store.create(NewTask("noop", {}, 3, priority=9))
    rest = [t for t, _ in await store.create_many([NewTask("noop", {}, 3) for _ in range(3)])]
    holder = await lock_row(engine, first.id)
    try:
        began = time.monotonic()
        claimed = await store.claim("n1", 10, lease_s=30)
        assert time.monotonic() - began < TIMEOUT_S  # not waited for
        assert {t.id for t in claimed} == {t.id for t in rest}
    finally:
        await holder.close()
    (last,) = await store.claim("n1", 10, lease_s=30)
    assert last.id == first.id


async def test_a_finish_waits_for_a_row_lock_and_then_writes(
    store: TaskStore, engine: AsyncEngine
) -> None:
    task, _ = await store.create(NewTask("noop", {}, 3))
    (claimed,) = await store.claim("n1", 1, lease_s=30)
    holder = await lock_row(engine, task.id)  # as this node's heartbeat would, for a moment
    try:
        outcome = Outcome(task.id, claimed.attempt, TaskStatus.COMPLETED, "completed")
        finishing = asyncio.ensure_future(store.finish("n1", [outcome]))
        done, _ = await asyncio.wait([finishing], timeout=TIMEOUT_S / 2)
        assert not done, "the finish skipped a locked row instead of waiting for it"
    finally:
        await holder.close()
    assert await finishing == {task.id}
    assert (await store.require(task.id)).status is TaskStatus.COMPLETED


async def test_a_write_waiting_for_a_lock_ends_within_the_timeout(
    store: TaskStore, engine: AsyncEngine
) -> None:
    """The server's own lock wait (innodb_lock_wait_timeout, 50 s by default) never decides:
    the write path's bound does."""
    task, _ = await store.create(NewTask("noop", {}, 3))
    holder = await lock_row(engine, task.id)
    try:
        began = time.monotonic()
        with pytest.raises(TimeoutError):
            await store.cancel(task.id)
        assert time.monotonic() - began < TIMEOUT_S + 1.0
    finally:
        await holder.close()
    assert (await store.cancel(task.id)).status is TaskStatus.CANCELLED


async def test_gets_of_one_task_that_arrive_together_share_a_statement(
    store: TaskStore, engine: AsyncEngine
) -> None:
    made = [t for t, _ in await store.create_many([NewTask("noop", {}, 3) for _ in range(30)])]
    statements: list[str] = []

    def count(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        if "json_arrayagg" in statement.lower():
            statements.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", count)
    # by id, by reference, by a reference in lower case (the column's collation ignores case)
    keys = [t.id for t in made[:10]] + [t.reference for t in made[10:20]]
    keys += [t.reference.lower() for t in made[20:]]
    found = await asyncio.gather(*(store.detail(k) for k in keys))
    event.remove(engine.sync_engine, "before_cursor_execute", count)
    assert [task.id for task, attempts in found] == [t.id for t in made]
    assert all(attempts == [] for _, attempts in found)
    assert 1 <= len(statements) < len(keys)

    missing = asyncio.gather(store.detail(made[0].id), store.detail("NOSUCHTASK0"))
    with pytest.raises(NotFound):
        await missing
