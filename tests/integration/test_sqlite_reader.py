"""The SQLite store's reader thread: plain reads in read transactions, batched, closed with
the engine."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable

import pytest
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from schedule.store.sqlite_reader import reader_for
from schedule.store.sqlite_writer import writer_for


def _setup(conn: sqlite3.Connection) -> None:
    conn.execute("CREATE TABLE IF NOT EXISTS t (k INTEGER PRIMARY KEY, v TEXT)")
    conn.executemany("INSERT INTO t (k, v) VALUES (?, ?)", [(i, f"v{i}") for i in range(100)])


def _value(key: int) -> Callable[[sqlite3.Connection], str | None]:
    def read(conn: sqlite3.Connection) -> str | None:
        row = conn.execute("SELECT v FROM t WHERE k = ?", (key,)).fetchone()
        return str(row[0]) if row else None

    return read


async def test_reads_see_committed_writes_and_fail_as_sqlalchemy_errors(db: AsyncEngine) -> None:
    reader = reader_for(db, 5.0)
    assert reader_for(db, 5.0) is reader  # one per engine
    await writer_for(db, 5.0).transaction(_setup)
    assert await reader.read(_value(7)) == "v7"

    def change(conn: sqlite3.Connection) -> None:
        conn.execute("UPDATE t SET v = 'new' WHERE k = 7")

    await writer_for(db, 5.0).transaction(change)
    assert await reader.read(_value(7)) == "new"

    def write(conn: sqlite3.Connection) -> None:
        conn.execute("DELETE FROM t")

    with pytest.raises(OperationalError, match="readonly"):
        await reader.read(write)  # query_only: the reader never writes

    def bug(conn: sqlite3.Connection) -> None:
        raise ValueError("a bug in the read")

    with pytest.raises(ValueError, match="a bug"):
        await reader.read(bug)
    assert await reader.read(_value(8)) == "v8"  # the thread goes on


async def test_reads_asked_together_each_get_their_own_answer(db: AsyncEngine) -> None:
    await writer_for(db, 5.0).transaction(_setup)
    reader = reader_for(db, 5.0)
    answers = await asyncio.gather(*(reader.read(_value(i % 120)) for i in range(500)))
    assert answers == [f"v{i % 120}" if i % 120 < 100 else None for i in range(500)]


async def test_dispose_closes_the_reader_and_a_new_one_follows(db: AsyncEngine) -> None:
    await writer_for(db, 5.0).transaction(_setup)
    reader = reader_for(db, 5.0)
    assert await reader.read(_value(1)) == "v1"
    thread = reader.thread
    await db.dispose()
    with pytest.raises(OperationalError, match="closed"):
        await reader.read(_value(1))
    assert thread is not None
    await asyncio.to_thread(thread.join, 10)
    assert not thread.is_alive()
    fresh = reader_for(db, 5.0)
    assert fresh is not reader
    assert await fresh.read(_value(2)) == "v2"
