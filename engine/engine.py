"""SyncEngine: the worker pool of one node.

One dispatcher claims due tasks whenever a slot is free and something may be waiting (a local
submit wakes it at once; otherwise it polls every `poll_interval_s`). Each claimed task runs as an
asyncio task under `AttemptRunner`. Background loops extend leases (and pick up cancel requests
made on other nodes), flush live progress at a bounded rate, write finished attempts in groups,
and rescue tasks whose lease expired on any node. The engine talks to the database only through
`TaskStore`, and tells the rest of the daemon what happened through the event bus
(`schedule.events`: started, finished, released, lost, rescued; progress saved; database down
and up again).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy.exc import SQLAlchemyError

from config.settings import Settings
from engine.context import CancelState, LiveProgress, TaskContext
from engine.handlers.base import HandlerSpec, Registry
from engine.retry import RetryPolicy
from engine.worker import AttemptRunner
from schedule.clock import utcnow
from schedule.events import EventBus, EventKind, NodeEvent, ProgressEvent, TaskEvent
from schedule.records import Outcome, RecordError
from schedule.stores import Stores
from schedule.task import TaskRecord

log = logging.getLogger(__name__)
DB_ERRORS = (SQLAlchemyError, OSError, TimeoutError, ConnectionError)
#: Returned by a loop step that had nothing to do and so did not touch the database: it
#: proves nothing about the database being reachable again.
SKIPPED: Any = object()
STOP_WAIT_S = 5.0
"""How long stopping waits, after the grace, for cancelled attempts to end and then for the
outcomes to be written (each), whatever `cancel_grace_s` is: SIGTERM must end the daemon
within `shutdown_grace_s` plus a few seconds."""

W = TypeVar("W")


@dataclass(slots=True)
class Running:
    """A task this node is executing."""

    task: TaskRecord
    spec: HandlerSpec
    live: LiveProgress
    cancel: CancelState = field(default_factory=CancelState)
    job: asyncio.Task[None] | None = None
    executing: bool = True
    force_timer: asyncio.TimerHandle | None = None


@dataclass(frozen=True)
class EngineStats:
    """The engine's own view, merged into `/statistics`."""

    node_id: str
    running_tasks: int
    max_concurrent: int
    uptime_s: float
    database_ok: bool
    running_by_type: dict[str, int]


class SyncEngine:
    """Claims and runs tasks on this node: its worker pool.

    `stores` are the daemon's stores (the engine writes through `stores.tasks` and hands all of
    them to the handlers); `clock` is the one the stores use; events go to `bus`.
    """

    def __init__(
        self,
        stores: Stores,
        registry: Registry,
        settings: Settings,
        *,
        clock: Callable[[], datetime] = utcnow,
        bus: EventBus | None = None,
    ) -> None:
        self.stores = stores
        self.store = stores.tasks
        self.registry = registry
        self.settings = settings
        self.clock = clock
        self.bus = bus if bus is not None else EventBus()
        self.node_id = settings.node_id
        self._attempts = AttemptRunner(
            RetryPolicy(settings.retry_backoff_s, settings.retry_backoff_max_s),
            clock,
            max_result_bytes=settings.max_parameters_kb * 1024,
        )
        self._running: dict[str, Running] = {}
        self._reserved = 0  # slots a claim in flight may fill (dispatcher or finish loop)
        self._wake = asyncio.Event()
        self._held_until = 0.0  # `hold_claims`: no claim before this (time.monotonic())
        # Ended attempts whose outcome is not written yet (the finish loop writes them in
        # groups); `_settled` is set whenever there are none.
        self._finish_queue: list[tuple[Running, Outcome]] = []
        self._unsettled = 0
        self._settled = asyncio.Event()
        self._settled.set()
        self._finish_wake = asyncio.Event()
        self._loops: list[asyncio.Task[None]] = []
        self._dispatcher: asyncio.Task[None] | None = None
        self._stopping = False
        self._given_back = 0  # tasks released to the queue while stopping (for the stop log)
        self._started_at = time.monotonic()
        self._db_failures = 0
        self.db_errors = 0  # database errors since start, for the metrics (never reset)
        self._rescue_not_before = 0.0
        self.database_ok = True
        self.idle = asyncio.Event()

    # ---- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Rescue leases that expired while nobody watched, then start the loops."""
        with contextlib.suppress(*DB_ERRORS):
            await self._rescue_once()
        self._started_at = time.monotonic()
        self._dispatcher = asyncio.create_task(self._dispatch_loop(), name="syncd-dispatch")
        self._loops = [
            asyncio.create_task(self._every(self.settings.lease_s / 3, self._heartbeat_once)),
            asyncio.create_task(self._every(self.settings.progress_flush_s, self._flush_once)),
            asyncio.create_task(self._every(self.settings.rescue_interval_s, self._rescue_once)),
            asyncio.create_task(self._finish_loop(), name="syncd-finish"),
        ]

    @property
    def running(self) -> bool:
        """True while the dispatcher is alive (for readiness and the watchdog)."""
        return self._dispatcher is not None and not self._dispatcher.done()

    async def stop(self) -> None:
        """Stop claiming, let running tasks finish within the grace, give the rest back."""
        self._stopping = True
        if self._dispatcher is not None:
            self._dispatcher.cancel()
            await asyncio.gather(self._dispatcher, return_exceptions=True)
        jobs = [r.job for r in self._running.values() if r.job is not None]
        if jobs:
            log.info(
                "waiting up to %g s for %d running task(s) to finish",
                self.settings.shutdown_grace_s,
                len(jobs),
                extra={"action": "drain"},
            )
            await asyncio.wait(jobs, timeout=self.settings.shutdown_grace_s)
        for run in list(self._running.values()):
            if run.job is not None and not run.job.done():
                run.cancel.shutdown = True
                run.cancel.reason = "node shutting down"
                run.job.cancel()
        leftovers = [r.job for r in self._running.values() if r.job is not None]
        if leftovers:
            await asyncio.wait(leftovers, timeout=STOP_WAIT_S)
        await self._give_back_stuck()
        # Outcomes of attempts that ended are written by the finish loop: let it write them.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(STOP_WAIT_S):
                await self._settled.wait()
        with contextlib.suppress(*DB_ERRORS):
            await self._flush_once()
        for loop in self._loops:
            loop.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        if jobs:
            finished = len(jobs) - self._given_back
            log.info(
                "%d task(s) finished, %d given back to the queue (another node, or this one"
                " restarted, runs them again)",
                finished,
                self._given_back,
                extra={"action": "release", "finished": finished, "released": self._given_back},
            )

    async def _give_back_stuck(self) -> None:
        """Release the tasks whose attempt did not end when cancelled (a handler that ignores
        its cancellation): the daemon stops without them, and whatever they write later is
        fenced off."""
        stuck = [r for r in self._running.values() if r.executing and r.job and not r.job.done()]
        if not stuck:
            return
        log.warning(
            "%d task(s) did not stop when cancelled; giving them back",
            len(stuck),
            extra={"action": "release_stuck"},
        )
        attempts = {r.task.id: r.task.attempt for r in stuck}
        try:
            async with asyncio.timeout(STOP_WAIT_S):
                released = await self.store.release(self.node_id, attempts)
        except DB_ERRORS as exc:  # their leases expire and they are rescued
            log.error("could not give stuck tasks back: %s", exc, extra={"action": "release"})
            return
        for run in stuck:
            if run.task.id in released:
                self._given_back += 1
                self._emit(EventKind.RELEASED, run.task)

    # ---- requests from the service ----------------------------------------------------------

    def wake(self) -> None:
        """Something was enqueued: claim now instead of at the next poll."""
        self._wake.set()

    def hold_claims(self, seconds: float) -> None:
        """Claim no new task for at most `seconds` (running ones go on, and their finishes
        are written): the scheduler of this node is enqueueing a burst of fires."""
        self._held_until = time.monotonic() + seconds

    def release_claims(self) -> None:
        """End `hold_claims`: claim now."""
        self._held_until = 0.0
        self.wake()

    def _claims_held(self) -> bool:
        return time.monotonic() < self._held_until

    def request_cancel(self, task_id: str, reason: str = "cancel requested") -> bool:
        """Ask a locally running task to stop; forced after `cancel_grace_s`."""
        run = self._running.get(task_id)
        if run is None or run.cancel.requested:
            return run is not None
        run.cancel.requested = True
        run.cancel.reason = reason
        loop = asyncio.get_running_loop()
        run.force_timer = loop.call_later(self.settings.cancel_grace_s, self._force_cancel, run)
        log.info("cancel requested", extra=self._extra(run.task, action="cancel"))
        return True

    def live(self, task_id: str) -> LiveProgress | None:
        """In-memory progress of a task running here."""
        run = self._running.get(task_id)
        return run.live if run is not None else None

    def live_progress(self) -> list[LiveProgress]:
        """Live progress of every attempt executing here (read by the dashboard's feed; the
        `version` of each changes whenever its handler reports)."""
        return [r.live for r in self._running.values() if r.executing]

    def stats(self) -> EngineStats:
        """This node's counters."""
        executing = [r for r in self._running.values() if r.executing]
        return EngineStats(
            node_id=self.node_id,
            running_tasks=len(executing),
            max_concurrent=self.settings.concurrency,
            uptime_s=round(time.monotonic() - self._started_at, 3),
            database_ok=self.database_ok,
            running_by_type=dict(Counter(r.task.task_type for r in executing)),
        )

    # ---- dispatching ------------------------------------------------------------------------

    async def _dispatch_loop(self) -> None:
        while not self._stopping:
            # One turn of the event loop first: attempts ending in this same tick free their
            # slots too, so one claim takes them all instead of one claim per slot.
            await asyncio.sleep(0)
            self._wake.clear()
            held = self._claims_held()
            free = 0 if held else self._free_slots()
            claimed = 0
            if free > 0:
                claimed = await self._guarded(self._claim_and_start(free), default=0)
            if free > 0 and claimed >= free:
                continue
            if claimed == 0 and not self._running and not held:
                self.idle.set()
            delay = self._poll_delay()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()

    def _poll_delay(self) -> float:
        if not self.database_ok:
            return _backoff(self._db_failures, initial=0.5, maximum=5)
        return self.settings.poll_interval_s

    async def _claim_and_start(self, free: int) -> Any:
        """Claim up to `free` tasks and start them; how many were claimed (or SKIPPED)."""
        types = self._claimable_types()
        if not types:
            return SKIPPED
        self._reserved += free
        try:
            tasks = await self.store.claim(self.node_id, free, self.settings.lease_s, types)
        finally:
            self._reserved -= free
        await self._start_claimed(tasks)
        return len(tasks)

    async def _start_claimed(self, tasks: Sequence[TaskRecord]) -> None:
        """Start claimed tasks; those over their type's limit, or claimed while the node
        began stopping, are given back untouched."""
        keep: list[TaskRecord] = []
        excess: list[TaskRecord] = list(tasks)
        if not self._stopping:
            if tasks:
                self.idle.clear()
            keep, excess = self._within_type_limits(tasks)
        if excess:
            await self.store.unclaim(self.node_id, {t.id: t.attempt for t in excess})
        for task in keep:
            self._start(task)

    def _free_slots(self) -> int:
        return self.settings.concurrency - self._executing() - self._reserved

    def _claimable_types(self) -> list[str]:
        counts = Counter(r.task.task_type for r in self._running.values() if r.executing)
        return [
            spec.task_type
            for spec in self.registry
            if not spec.external
            and (spec.concurrency is None or counts[spec.task_type] < spec.concurrency)
        ]

    def _within_type_limits(
        self, tasks: Sequence[TaskRecord]
    ) -> tuple[list[TaskRecord], list[TaskRecord]]:
        counts = Counter(r.task.task_type for r in self._running.values() if r.executing)
        keep: list[TaskRecord] = []
        excess: list[TaskRecord] = []
        for task in tasks:
            limit = self.registry.get(task.task_type).concurrency
            if limit is not None and counts[task.task_type] >= limit:
                excess.append(task)
                continue
            counts[task.task_type] += 1
            keep.append(task)
        return keep, excess

    def _executing(self) -> int:
        return sum(1 for r in self._running.values() if r.executing)

    def _start(self, task: TaskRecord) -> None:
        spec = self.registry.get(task.task_type)
        run = Running(task=task, spec=spec, live=LiveProgress(task.id, task.attempt))
        self._running[task.id] = run
        run.job = asyncio.create_task(self._execute(run), name=f"syncd-task-{task.reference}")
        if task.cancel_requested:
            self.request_cancel(task.id, "cancel requested before start")
        self._emit(EventKind.STARTED, task)

    async def _execute(self, run: Running) -> None:
        ctx = self._context(run)
        outcome: Outcome | None = None
        queued = False
        try:
            if log.isEnabledFor(logging.DEBUG):
                ctx.log.debug("task started", extra={"action": "start"})
            outcome = await self._attempts.run(run.spec, ctx)
        finally:
            run.executing = False
            if run.force_timer is not None:
                run.force_timer.cancel()
            if outcome is not None:
                # Written with the outcomes of other attempts by the finish loop, which also
                # logs, publishes and frees the entry in `_running`.
                self._finish_queue.append((run, outcome))
                self._unsettled += 1
                self._settled.clear()
                self._finish_wake.set()
                queued = True
            else:
                self._wake.set()
        if queued:
            return  # the finish loop refills the slot in the same transaction
        try:
            await self._settle_unfinished(run)
        finally:
            self._running.pop(run.task.id, None)
            self._wake.set()

    async def _settle_unfinished(self, run: Running) -> None:
        """An attempt that ended without an outcome: given back (shutdown) or fenced off."""
        task = run.task
        if run.cancel.shutdown:
            released = await self._until_written(lambda: self._release(run))
            if released:
                self._given_back += 1
                self._emit(EventKind.RELEASED, task)
            return
        log.warning("lease lost; result not written", extra=self._extra(task, action="fenced"))
        self._emit(EventKind.LOST, task)

    def _settled_one(self, run: Running, outcome: Outcome, written: bool) -> None:
        """Log and publish an outcome the finish loop has written (or found fenced off)."""
        task = run.task
        level = logging.INFO if outcome.outcome == "completed" else logging.WARNING
        if log.isEnabledFor(level):  # the extra dict costs more than the check, per task
            log.log(
                level,
                "task %s",
                outcome.outcome,
                extra=self._extra(task, action=outcome.outcome, error=outcome.error),
            )
        if written:
            self._emit(EventKind.FINISHED, task, outcome)
        else:
            log.warning(
                "lease lost before the result was written; another node owns the task now",
                extra=self._extra(task, action="fenced"),
            )
            self._emit(EventKind.LOST, task, outcome)

    async def _release(self, run: Running) -> bool:
        released = await self.store.release(self.node_id, {run.task.id: run.task.attempt})
        return run.task.id in released

    async def _until_written(self, write: Callable[[], Awaitable[W]]) -> W:
        """Retry a write across database outages until it lands (fencing decides the rest)."""
        attempt = 0
        while True:
            try:
                return await write()
            except DB_ERRORS as exc:
                reraise_if_cancelling()
                attempt += 1
                self._db_down(exc)
                await asyncio.sleep(_backoff(attempt, initial=0.2, maximum=10))

    def _context(self, run: Running) -> TaskContext:
        task = run.task

        async def sink(errors: Sequence[RecordError]) -> bool:
            return await self.store.record_errors(self.node_id, task.id, task.attempt, errors)

        return TaskContext(
            task=task,
            params=run.spec.validate(task.parameters),
            stores=self.stores,
            clock=self.clock,
            settings=self.settings,
            live=run.live,
            cancel=run.cancel,
            error_sink=sink,
            log=logging.LoggerAdapter(log, self._extra(task)),
        )

    def _force_cancel(self, run: Running) -> None:
        if run.job is not None and not run.job.done() and run.executing:
            log.warning(
                "cancel grace expired; forcing", extra=self._extra(run.task, action="force")
            )
            grace = self.settings.cancel_grace_s
            run.cancel.reason = f"{run.cancel.reason}; forced after {grace:g} s grace"
            run.job.cancel()

    # ---- group commit of finished attempts --------------------------------------------------

    async def _finish_loop(self) -> None:
        """Write queued outcomes in groups: everything that ended since the last write goes
        in one transaction, retried across database outages until it lands (fencing decides
        which outcomes still belong to this node). The same transaction claims tasks for the
        slots free by then (the ones these attempts left, mostly), so a busy pool needs one
        transaction per round instead of a finish and a claim."""
        while True:
            await self._finish_wake.wait()
            await asyncio.sleep(0)  # group commit: outcomes of this same tick join the batch
            self._finish_wake.clear()
            batch, self._finish_queue = self._finish_queue, []
            if not batch:
                continue
            outcomes = [o for _, o in batch]
            free = 0 if self._stopping or self._claims_held() else self._free_slots()
            types = self._claimable_types() if free > 0 else []
            if not types:
                free = 0
            self._reserved += free
            try:
                written, claimed = await self._until_written(
                    functools.partial(
                        self.store.finish_and_claim,
                        self.node_id,
                        outcomes,
                        free,
                        self.settings.lease_s,
                        types,
                    )
                )
            finally:
                self._reserved -= free
            self._db_up()
            for run, outcome in batch:
                self._running.pop(run.task.id, None)
                self._settled_one(run, outcome, run.task.id in written)
            self._unsettled -= len(batch)
            if self._unsettled == 0:
                self._settled.set()
            await self._guarded(self._start_claimed(claimed), default=None)
            self._wake.set()

    # ---- periodic loops ---------------------------------------------------------------------

    async def _every(self, interval: float, action: Callable[[], Awaitable[Any]]) -> None:
        while True:
            await asyncio.sleep(interval)
            await self._guarded(action(), default=None)

    async def _guarded(self, work: Awaitable[Any], default: Any) -> Any:
        try:
            result = await work
        except DB_ERRORS as exc:
            reraise_if_cancelling()
            self._db_down(exc)
            return default
        except Exception:  # a bug must not stop the loop that called us
            log.exception("engine loop step failed", extra={"action": "loop_error"})
            return default
        if result is SKIPPED:
            return default
        self._db_up()
        return result

    async def _heartbeat_once(self) -> Any:
        owned = {i: r.task.attempt for i, r in self._running.items()}
        if not owned:
            return SKIPPED
        reply = await self.store.heartbeat(self.node_id, owned, self.settings.lease_s)
        for task_id in owned.keys() - reply.held:
            self._lease_lost(task_id)
        for task_id in reply.cancel_requested:
            self.request_cancel(task_id, "cancel requested")

    def _lease_lost(self, task_id: str) -> None:
        run = self._running.get(task_id)
        if run is None or run.cancel.lease_lost or not run.executing:
            # An attempt that already ended is only waiting for its outcome to be written
            # (often the write has just landed and the row is no longer `running`): the
            # fenced write decides, there is nothing left to stop.
            return
        run.cancel.lease_lost = True
        run.cancel.reason = "lease lost"
        log.warning("lease lost; stopping the attempt", extra=self._extra(run.task, action="fence"))
        if run.job is not None and run.executing:
            run.job.cancel()

    async def _flush_once(self) -> Any:
        dirty = [r.live for r in self._running.values() if r.live.dirty and r.executing]
        if not dirty:
            return SKIPPED
        for live in dirty:
            live.dirty = False
        try:
            await self.store.save_progress(self.node_id, [live.snapshot() for live in dirty])
        except BaseException:
            for live in dirty:
                live.dirty = True
            raise
        saved = tuple(live.task_id for live in dirty)
        self.bus.publish(ProgressEvent(EventKind.PROGRESS_SAVED, saved))

    async def _rescue_once(self) -> Any:
        if time.monotonic() < self._rescue_not_before:
            return SKIPPED  # just reconnected: let live nodes renew their leases first
        for task in await self.store.rescue():
            log.warning(
                "rescued a task whose lease expired",
                extra=self._extra(task, action="rescue", lease_owner=task.lease_owner),
            )
            self._emit(EventKind.RESCUED, task)
        self.wake()

    # ---- helpers ----------------------------------------------------------------------------

    def _db_down(self, exc: BaseException) -> None:
        self._db_failures += 1
        self.db_errors += 1
        if self.database_ok:
            log.error("database unavailable: %s", exc, extra={"action": "db_down"})
            self.database_ok = False
            detail = f"{type(exc).__name__}: {exc}"[:500]
            self.bus.publish(NodeEvent(EventKind.DATABASE_DOWN, self.node_id, detail))

    def _db_up(self) -> None:
        if not self.database_ok:
            log.info("database reachable again", extra={"action": "db_up"})
            # Every node's heartbeats failed during the outage, so leases look expired now.
            # Wait one lease period before rescuing: nodes still running their tasks renew
            # them meanwhile (a heartbeat renews any lease its node still owns), and only
            # the leases of nodes that really died are taken over.
            self._rescue_not_before = time.monotonic() + self.settings.lease_s
            self._wake.set()  # the dispatcher may be in a long backoff: claim now
            self.database_ok = True
            self.bus.publish(NodeEvent(EventKind.DATABASE_UP, self.node_id))
        self._db_failures = 0

    def _emit(self, kind: EventKind, task: TaskRecord, outcome: Outcome | None = None) -> None:
        if self.bus.wants(kind):  # two per task: no event built when nobody listens
            self.bus.publish(TaskEvent(kind, task, outcome))

    def _extra(self, task: TaskRecord, **more: Any) -> dict[str, Any]:
        return {
            "task_id": task.id,
            "task_type": task.task_type,
            "node_id": self.node_id,
            "attempt": task.attempt,
            **more,
        }


def reraise_if_cancelling() -> None:
    """Raise `CancelledError` again when the current task is being cancelled.

    Call it where a database error is caught and the loop carries on: a cancellation that
    arrives during a database call can come back as that call's own error (SQLAlchemy
    invalidating the connection, a driver timeout), and a loop that swallowed it would keep
    running in a cancelling state that no later await interrupts, so whoever waits for it to
    stop waits forever (seen at shutdown after a MariaDB outage)."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _backoff(attempt: int, initial: float, maximum: float) -> float:
    """tenacity's exponential wait with jitter for the n-th consecutive failure."""
    return RetryPolicy(initial, maximum).delay(attempt)
