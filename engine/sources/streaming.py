"""Run a blocking iterator in a worker thread and consume its items on the event loop.

Parsing a spreadsheet or reading another database blocks; the handlers must not do it on the
event loop, and the writing side (our database) should overlap with the reading side. The
producer thread runs at most `prefetch` items ahead of the consumer, so memory stays bounded
however long the source is; stopping early (cancel, failure) tells the thread to stop and
closes the iterator (its files and connections) in the thread that opened it.

A read can block for good: a database that accepts a connection and never answers, a network
file system that hangs. Python cannot interrupt a thread blocked in a system call, so such a
thread is never waited for when it matters: a cancelled consumer (a forced cancel, a shutdown,
a lost lease) leaves at once, and an ending consumer waits at most `STOP_WAIT_S`. The thread
is a daemon thread of its own, not one of the event loop's executor, so it never holds up the
process's exit either; it stops by itself (closing its iterator) once its read returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from types import TracebackType
from typing import Any, Generic, TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)
_POLL_S = 0.1
STOP_WAIT_S = 5.0
"""How long an ending consumer waits for the thread to stop (it notices the stop within
`_POLL_S` of finishing its current item) before leaving it behind."""
_numbers = itertools.count(1)


class ThreadedIterator(Generic[T]):
    """`async with ThreadedIterator(factory) as items: async for item in items: ...`

    `factory` is called in the worker thread (opening a file or a connection blocks too) and
    returns the iterator to drain there. An exception the iterator raises is re-raised to the
    consumer at the point where it occurred, after the items produced before it.
    """

    def __init__(
        self, factory: Callable[[], Iterator[T]], prefetch: int = 2, name: str = "reader"
    ) -> None:
        if prefetch < 1:
            raise ValueError("prefetch must be at least 1")
        self._factory = factory
        self._slots = threading.Semaphore(prefetch)
        self._stop = threading.Event()
        self._queue: asyncio.Queue[tuple[str, object]] = asyncio.Queue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped: asyncio.Future[None] | None = None
        self._thread = threading.Thread(
            target=self._run, name=f"syncd-{name}-{next(_numbers)}", daemon=True
        )

    async def __aenter__(self) -> AsyncIterator[T]:
        self._loop = asyncio.get_running_loop()
        self._stopped = self._loop.create_future()
        self._thread.start()
        return self._items()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        assert self._stopped is not None
        if self._stopped.done():
            return
        if exc_type is not None and issubclass(exc_type, asyncio.CancelledError):
            self._left_behind("the consumer was cancelled")
            return
        try:
            async with asyncio.timeout(STOP_WAIT_S):
                await asyncio.shield(self._stopped)
        except TimeoutError:
            self._left_behind(f"it did not stop within {STOP_WAIT_S:g} s")

    @property
    def thread_alive(self) -> bool:
        """True while the worker thread runs (it may outlive the `async with` block)."""
        return self._thread.is_alive()

    def _left_behind(self, why: str) -> None:
        log.warning(
            "left reader thread %s running: %s; it ends when its current read returns",
            self._thread.name,
            why,
            extra={"action": "reader_left_behind", "reader": self._thread.name},
        )

    async def _items(self) -> AsyncIterator[T]:
        while True:
            kind, value = await self._queue.get()
            if kind == "item":
                self._slots.release()
                yield value  # type: ignore[misc]
            elif kind == "error":
                assert isinstance(value, BaseException)
                raise value
            else:
                return

    def _call(self, callback: Callable[..., object], *args: object) -> None:
        """Run `callback(*args)` on the event loop, if it still runs."""
        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            self._stop.set()

    def _send(self, kind: str, value: object) -> None:
        self._call(self._queue.put_nowait, (kind, value))

    def _run(self) -> None:
        try:
            self._produce()
        finally:
            self._call(_resolve, self._stopped)

    def _produce(self) -> None:
        try:
            iterator = self._factory()
            try:
                for item in iterator:
                    while not self._slots.acquire(timeout=_POLL_S):
                        if self._stop.is_set():
                            return
                    if self._stop.is_set():
                        return
                    self._send("item", item)
            finally:
                close = getattr(iterator, "close", None)
                if close is not None:
                    close()
        except BaseException as exc:  # handed to the consumer, which decides
            self._send("error", exc)
        else:
            self._send("end", None)


def _resolve(future: asyncio.Future[None] | None) -> None:
    if future is not None and not future.done():
        future.set_result(None)


_DONE = object()


async def _next(items: AsyncIterator[T]) -> Any:
    try:
        return await anext(items)
    except StopAsyncIteration:
        return _DONE


async def read_ahead(items: AsyncIterator[T]) -> AsyncGenerator[T, None]:
    """`items` (an async generator), the next one already being fetched while the consumer
    works on the one it got: an HTTP page is requested and decoded while the last one is
    mapped and written. Closing this (or leaving it early) cancels the fetch in flight and
    closes `items`."""
    fetch: asyncio.Task[Any] = asyncio.ensure_future(_next(items))
    try:
        while (item := await fetch) is not _DONE:
            fetch = asyncio.ensure_future(_next(items))
            yield item
    finally:
        if not fetch.done():
            fetch.cancel()
            with contextlib.suppress(BaseException):
                await fetch
        close = getattr(items, "aclose", None)
        if close is not None:
            await close()
