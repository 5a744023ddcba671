"""Lookups by key that arrive together, answered by one query: the task store's hot read.

`GET` of one task is the API's most frequent read. On MariaDB each one through the pool costs
the event loop a checkout with its ping, the statement, the parse of some forty column
descriptions and the rollback on return: four round trips and most of a millisecond of Python
for one row. Under load most of that is overhead that many requests can share.

`Coalescer.get(key)` queues the key; one flush at a time takes every key queued (up to
`limit`) and asks `fetch` for all of them in one query; the keys that arrive meanwhile make the
next flush. A lone request waits for nothing but its own query (the flush starts on the next
turn of the loop); under load a request waits for at most the flush in flight before its own.
On SQLite the same holds for the thread hand-off: one read on the reader thread
(`sqlite_reader`) and one JSON text back for every key of a flush.

Each caller gets its own key's value (None when the query did not find it) or the flush's
error. A caller that gives up (a timeout, a cancelled request) leaves the flush running for
the others.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
Fetch = Callable[[Sequence[K]], Awaitable[Mapping[K, V]]]


class Coalescer(Generic[K, V]):
    """Answers `get(key)` from `fetch(keys)` calls shared by the keys queued together."""

    def __init__(self, fetch: Fetch[K, V], limit: int = 100) -> None:
        self._fetch = fetch
        self._limit = limit
        self._waiting: dict[K, list[asyncio.Future[V | None]]] = {}
        self._flushing: asyncio.Task[None] | None = None

    async def get(self, key: K) -> V | None:
        """The value `fetch` finds for `key`, or None."""
        future: asyncio.Future[V | None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(key, []).append(future)
        if self._flushing is None:
            self._flushing = asyncio.create_task(self._flush(), name="syncd-coalesce")
        return await future

    async def _flush(self) -> None:
        try:
            while self._waiting:
                keys = list(self._waiting)[: self._limit]
                batch = {k: self._waiting.pop(k) for k in keys}
                live = [k for k, fs in batch.items() if any(not f.done() for f in fs)]
                if not live:
                    continue
                try:
                    found = await self._fetch(live)
                except asyncio.CancelledError:  # the loop is closing: nobody gets an answer
                    for futures in batch.values():
                        for future in futures:
                            future.cancel()
                    raise
                except Exception as exc:
                    _settle(batch, error=exc)
                else:
                    _settle(batch, found=found)
        finally:
            self._flushing = None


def _settle(
    batch: Mapping[K, list[asyncio.Future[V | None]]],
    *,
    found: Mapping[K, V] | None = None,
    error: Exception | None = None,
) -> None:
    for key, futures in batch.items():
        for future in futures:
            if future.done():  # its caller gave up
                continue
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(found.get(key) if found is not None else None)
