"""How every store reaches the database: one connector per backend, one read path, one write
path.

A store never opens a connection or a transaction itself: it asks its connector (`db`) for
`read()` or `write()` (or, for a connection held across transactions, `hold()` and then
`write_on()` for each transaction). The write path is where a backend enforces what every
write must obey:

* MySQL/MariaDB (`MySqlConnector`): the transaction runs under `asyncio.timeout(timeout)`
  (`SYNCD_DB_TIMEOUT_S`), pool checkout included: a server that went silent (no RST, a hung
  network) cannot hold an API request or an engine loop longer than that (aiomysql has no read
  timeout of its own). A write that failed for want of space is remembered for `write_check`.
* SQLite (`SqliteConnector`): one writer per file. The task store's hot paths run as whole
  transactions on the `SqliteWriter` thread (`run`); every other write first takes the writer's
  lock and drains its queue, so the two never meet in SQLite's busy handler (which sleeps in
  steps of milliseconds), then begins `BEGIN IMMEDIATE` with the busy timeout set to the time
  left. With `timeout`, every transaction ends within about that many seconds from the call
  (TimeoutError), the wait for the writer's queue and for another process's write lock
  included.

`bulk=True` is for a handler's long write (a partnumber-book snapshot, an import or sync batch):
the same path and locks, without the time bound, which is for API requests and the engine's
loops; such a write is bounded by its task's timeout and cancellation instead.

Reads (`read()`) run under the same timeout and, on SQLite, begin deferred: they never wait for
a writer; the SQLite store's hottest reads run as plain SQL on a reader thread
(`SqliteConnector.read_plain`). The SQL difference every store may meet is here as well: row
locks (`lock`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence
from typing import Any, TypeVar

from sqlalchemy import Select, literal_column, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from schedule.database import BUSY_MS_OPTION, READONLY, is_full
from schedule.store.sqlite_reader import Read, SqliteReader, reader_for
from schedule.store.sqlite_writer import SqliteWriter, Work, writer_for
from schedule.upsert import PreparedInsert, execute_rows

R = TypeVar("R")
#: How long a readiness check waits for the write lock: at most this, and at most
#: `PROBE_SHARE` of SYNCD_DB_TIMEOUT_S (the rest of /readyz's bound is the read check's).
PROBE_S = 2.0
PROBE_SHARE = 0.8
#: Below this much free space where the SQLite file lives, the disk counts as full.
MIN_FREE_BYTES = 1024 * 1024


class Connector(ABC):
    """One database as the stores see it: a read path, a write path and the SQL that differs
    between backends. Use `connect` to get the right one for an engine."""

    def __init__(self, engine: AsyncEngine, timeout: float | None = None) -> None:
        self.engine = engine
        self.timeout = timeout

    @property
    def name(self) -> str:
        """The SQLAlchemy dialect's name (`sqlite`, `mysql`)."""
        return self.engine.dialect.name

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A read transaction, bounded by `timeout` (TimeoutError when it is exceeded)."""
        async with asyncio.timeout(self.timeout), self.engine.connect() as conn:
            yield await conn.execution_options(**READONLY)

    @contextlib.asynccontextmanager
    async def hold(self) -> AsyncIterator[AsyncConnection]:
        """A connection kept across transactions (for a temporary table, say); each of its
        write transactions goes through `write_on`."""
        async with self.engine.connect() as conn:
            yield conn

    @abstractmethod
    def write(
        self, *, bulk: bool = False
    ) -> contextlib.AbstractAsyncContextManager[AsyncConnection]:
        """A write transaction on a pooled connection, through this backend's write path."""

    @abstractmethod
    def write_on(
        self, conn: AsyncConnection, *, bulk: bool = False
    ) -> contextlib.AbstractAsyncContextManager[AsyncConnection]:
        """A write transaction on a connection from `hold()`, through the write path."""

    @abstractmethod
    async def write_rows(self, prepared: PreparedInsert, params: Sequence[tuple[Any, ...]]) -> None:
        """Write one batch of rows with a prepared statement, in one bulk transaction."""

    @abstractmethod
    async def write_check(self) -> str | None:
        """Why a write cannot be made now, or None (readiness)."""

    async def ping(self) -> None:
        """Raise if the database cannot be reached."""
        async with self.read() as conn:
            await conn.execute(select(literal_column("1")))

    @abstractmethod
    def lock(self, query: Select[Any], *, skip_locked: bool) -> Select[Any]:
        """`query` taking row locks for the rest of the write transaction: rows other
        transactions hold are skipped (`skip_locked`) or waited for."""

    async def dispose(self) -> None:
        """Close the engine's connections (and the SQLite writer)."""
        await self.engine.dispose()


class MySqlConnector(Connector):
    """MariaDB/MySQL: every write transaction under the timeout; row locks are `FOR UPDATE`
    (`SKIP LOCKED` where a claim must not wait)."""

    def __init__(self, engine: AsyncEngine, timeout: float | None = None) -> None:
        super().__init__(engine, timeout)
        # Why the last write failed for want of space, until a write succeeds (readiness).
        self._full: str | None = None

    @contextlib.asynccontextmanager
    async def write(self, *, bulk: bool = False) -> AsyncIterator[AsyncConnection]:
        async with self._bounded(bulk), self.engine.begin() as conn:
            yield conn
        self._full = None

    @contextlib.asynccontextmanager
    async def write_on(
        self, conn: AsyncConnection, *, bulk: bool = False
    ) -> AsyncIterator[AsyncConnection]:
        async with self._bounded(bulk), conn.begin():
            yield conn
        self._full = None

    @contextlib.asynccontextmanager
    async def _bounded(self, bulk: bool) -> AsyncIterator[None]:
        try:
            async with asyncio.timeout(None if bulk else self.timeout):
                yield
        except DBAPIError as exc:
            if is_full(exc):
                self._full = first_line(exc)
            raise

    async def write_rows(self, prepared: PreparedInsert, params: Sequence[tuple[Any, ...]]) -> None:
        async with self.write(bulk=True) as conn:
            await prepared.execute(conn, params)

    async def write_check(self) -> str | None:
        """Why a write cannot be made now, or None: the server is not read-only and the last
        write did not fail for want of space."""
        async with self.read() as conn:
            read_only = (await conn.execute(text("SELECT @@read_only"))).scalar()
        if read_only:
            return "the server is read-only (read_only=ON)"
        if self._full is not None:
            return f"the last write failed: {self._full}"
        return None

    def lock(self, query: Select[Any], *, skip_locked: bool) -> Select[Any]:
        return query.with_for_update(skip_locked=skip_locked)


class SqliteConnector(Connector):
    """SQLite: one writer. Whole transactions run on the `SqliteWriter` thread (`run`); other
    writes take its lock and drain its queue first (see the module docstring). Row locks are
    not needed: a write transaction holds the database's write lock (`BEGIN IMMEDIATE`)."""

    def __init__(self, engine: AsyncEngine, timeout: float | None = None) -> None:
        super().__init__(engine, timeout)
        self.busy_timeout_s = timeout or 5.0

    @property
    def writer(self) -> SqliteWriter:
        """The engine's writer thread (one per engine)."""
        return writer_for(self.engine, self.busy_timeout_s)

    @property
    def reader(self) -> SqliteReader:
        """The engine's reader thread (one per engine)."""
        return reader_for(self.engine, self.busy_timeout_s)

    async def read_plain(self, work: Read[R]) -> R:
        """Run `work(conn)` (a plain, read-only `sqlite3` connection, each statement its own
        read) on the reader thread, within `timeout`: the hot reads' path (one hand-off,
        shared by the reads that arrive together)."""
        async with asyncio.timeout(self.timeout):
            return await self.reader.read(work)

    async def run(self, work: Work[R], *, bulk: bool = False) -> R:
        """Run `work(conn)` (a plain `sqlite3` connection) as one write transaction on the
        writer thread: one hand-off between the event loop and the driver for the whole
        transaction."""
        return await self.writer.transaction(work, None if bulk else self.timeout)

    @contextlib.asynccontextmanager
    async def write(self, *, bulk: bool = False) -> AsyncIterator[AsyncConnection]:
        limit = None if bulk else self.timeout
        deadline = None if limit is None else time.monotonic() + limit
        writer = self.writer
        async with asyncio.timeout(limit), writer.lock:
            await writer.drain()
            async with self.engine.connect() as conn, self._begin(conn, deadline) as began:
                yield began

    @contextlib.asynccontextmanager
    async def write_on(
        self, conn: AsyncConnection, *, bulk: bool = False
    ) -> AsyncIterator[AsyncConnection]:
        limit = None if bulk else self.timeout
        deadline = None if limit is None else time.monotonic() + limit
        writer = self.writer
        async with asyncio.timeout(limit), writer.lock:
            await writer.drain()
            async with self._begin(conn, deadline) as began:
                yield began

    @contextlib.asynccontextmanager
    async def _begin(
        self, conn: AsyncConnection, deadline: float | None
    ) -> AsyncIterator[AsyncConnection]:
        """`BEGIN IMMEDIATE` on `conn`, waiting for another process's write lock at most until
        `deadline`."""
        busy = _busy_ms(deadline, self.busy_timeout_s)
        conn = await conn.execution_options(**{BUSY_MS_OPTION: busy})
        async with conn.begin():
            yield conn

    async def write_rows(self, prepared: PreparedInsert, params: Sequence[tuple[Any, ...]]) -> None:
        """On the writer thread, as multi-row statements when the statement allows."""
        multi_row = prepared.multi_row
        if multi_row is None:
            async with self.write(bulk=True) as conn:
                await prepared.execute(conn, params)
            return
        await self.run(lambda conn: execute_rows(conn, multi_row, params), bulk=True)

    async def write_check(self) -> str | None:
        """Why a write cannot be made now, or None: on the writer's own connection (behind the
        writes queued before it), the write lock is taken within `PROBE_S` (or `PROBE_SHARE`
        of the timeout, if less) and a new page can be allocated (a table is created and
        rolled back at once), and the disk where the file lives has room."""
        writer = self.writer

        def work(conn: sqlite3.Connection) -> None:
            conn.execute("CREATE TABLE syncd_write_probe (x)")  # needs a page of its own
            raise _ProbeDone  # rolled back: nothing is left behind

        probe_s = min(PROBE_S, PROBE_SHARE * (self.timeout or PROBE_S))
        try:
            await writer.transaction(work, limit_s=probe_s)
        except _ProbeDone:
            pass
        except TimeoutError:
            return f"no write lock within {probe_s:g} s: another process holds the database"
        except DBAPIError as exc:
            if is_full(exc):
                return f"the database is full: {first_line(exc)}"
            if "locked" in str(exc.orig):
                return f"no write lock within {probe_s:g} s: another process holds the database"
            return f"cannot write: {first_line(exc)}"
        room = await asyncio.to_thread(_free_bytes, writer.path)
        if room < MIN_FREE_BYTES:
            return f"the disk is full: {room:,} bytes free where the database is"
        return None

    def lock(self, query: Select[Any], *, skip_locked: bool) -> Select[Any]:
        return query  # the transaction already holds the database's write lock


def connect(engine: AsyncEngine, timeout: float | None = None) -> Connector:
    """The connector for the engine's backend. `timeout` (`SYNCD_DB_TIMEOUT_S`) bounds every
    transaction but bulk writes: on MySQL a server that went silent, on SQLite the wait for the
    writer's queue and for another process's write lock."""
    if engine.dialect.name == "sqlite":
        return SqliteConnector(engine, timeout)
    return MySqlConnector(engine, timeout)


def first_line(exc: BaseException) -> str:
    """The first line of a driver error's message (or its class name)."""
    orig = getattr(exc, "orig", None) or exc
    text_ = str(orig).strip()
    return text_.splitlines()[0] if text_ else type(orig).__name__


def _busy_ms(deadline: float | None, default_s: float) -> int:
    """The SQLite busy timeout for a transaction that must end by `deadline`."""
    if deadline is None:
        return int(default_s * 1000)
    return max(1, min(int(default_s * 1000), int((deadline - time.monotonic()) * 1000)))


def _free_bytes(path: str) -> int:
    """Free space for unprivileged writers on the file system holding `path`."""
    stats = os.statvfs(os.path.dirname(os.path.abspath(path)))
    return stats.f_bavail * stats.f_frsize


class _ProbeDone(Exception):
    """Ends the readiness probe's transaction (rolled back) once the write has been tried."""
