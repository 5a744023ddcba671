"""What a handler sees of the engine: parameters, the clock and the stores, progress reporting,
record errors, checkpoints."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from config.settings import Settings
from engine.exceptions import LeaseLost, TaskCancelled
from engine.handlers.base import Parameters
from schedule.clock import Clock
from schedule.records import ProgressUpdate, RecordError
from schedule.stores import Stores
from schedule.task import TaskRecord

ErrorSink = Callable[[Sequence[RecordError]], Awaitable[bool]]
ERROR_BATCH = 200


@dataclass(slots=True)
class LiveProgress:
    """Progress of a running attempt, held in memory and flushed at a bounded rate."""

    task_id: str
    attempt: int
    progress: int = 0
    message: str = ""
    processed_rows: int = 0
    total_rows: int | None = None
    error_count: int = 0
    dirty: bool = False
    version: int = 0

    def snapshot(self) -> ProgressUpdate:
        """A frozen copy for the store."""
        return ProgressUpdate(
            task_id=self.task_id,
            attempt=self.attempt,
            progress=self.progress,
            message=self.message,
            processed_rows=self.processed_rows,
            total_rows=self.total_rows,
        )


@dataclass(slots=True)
class CancelState:
    """Why a running attempt should stop; set by the engine, read by checkpoints."""

    requested: bool = False
    lease_lost: bool = False
    shutdown: bool = False
    reason: str = ""


@dataclass(slots=True)
class TaskContext:
    """Handed to a handler's run function; the handler's only way to talk to the engine.

    `stores` are the daemon's stores, built once at start-up with the configured timeout and
    clock, and `clock` is that clock: a handler builds no store and reads no wall clock itself.
    """

    task: TaskRecord
    params: Parameters
    stores: Stores
    clock: Clock
    settings: Settings
    live: LiveProgress
    cancel: CancelState
    error_sink: ErrorSink
    log: logging.LoggerAdapter[logging.Logger]
    _errors: list[RecordError] = field(default_factory=list)

    @property
    def parameters(self) -> dict[str, Any]:
        """The raw task parameters as stored."""
        return self.task.parameters

    @property
    def cancel_requested(self) -> bool:
        """True once someone asked this task to stop (checked by long loops)."""
        return self.cancel.requested or self.cancel.lease_lost

    def report(
        self,
        *,
        progress: float | None = None,
        message: str | None = None,
        processed: int | None = None,
        total: int | None = None,
    ) -> None:
        """Update live progress (cheap, in memory). Percent is derived from processed/total
        when not given."""
        live = self.live
        if total is not None:
            live.total_rows = total
        if processed is not None:
            live.processed_rows = processed
        if message is not None:
            live.message = message[:2000]
        if progress is None and processed is not None and live.total_rows:
            progress = 100.0 * live.processed_rows / live.total_rows
        if progress is not None:
            live.progress = max(0, min(100, int(progress)))
        live.dirty = True
        live.version += 1

    async def record_error(
        self, reason: str, record: Any = None, position: int | None = None
    ) -> None:
        """Note a record that could not be processed; buffered and written in batches."""
        self._errors.append(RecordError(reason=reason, record=record, position=position))
        self.live.error_count += 1
        if len(self._errors) >= ERROR_BATCH:
            await self.flush_errors()

    async def flush_errors(self) -> None:
        """Write buffered record errors now (also done at checkpoints and at the end)."""
        if not self._errors:
            return
        batch, self._errors = self._errors, []
        if not await self.error_sink(batch):
            raise LeaseLost("lease lost while recording errors")

    async def checkpoint(self) -> None:
        """A safe point to stop: raises `TaskCancelled` (or `LeaseLost`) when asked to."""
        await self.flush_errors()
        if self.cancel.lease_lost:
            raise LeaseLost(self.cancel.reason or "lease lost")
        if self.cancel.requested:
            raise TaskCancelled(self.cancel.reason or "cancelled")
