"""Test helpers: waiting on engine events instead of sleeping, gated handlers."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from engine.context import TaskContext
from engine.engine import EngineEvent, SyncEngine
from engine.handlers.base import HandlerSpec, JsonObject, Parameters


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
    """Collects engine events and lets a test await them (bounded by a timeout)."""

    def __init__(self, engine: SyncEngine) -> None:
        self.seen: dict[str, list[EngineEvent]] = defaultdict(list)
        self._changed = asyncio.Condition()
        engine.listeners.append(self._on_event)

    def _on_event(self, event: EngineEvent) -> None:
        self.seen[event.task.id].append(event)
        asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    def kinds(self, task_id: str) -> list[str]:
        return [e.kind for e in self.seen[task_id]]

    async def wait(self, task_id: str, kind: str, count: int = 1, within: float = 10) -> None:
        """Until `task_id` had `count` events of `kind` (at most `within` seconds)."""
        async with asyncio.timeout(within), self._changed:
            await self._changed.wait_for(lambda: self.kinds(task_id).count(kind) >= count)


async def poll_until(check: Callable[[], Awaitable[bool]], within: float, every: float) -> None:
    """Re-check a database value that no event announces (e.g. a periodic flush has landed)."""
    async with asyncio.timeout(within):
        while not await check():  # noqa: ASYNC110 (nothing to wait on: the value is in the DB)
            await asyncio.sleep(every)


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
