"""Test helpers: waiting on the event bus instead of sleeping, a hand-driven clock, gated
handlers.

`Events` is the one way tests wait for something the daemon does: it subscribes to a bus and
wakes its waiters on each event, every wait bounded by `asyncio.timeout`. `task_json_once`
builds on it for tests that drive the HTTP API.
"""

from __future__ import annotations

import asyncio
import inspect
from collections import defaultdict
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar, overload

from aiohttp.test_utils import TestClient

from controllers.keys import BUS
from engine.context import TaskContext
from engine.handlers.base import HandlerSpec, JsonObject, Parameters
from schedule.events import (
    PAYLOADS,
    CallbackEvent,
    Event,
    EventBus,
    EventKind,
    FireEvent,
    NodeEvent,
    ProgressEvent,
    TaskEvent,
)

T = TypeVar("T")
WAIT_S = 10.0
ENDED = frozenset({"completed", "failed", "cancelled"})


class Clock:
    """A hand-driven clock (aware UTC) for stores and schedulers under test."""

    def __init__(self, now: datetime | None = None) -> None:
        self.now = now or datetime(2026, 1, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float = 0.0, **delta: float) -> None:
        """Move forward by `seconds` and/or timedelta keywords (`days=1`, `hours=3`)."""
        self.now += timedelta(seconds=seconds, **delta)


class Events:
    """Every event published on a bus from now on, and bounded waits for more."""

    def __init__(self, bus: EventBus) -> None:
        self.seen: list[Event] = []
        self._changed = asyncio.Event()
        self._unsubscribe = [
            bus.subscribe(payload, [k for k, p in PAYLOADS.items() if p is payload], self._note)
            for payload in (TaskEvent, FireEvent, CallbackEvent, ProgressEvent, NodeEvent)
        ]

    def _note(self, event: Event) -> None:
        self.seen.append(event)
        self._changed.set()

    def close(self) -> None:
        """Stop listening (an `Events` made for one wait)."""
        for unsubscribe in self._unsubscribe:
            unsubscribe()

    def of(self, task_id: str) -> list[TaskEvent]:
        """The task events of one task, in order."""
        return [e for e in self.seen if isinstance(e, TaskEvent) and e.task.id == task_id]

    def kinds(self, task_id: str) -> list[str]:
        """The kinds of one task's events, in order."""
        return [e.kind.value for e in self.of(task_id)]

    def count(self, kind: str) -> int:
        """How many events of `kind` were seen (all tasks, jobs and callbacks)."""
        return sum(1 for e in self.seen if e.kind == kind)

    @overload
    async def until(
        self, check: Callable[[], Awaitable[T | None]], within: float = WAIT_S
    ) -> T: ...

    @overload
    async def until(self, check: Callable[[], T | None], within: float = WAIT_S) -> T: ...

    async def until(self, check: Callable[[], Any], within: float = WAIT_S) -> Any:
        """Run `check` now and again after each event, until it returns something true (which
        is returned); `TimeoutError` after `within` seconds. `check` may be a coroutine
        function (a read of the database or the API that events announce changes to)."""
        async with asyncio.timeout(within):
            while True:
                self._changed.clear()  # before the check: an event during it is not missed
                result = check()
                if inspect.isawaitable(result):
                    result = await result
                if result:
                    return result
                await self._changed.wait()

    async def wait(
        self, task_id: str, kind: str, count: int = 1, within: float = WAIT_S
    ) -> TaskEvent:
        """Until `task_id` had `count` events of `kind`; the last of them."""

        def found() -> TaskEvent | None:
            matching = [e for e in self.of(task_id) if e.kind == kind]
            return matching[count - 1] if len(matching) >= count else None

        return await self.until(found, within)

    def end_of(self, task_id: str) -> TaskEvent | None:
        """The `finished` event that ended `task_id` for good (not a retry), if seen."""
        for event in self.of(task_id):
            outcome = event.outcome
            if event.kind is EventKind.FINISHED and outcome is not None and outcome.status.finished:
                return event
        return None

    async def ended(self, task_id: str, within: float = WAIT_S) -> TaskEvent:
        """Until `task_id` ended for good; its final `finished` event."""
        return await self.until(lambda: self.end_of(task_id), within)


async def task_json_once(
    client: TestClient[Any, Any],
    key: str,
    statuses: Collection[str] = ENDED,
    within: float = 30.0,
) -> dict[str, Any]:
    """`GET /api/sync/tasks/{key}` (an id or a reference) once the task's status is one of
    `statuses` (by default: it ended). Read now, and again after each event about the task on
    the app's bus: subscribed before the first read, so a change cannot slip between the two.

    The status is read from the database: a `finished` event may still be on its way to the
    subscribers when this returns. A test that needs them to have heard it (uploads removed,
    callbacks woken) waits on an `Events` made before the task was created.
    """
    events = Events(client.app[BUS])
    task_id: str | None = None
    heard = -1

    async def check() -> dict[str, Any] | None:
        nonlocal task_id, heard
        if task_id is not None:
            about = len(events.of(task_id))
            if about == heard:
                return None  # an event about another task: nothing to read again
            heard = about
        resp = await client.get(f"/api/sync/tasks/{key}")
        assert resp.status == 200, await resp.text()
        task: dict[str, Any] = await resp.json()
        task_id = task["id"]
        return task if task["status"] in statuses else None

    try:
        return await events.until(check, within)
    finally:
        events.close()


class GateParams(Parameters):
    """Parameters of the test-only `gate` type."""

    name: str = "default"
    report: int = 0


@dataclass
class Gates:
    """asyncio.Events a gated handler waits on, and started-signals it raises."""

    release: dict[str, asyncio.Event] = field(default_factory=lambda: defaultdict(asyncio.Event))
    started: dict[str, asyncio.Event] = field(default_factory=lambda: defaultdict(asyncio.Event))
    running: int = 0
    peak: int = 0

    def spec(self, task_type: str = "gate", concurrency: int | None = None) -> HandlerSpec:
        async def run(ctx: TaskContext) -> JsonObject:
            params = ctx.params
            assert isinstance(params, GateParams)
            self.running += 1
            self.peak = max(self.peak, self.running)
            try:
                if params.report:
                    ctx.report(processed=params.report, total=100, message="halfway")
                    await ctx.record_error("bad row", {"n": 1}, 7)
                self.started[params.name].set()
                await self.release[params.name].wait()
                await ctx.checkpoint()
                return {"gate": params.name}
            finally:
                self.running -= 1

        return HandlerSpec(task_type=task_type, run=run, params=GateParams, concurrency=concurrency)
