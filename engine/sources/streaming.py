"""Run a blocking iterator in a worker thread and consume its items on the event loop.

Parsing a spreadsheet or reading another database blocks; the handlers must not do it on the
event loop, and the writing side (our database) should overlap with the reading side. The
producer thread runs at most `prefetch` items ahead of the consumer, so memory stays bounded
however long the source is; stopping early (cancel, failure) tells the thread to stop and
closes the iterator (its files and connections) in the thread that opened it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from types import TracebackType
from typing import Generic, TypeVar

T = TypeVar("T")
_POLL_S = 0.1


class ThreadedIterator(Generic[T]):
    """`async with ThreadedIterator(factory) as items: async for item in items: ...`

    `factory` is called in the worker thread (opening a file or a connection blocks too) and
    returns the iterator to drain there. An exception the iterator raises is re-raised to the
    consumer at the point where it occurred, after the items produced before it.
    """

    def __init__(self, factory: Callable[[], Iterator[T]], prefetch: int = 2) -> None:
        if prefetch < 1:
            raise ValueError("prefetch must be at least 1")
        self._factory = factory
        self._slots = threading.Semaphore(prefetch)
        self._stop = threading.Event()
        self._queue: asyncio.Queue[tuple[str, object]] = asyncio.Queue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: asyncio.Future[None] | None = None

    async def __aenter__(self) -> AsyncIterator[T]:
        self._loop = asyncio.get_running_loop()
        self._thread = asyncio.ensure_future(asyncio.to_thread(self._produce))
        return self._items()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            # The thread notices the stop within _POLL_S of finishing its current item.
            await asyncio.shield(self._thread)

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

    def _send(self, kind: str, value: object) -> None:
        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, (kind, value))
        except RuntimeError:  # the loop is closed: nobody is listening any more
            self._stop.set()

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
