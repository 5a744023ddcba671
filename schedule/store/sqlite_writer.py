"""The SQLite store's hot write path: whole transactions on one thread, one hop each.

aiosqlite runs every driver call on its connection's thread, and SQLAlchemy's adapter makes four
such calls per statement (cursor, execute, fetch, close), each a hand-off between the event loop
and that thread. A claim or a finish of a group of attempts is a transaction of two or three
statements: about a dozen hand-offs, each waiting for the GIL on the far side, and that waiting
was most of the engine's time per task (profiled). Here a whole transaction is one plain
function run on one thread that owns one `sqlite3` connection: one hand-off per transaction.

Record imports and data-source syncs run their batches here too (`ImportStore.upsert_prepared`,
the sync's `TargetWriter`): one hand-off per batch instead of several per statement, and the
batch queues with the store's writes.

Ordering with the rest of the store: SQLite has one writer. Transactions submitted here run one
after another in submission order (one thread, FIFO). Writes made through SQLAlchemy (API
updates, cancels, rescue ...) first take `lock` and `drain()` this queue, and no transaction is
submitted while `lock` is held, so the two paths never wait on each other's write lock through
SQLite's busy handler, which sleeps in steps of milliseconds.

Checkpoints run on a thread of their own. With SQLite's automatic checkpoint, the transaction
that crosses the 1000-page mark copies the WAL into the database file and syncs both, inline:
that was a third of the writer's time per task. The writer's connection has automatic
checkpoints off; instead, after every `CHECKPOINT_EVERY` commits (and at most `CHECKPOINT_IDLE_S`
after the last commit) the checkpointer runs `PRAGMA wal_checkpoint(PASSIVE)` on its own
connection, which never blocks the writer. Durability is unchanged or better: with
`synchronous=NORMAL` a commit reaches the disk when the WAL is synced at a checkpoint, and these
come at least as often as the automatic ones would.

Errors come back as SQLAlchemy's exception classes (`DBAPIError.instance`), so callers handle
them exactly as they handle errors of the async engine. The writer is one per engine, created on
first use and closed by `engine.dispose()`.

Bounded waits: a transaction given a time limit is abandoned when it has not committed in time.
Its wait for the write lock (SQLite's busy timeout) is set to what is left of that time when it
starts, and an abandoned transaction still in the queue is dropped without touching the
database, so a lock held by another process costs each caller about its timeout, not the sum of
the busy timeouts of everything queued before it.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

log = logging.getLogger(__name__)
R = TypeVar("R")
CHECKPOINT_EVERY = 8
CHECKPOINT_IDLE_S = 1.0
Work = Callable[[sqlite3.Connection], R]


class Abandoned(TimeoutError):
    """The caller stopped waiting (cancelled or timed out) before the commit: rolled back, or
    never begun. A TimeoutError: a caller that sees it had run out of time."""


@dataclass
class _Ticket:
    """One submitted transaction; `abandoned` is read by the writer thread before BEGIN and
    before COMMIT; `deadline` (time.monotonic) bounds its wait for the write lock."""

    abandoned: bool = False
    deadline: float | None = None


#: The busy timeout is set in steps of this (ms), so that it changes only when the time left
#: does by that much (a PRAGMA per transaction would cost the hot path).
BUSY_STEP_MS = 100


class SqliteWriter:
    """One `sqlite3` connection on one thread; `transaction(work)` runs `work(conn)` inside
    `BEGIN IMMEDIATE ... COMMIT` there (rolled back if it raises)."""

    def __init__(self, path: str, busy_timeout_s: float) -> None:
        self.path = path
        self.busy_timeout_s = busy_timeout_s
        self.lock = asyncio.Lock()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="syncd-sqlite-writer")
        self._conn: sqlite3.Connection | None = None
        self._last: asyncio.Future[Any] | None = None
        self._closed = False
        self._commits = 0  # since the last checkpoint request (writer thread only)
        self._busy_ms = int(busy_timeout_s * 1000)  # the connection's current busy timeout
        self._checkpoint_due = threading.Event()
        self._checkpointer: threading.Thread | None = None

    @property
    def checkpointer(self) -> threading.Thread | None:
        """The checkpointer thread: None until the first transaction opens the writer's
        connection; it ends once the writer is closed."""
        return self._checkpointer

    async def transaction(self, work: Work[R], limit_s: float | None = None) -> R:
        """Run `work` in one write transaction on the writer thread and return its result.

        A caller that is cancelled while waiting leaves the transaction to run, but it is
        rolled back instead of committed if the writer has not reached COMMIT yet (and not
        started at all if it has not reached BEGIN). With `limit_s`, the caller stops waiting
        after that many seconds (TimeoutError), as if cancelled, and the wait for the write lock
        is bounded by the time left.
        """
        deadline = None if limit_s is None else time.monotonic() + limit_s
        async with asyncio.timeout(limit_s):
            async with self.lock:  # held only to submit: see the module docstring
                if self._closed:
                    closed = sqlite3.OperationalError("the database writer is closed")
                    raise DBAPIError.instance(None, None, closed, sqlite3.Error)
                ticket = _Ticket(deadline=deadline)
                future = asyncio.wrap_future(self._executor.submit(self._run, work, ticket))
                self._last = future
            try:
                return await asyncio.shield(future)
            except asyncio.CancelledError:
                ticket.abandoned = True
                future.add_done_callback(_consume)  # its `Abandoned` (or result) is nobody's now
                raise

    async def drain(self) -> None:
        """Wait until every transaction submitted so far has ended (call with `lock` held)."""
        last = self._last
        if last is not None and not last.done():
            await asyncio.wait([last])

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(self.path, timeout=self.busy_timeout_s, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_s * 1000)}")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA wal_autocheckpoint=0")  # the checkpointer's job
            self._conn = conn
            self._checkpointer = threading.Thread(
                target=self._checkpoint_loop, name="syncd-sqlite-checkpoint", daemon=True
            )
            self._checkpointer.start()
        return self._conn

    def _run(self, work: Work[R], ticket: _Ticket) -> R:
        if ticket.abandoned:
            raise Abandoned("the caller stopped waiting before the transaction began")
        try:
            conn = self._connection()
            self._set_busy_timeout(conn, ticket.deadline)
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise DBAPIError.instance("BEGIN IMMEDIATE", None, exc, sqlite3.Error) from exc
        try:
            result = work(conn)
            if ticket.abandoned:
                raise Abandoned("the caller stopped waiting before the commit")
            conn.execute("COMMIT")
            self._commits += 1
            if self._commits >= CHECKPOINT_EVERY:
                self._commits = 0
                self._checkpoint_due.set()
        except BaseException as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise DBAPIError.instance(None, None, exc, sqlite3.Error) from exc
            raise
        return result

    def _set_busy_timeout(self, conn: sqlite3.Connection, deadline: float | None) -> None:
        """Wait for the write lock at most until `deadline` (the configured timeout without)."""
        wanted = int(self.busy_timeout_s * 1000)
        if deadline is not None:
            left_ms = int((deadline - time.monotonic()) * 1000)
            if left_ms <= 0:
                raise Abandoned("the caller's time ran out before the transaction began")
            wanted = min(wanted, max(BUSY_STEP_MS, left_ms // BUSY_STEP_MS * BUSY_STEP_MS))
        if wanted != self._busy_ms:
            conn.execute(f"PRAGMA busy_timeout={wanted}")
            self._busy_ms = wanted

    def _checkpoint_loop(self) -> None:
        """The checkpointer thread: a passive checkpoint when asked, or once the writer has
        been quiet for `CHECKPOINT_IDLE_S` after a commit; ends when the writer closes."""
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout_s, isolation_level=None)
        try:
            while not self._closed:
                asked = self._checkpoint_due.wait(CHECKPOINT_IDLE_S if self._commits else None)
                if self._closed:
                    break
                self._checkpoint_due.clear()
                if not asked:
                    self._commits = 0
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error as exc:  # busy or I/O: the next one catches up
                    log.warning("SQLite checkpoint failed: %s", exc, extra={"action": "checkpoint"})
        finally:
            conn.close()

    def close(self) -> None:
        """Close the connection on its thread and let the threads end (does not block)."""
        if self._closed:
            return
        self._closed = True
        self._checkpoint_due.set()
        self._executor.submit(self._close_connection)
        self._executor.shutdown(wait=False)

    def _close_connection(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _consume(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


class Closeable(Protocol):
    def close(self) -> None: ...


C = TypeVar("C", bound=Closeable)


class PerEngine(Generic[C]):
    """One thread-owning `C` per SQLite file engine, made by the first caller with its busy
    timeout and closed by `engine.dispose()` (the writer here, the reader in sqlite_reader)."""

    def __init__(self, make: Callable[[str, float], C]) -> None:
        self._make = make
        self._made: weakref.WeakKeyDictionary[Engine, C] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def get(self, engine: AsyncEngine, busy_timeout_s: float) -> C:
        sync_engine = engine.sync_engine
        with self._lock:
            made = self._made.get(sync_engine)
            if made is None:
                path = sync_engine.url.database
                if not path or path == ":memory:":
                    raise ValueError("the SQLite store needs a database file, not :memory:")
                made = self._make(path, busy_timeout_s)
                self._made[sync_engine] = made
                if not event.contains(sync_engine, "engine_disposed", self._on_disposed):
                    event.listen(sync_engine, "engine_disposed", self._on_disposed)
            return made

    def _on_disposed(self, engine: Engine) -> None:
        with self._lock:
            made = self._made.pop(engine, None)
        if made is not None:
            made.close()


_writers = PerEngine(SqliteWriter)


def writer_for(engine: AsyncEngine, busy_timeout_s: float) -> SqliteWriter:
    """The writer of a SQLite file engine (one per engine, made by the first caller with its
    busy timeout; closed by `engine.dispose()`)."""
    return _writers.get(engine, busy_timeout_s)
