"""The SQLite store's hot read path: plain `sqlite3` reads on one thread, in batches.

A read through SQLAlchemy's async adapter costs the event loop several hand-offs to an
aiosqlite thread per statement (cursor, execute, fetch, close), each waiting for the GIL on the
far side; `GET` of one task (the task, then its attempts) spent about 3 ms of the loop's time
that way under load, where the two SQLite lookups take some tens of microseconds. Here a read
is one plain function run on the reader's thread with its own `sqlite3` connection (read-only,
WAL: it never waits for the writer).

A read runs without a transaction of its own: each statement reads the database as it was when
the statement began, which is after the read was asked for, so it sees every write committed
before that. A read that must see one state through several statements is written as one
statement (the store's `details_sql`); the thread also gives the GIL up in every SQLite step,
so few statements stepped few times cost the event loop least.

Reads that arrive while the thread is busy are taken together: the thread runs every read it
finds queued and hands the results back to the event loop with one wake-up. Under load that is
one hand-off for many requests.

One reader per engine, created on first use and closed by `engine.dispose()`, as the writer is.
Errors come back as SQLAlchemy's exception classes, as the writer's do.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from schedule.store.sqlite_writer import PerEngine

log = logging.getLogger(__name__)
R = TypeVar("R")
Read = Callable[[sqlite3.Connection], R]
_Item = tuple[Read[Any], "asyncio.Future[Any]", asyncio.AbstractEventLoop]
#: Ends the thread (put by `close`).
_STOP: Any = object()


class SqliteReader:
    """One read-only `sqlite3` connection on one thread; `read(work)` runs `work(conn)` there
    and returns its result."""

    def __init__(self, path: str, busy_timeout_s: float) -> None:
        self.path = path
        self.busy_timeout_s = busy_timeout_s
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._closed = False
        self._conn: sqlite3.Connection | None = None  # the thread's (opened there)

    @property
    def thread(self) -> threading.Thread | None:
        """The reader's thread: None until the first read; it ends once the reader is closed."""
        return self._thread

    async def read(self, work: Read[R]) -> R:
        """Run `work(conn)` on the reader's thread (no transaction: see the module's
        docstring)."""
        if self._closed:
            closed = sqlite3.OperationalError("the database reader is closed")
            raise DBAPIError.instance(None, None, closed, sqlite3.Error)
        if self._thread is None:
            self._start()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._queue.put((work, future, loop))
        return await future

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._serve, name="syncd-sqlite-reader", daemon=True
                )
                self._thread.start()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path,
            timeout=self.busy_timeout_s,
            isolation_level=None,
            check_same_thread=False,
        )
        conn.execute("PRAGMA query_only=ON")
        return conn

    def _serve(self) -> None:
        try:
            while True:
                first = self._queue.get()
                if first is _STOP:
                    break
                batch = [first]
                while True:
                    try:
                        batch.append(self._queue.get_nowait())
                    except queue.Empty:
                        break
                stop = _STOP in batch
                self._run([item for item in batch if item is not _STOP])
                if stop:
                    break
        finally:
            if self._conn is not None:
                self._conn.close()

    def _run(self, batch: list[_Item]) -> None:
        """Run a batch; settle each loop's futures with one call."""
        settled: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Any, bool]]] = {}
        try:
            if self._conn is None:
                self._conn = self._connect()
            conn = self._conn
        except sqlite3.Error as exc:
            error = DBAPIError.instance(None, None, exc, sqlite3.Error)
            for _, future, loop in batch:
                settled.setdefault(loop, []).append((future, error, False))
        else:
            for work, future, loop in batch:
                try:
                    outcome, ok = work(conn), True
                except sqlite3.Error as exc:
                    outcome, ok = DBAPIError.instance(None, None, exc, sqlite3.Error), False
                except Exception as exc:  # a bug in the read: raised where it was asked for
                    outcome, ok = exc, False
                settled.setdefault(loop, []).append((future, outcome, ok))
        for loop, results in settled.items():
            try:
                loop.call_soon_threadsafe(_settle, results)
            except RuntimeError:  # the loop closed while the read ran: nobody waits for it
                log.debug("a read ended after its event loop closed")

    def close(self) -> None:
        """Let the thread end once the reads queued before this have run (does not block)."""
        if not self._closed:
            self._closed = True
            self._queue.put(_STOP)


def _settle(results: list[tuple[asyncio.Future[Any], Any, bool]]) -> None:
    for future, outcome, ok in results:
        if future.done():  # the caller was cancelled or timed out
            continue
        if ok:
            future.set_result(outcome)
        else:
            future.set_exception(outcome)


_readers = PerEngine(SqliteReader)


def reader_for(engine: AsyncEngine, busy_timeout_s: float) -> SqliteReader:
    """The reader of a SQLite file engine (one per engine; closed by `engine.dispose()`)."""
    return _readers.get(engine, busy_timeout_s)
