"""The SQLite store's writer thread: whole transactions, errors as SQLAlchemy's, rollback on
error and on an abandoned caller, checkpoints off the writer, one writer per engine."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from schedule.store import sqlite_writer
from schedule.store.sqlite_writer import writer_for


def _setup(conn: sqlite3.Connection) -> None:
    conn.execute("CREATE TABLE IF NOT EXISTS t (k INTEGER PRIMARY KEY, v TEXT)")


async def _count(db: AsyncEngine) -> int:
    async with db.connect() as conn:
        return int((await conn.execute(text("SELECT COUNT(*) FROM t"))).scalar_one())


async def test_transactions_commit_and_errors_roll_back_as_sqlalchemy_errors(
    db: AsyncEngine,
) -> None:
    writer = writer_for(db, 5.0)
    assert writer_for(db, 5.0) is writer  # one per engine
    await writer.transaction(_setup)

    def insert(conn: sqlite3.Connection) -> int:
        conn.executemany("INSERT INTO t (k, v) VALUES (?, ?)", [(1, "a"), (2, "b")])
        return 2

    assert await writer.transaction(insert) == 2

    def half_then_conflict(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO t (k, v) VALUES (3, 'c')")
        conn.execute("INSERT INTO t (k, v) VALUES (1, 'dup')")

    with pytest.raises(IntegrityError):
        await writer.transaction(half_then_conflict)

    def bug(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO t (k, v) VALUES (4, 'd')")
        raise ValueError("a bug in the work function")

    with pytest.raises(ValueError, match="a bug"):
        await writer.transaction(bug)
    assert await _count(db) == 2  # neither the 3 nor the 4 landed


async def test_a_cancelled_caller_rolls_back_and_the_queue_keeps_order(db: AsyncEngine) -> None:
    writer = writer_for(db, 5.0)
    await writer.transaction(_setup)
    entered, release = threading.Event(), threading.Event()

    def slow(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO t (k, v) VALUES (10, 'slow')")
        entered.set()
        release.wait(10)

    job = asyncio.create_task(writer.transaction(slow))
    assert await asyncio.to_thread(entered.wait, 10)
    job.cancel()
    with pytest.raises(asyncio.CancelledError):
        await job
    release.set()

    def later(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO t (k, v) VALUES (11, 'later')")

    await writer.transaction(later)  # runs after the abandoned one ended
    async with db.connect() as conn:
        keys = (await conn.execute(text("SELECT k FROM t ORDER BY k"))).scalars().all()
    assert keys == [11]


async def test_sqlalchemy_writers_drain_the_queue_first(db: AsyncEngine) -> None:
    """A write through SQLAlchemy under the writer's lock starts only after every submitted
    transaction ended, so the two never meet SQLite's busy handler."""
    writer = writer_for(db, 5.0)
    await writer.transaction(_setup)
    release, ended = threading.Event(), threading.Event()

    def holds_the_lock(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO t (k, v) VALUES (20, 'first')")
        release.wait(10)
        ended.set()

    first = asyncio.create_task(writer.transaction(holds_the_lock))
    await asyncio.sleep(0)  # let it be submitted
    asyncio.get_running_loop().call_later(0.2, release.set)
    async with writer.lock:
        await writer.drain()
        assert ended.is_set()
        async with db.begin() as conn:
            await conn.execute(text("INSERT INTO t (k, v) VALUES (21, 'second')"))
    await first
    assert await _count(db) == 2


async def test_checkpoints_run_on_their_own_thread(
    db: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_writer, "CHECKPOINT_EVERY", 4)
    writer = writer_for(db, 5.0)
    await writer.transaction(_setup)
    path = Path(writer.path)
    before = (await asyncio.to_thread(path.stat)).st_size
    for k in range(4):

        def insert(conn: sqlite3.Connection, k: int = k) -> None:
            conn.executemany(
                "INSERT INTO t (k, v) VALUES (?, ?)",
                [(k * 1000 + i, "x" * 200) for i in range(200)],
            )

        await writer.transaction(insert)
    assert writer.checkpointer is not None and writer.checkpointer.is_alive()

    # The checkpointer is a thread of the writer and tells nobody when it is done: the only
    # sign is the file growing, read again until it has (bounded).
    async with asyncio.timeout(10):
        while (await asyncio.to_thread(path.stat)).st_size <= before + 100_000:  # noqa: ASYNC110
            await asyncio.sleep(0.05)


async def test_dispose_closes_the_writer_and_a_new_one_follows(db: AsyncEngine) -> None:
    writer = writer_for(db, 5.0)
    await writer.transaction(_setup)
    checkpointer = writer.checkpointer
    await db.dispose()
    with pytest.raises(OperationalError):
        await writer.transaction(_setup)
    assert checkpointer is not None
    await asyncio.to_thread(checkpointer.join, 10)
    assert not checkpointer.is_alive()
    fresh = writer_for(db, 5.0)
    assert fresh is not writer
    await fresh.transaction(_setup)


def test_memory_databases_are_refused() -> None:
    engine = create_async_engine("sqlite+aiosqlite:///:memory:")
    with pytest.raises(ValueError, match="database file"):
        writer_for(engine, 5.0)
