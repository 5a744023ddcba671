"""The scheduler: fires every schedule that is due, on whichever daemon claims it first.

Every daemon runs one loop. Each turn it claims due schedules in batches (`ScheduleStore.
claim_fires`: the fire's task is inserted and the schedule's next fire moved on in one
transaction, so each fire enqueues exactly once across daemons), enqueues the fires waiting
behind a finished task (overlap `queue_one`), then waits until the earliest next fire of any
schedule or `SYNCD_SCHEDULE_POLL_S`, whichever comes first. Each claim reads the schedules'
state from the database and their definitions when `updated_at` says they changed, so a
schedule created, changed, paused or deleted through any daemon takes effect on all of them
within that poll. Fire times come from `schedule.triggers`, what a due fire becomes
(catch-up, overlap) from `schedule.firing`.

This module also checks and stores definitions (`save`, `delete`, ...): schedules declared in
the settings file and the three built-in jobs are written at start-up (`declare`), and only
schedules made over the API may be changed over it.

Each fire is published on the bus (`schedule_fired`, with its outcome and lag).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import math
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from config.settings import Role, ScheduleEntry, Settings
from schedule.clock import Clock, utcnow
from schedule.definition import (
    CatchUp,
    FireOutcome,
    Origin,
    Overlap,
    ScheduleRecord,
    ScheduleSpec,
    trigger_of,
)
from schedule.events import EventKind, FireEvent
from schedule.exceptions import FieldProblem, InvalidInput, InvalidState, ScheduleError
from schedule.firing import (
    MAX_CATCH_UP,
    Context,
    Fire,
    FirePlan,
    plan_backfill,
    plan_due,
    plan_queued,
    task_request,
)
from schedule.records import Page
from schedule.schedules import Planner, ScheduleStore
from schedule.service import ScheduleService
from schedule.task import NewTask, TaskRecord
from schedule.triggers import Trigger, check_bounds, check_cron, check_interval, check_zone

log = logging.getLogger(__name__)

#: Schedules claimed per transaction.
BATCH = 1000
#: At most this long a turn that claims fires holds the pool's claims (`_pool_held`).
HOLD_S = 2.0
#: Checked task templates kept (one per schedule version; cleared when full).
TEMPLATES = 50_000
#: Fire times shown by `GET /api/schedules/{id}`.
UPCOMING = 5


@dataclass(frozen=True)
class ScheduleView:
    """A schedule as the API shows it: its record, its next fires, its last or recent runs."""

    record: ScheduleRecord
    timezone: str
    next_fires: list[datetime]
    last_run: TaskRecord | None
    runs: list[TaskRecord] | None = None
    managed_by: str | None = None  # the file (or "built-in") when not changeable over the API
    description: str = ""  # the trigger in words


def builtin_specs(settings: Settings) -> list[ScheduleSpec]:
    """The three built-in jobs, with their crons from the settings."""
    return [
        ScheduleSpec(
            id=job,
            task_type=job,
            trigger=Trigger(cron=cron),
            name=name,
            timezone=settings.timezone,
            origin=Origin.BUILTIN,
        )
        for job, cron, name in (
            ("partnumber_book_create", settings.snapshot_cron, "Partnumber book snapshot"),
            ("partnumber_book_retention", settings.retention_cron, "Partnumber book retention"),
            ("task_retention", settings.task_retention_cron, "Task retention"),
        )
    ]


def file_spec(entry: ScheduleEntry) -> ScheduleSpec:
    """A `[[schedules]]` table of the settings file as a spec."""
    return ScheduleSpec(
        id=entry.id,
        task_type=entry.task_type,
        trigger=trigger_from(entry.trigger),
        name=entry.name,
        parameters=dict(entry.parameters),
        priority=entry.priority,
        data_source_id=entry.data_source_id,
        interface_id=entry.interface_id,
        max_attempts=entry.max_attempts,
        timeout_s=entry.timeout_s,
        timezone=entry.timezone,
        start_at=entry.start_at,
        end_at=entry.end_at,
        jitter_s=entry.jitter_s,
        overlap=Overlap(entry.overlap),
        catch_up=CatchUp(entry.catch_up),
        catch_up_window_s=entry.catch_up_window_s,
        paused=entry.paused,
        pause_note=entry.pause_note,
        origin=Origin.FILE,
    )


def _file_spec(entry: ScheduleEntry) -> ScheduleSpec:
    try:
        return file_spec(entry)
    except ScheduleError as exc:
        raise ScheduleError(f"SYNCD_SCHEDULES: schedule {entry.id!r}: {exc}") from None


def trigger_from(spec: dict[str, object], field: str = "trigger") -> Trigger:
    """`{"cron"}`, `{"every_s"}` or `{"at"}` as a checked `Trigger`."""
    if len(spec) != 1:
        raise InvalidInput(
            [FieldProblem(field, "exactly one of cron, every_s, at (got " + ", ".join(spec) + ")")]
        )
    ((kind, value),) = spec.items()
    if kind == "cron" and isinstance(value, str):
        return Trigger(cron=check_cron(value, f"{field}.cron"))
    if kind == "every_s" and isinstance(value, int | float) and not isinstance(value, bool):
        return Trigger(every_s=check_interval(float(value), f"{field}.every_s"))
    if kind == "at" and isinstance(value, str | datetime):
        try:
            at = value if isinstance(value, datetime) else datetime.fromisoformat(value)
        except ValueError as exc:
            raise InvalidInput([FieldProblem(f"{field}.at", str(exc))]) from None
        if at.tzinfo is None:
            raise InvalidInput([FieldProblem(f"{field}.at", "needs a UTC offset (e.g. Z)")])
        return Trigger(at=at.astimezone(UTC))
    raise InvalidInput(
        [
            FieldProblem(
                f"{field}.{kind}", "expected cron (text), every_s (seconds) or at (ISO time)"
            )
        ]
    )


class PeriodicScheduler:
    """Fires the schedules of the database from this daemon (see the module docstring)."""

    def __init__(
        self,
        service: ScheduleService,
        store: ScheduleStore,
        settings: Settings,
        clock: Clock = utcnow,
        declared: Sequence[ScheduleSpec] | None = None,
    ) -> None:
        self.service = service
        self.store = store
        self.settings = settings
        self.clock = clock
        self.declared = list(
            declared
            if declared is not None
            else [*builtin_specs(settings), *(_file_spec(e) for e in settings.schedules)]
        )
        self.poll_s = settings.schedule_poll_s
        # Each schedule's checked task template, with the `updated_at` it was made for.
        self._templates: dict[str, tuple[datetime, NewTask]] = {}
        #: The next fire the last turn read (`until_next`).
        self._next_due: datetime | None = None
        #: When the last hold of the pool's claims ended (`_pool_held`; time.monotonic()).
        self._hold_ended = -math.inf
        self.loop_cpu_s = 0.0  # CPU time of the loop's thread during `tick`
        self._wake = asyncio.Event()
        self._stopping = False
        self._loop: asyncio.Task[None] | None = None

    # ---- lifecycle ----------------------------------------------------------------------------

    async def start(self, *, loop: bool = True) -> None:
        """Write the declared schedules, then start firing (`loop=False`: only `tick` fires,
        for tests that drive the clock by hand)."""
        await self.load_zones()
        now = self.clock()
        current = {r.id: r.created_at for r in await self.store.all()}
        records = [await self._declared(s, now, current.get(s.id)) for s in self.declared]
        await self.store.declare(records, (Origin.FILE, Origin.BUILTIN))
        if loop:
            self._loop = asyncio.create_task(self._run(), name="scheduler")
        log.info(
            "scheduler started",
            extra={"action": "scheduler", "declared": [s.id for s in self.declared]},
        )

    async def load_zones(self) -> None:
        """Load the zones the schedules use, off the event loop (each is read from a file
        once per process; the claims then find them loaded)."""
        names = {r.timezone for r in await self.store.all() if r.timezone}
        names.add(self.settings.timezone)
        for name in names:
            with contextlib.suppress(ScheduleError):
                await asyncio.to_thread(check_zone, name)

    async def stop(self) -> None:
        """Stop firing (enqueued tasks are the engine's business)."""
        if self._loop is not None:
            # The flag as well as the cancel: on Python 3.11 a cancel that lands as the wait's
            # timeout expires can be swallowed by `asyncio.timeout`; the loop then sees the flag.
            self._stopping = True
            self._wake.set()
            self._loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop
            self._loop = None

    @property
    def cpu_s(self) -> float:
        """CPU time of the claims: the event loop's thread during each turn, and the store's
        own thread (SQLite's writer) while it claimed (the metrics read it)."""
        return self.loop_cpu_s + self.store.cpu_s

    def wake(self) -> None:
        """A definition changed here: look again now."""
        self._wake.set()

    async def _run(self) -> None:
        while not self._stopping:
            self._wake.clear()  # before the turn: a change made during it is looked at next
            try:
                began = time.thread_time()
                await self.tick()
                self.loop_cpu_s += time.thread_time() - began
                wait = self.until_next()
            except Exception:
                log.exception("scheduler turn failed", extra={"action": "scheduler"})
                wait = self.poll_s
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()

    def until_next(self) -> float:
        """How long to sleep: until the next fire the last turn read, at most `poll_s` (the
        changes made on other daemons are seen by the next poll)."""
        due = self._next_due
        if due is None:
            return self.poll_s
        return max(0.0, min(self.poll_s, (due - self.clock()).total_seconds()))

    # ---- firing -------------------------------------------------------------------------------

    async def tick(self) -> list[FirePlan]:
        """Fire everything due now (in batches), then the queued fires whose previous task
        ended. Returns the plans carried out."""
        done: list[FirePlan] = []
        # A read: no write transaction while nothing is due (an idle turn is this read alone).
        due, queued = await self.store.due_state()
        if due is not None and due <= self.clock():
            with _collector_paused(), self._pool_held():
                await self._claim_all_due(done)
                due, queued = await self.store.due_state()  # the fires moved the next one on
        if queued:
            await self._claim_queued(done)
        self._next_due = due
        return done

    @contextlib.contextmanager
    def _pool_held(self) -> Iterator[None]:
        """While the fires due now are claimed, this daemon's pool takes no new task (for at
        most `HOLD_S`; its running tasks go on and finish). Its claims would compete with the
        fires' INSERTs for the database: on three daemons sharing MariaDB that made each
        claim of a thousand fires take twice as long. A turn that follows the end of the last
        hold by less than `HOLD_S` does not hold: under fires due all the time the pool still
        claims at least half of it."""
        pool = self.service.pool
        if pool is None or time.monotonic() - self._hold_ended < HOLD_S:
            yield
            return
        pool.hold_claims(HOLD_S)
        try:
            yield
        finally:
            pool.release_claims()
            self._hold_ended = time.monotonic()

    async def _claim_all_due(self, done: list[FirePlan]) -> None:
        """The fires due now, by `concurrent_claims` claims at once (`ScheduleStore`); when
        one fails the others stop too (their transactions roll back) and the turn fails."""
        claims = [
            asyncio.ensure_future(self._claim_due(done))
            for _ in range(self.store.concurrent_claims)
        ]
        try:
            await asyncio.gather(*claims)
        finally:
            for claim in claims:
                claim.cancel()

    async def _claim_due(self, done: list[FirePlan]) -> None:
        """Claim the fires due now, a batch at a time, until none is left."""
        while True:
            now = self.clock()
            ctx = self._context(now)
            batch = await self.store.claim_fires(now, BATCH, _planner(plan_due, ctx))
            await self._carry_out(batch)
            done.extend(p for p, _ in batch)
            if len(batch) < BATCH:
                break

    async def _claim_queued(self, done: list[FirePlan]) -> None:
        ctx = self._context(self.clock())
        batch = await self.store.claim_queued(BATCH, _planner(plan_queued, ctx))
        await self._carry_out(batch)
        done.extend(p for p, _ in batch)

    def _context(self, now: datetime) -> Context:
        return Context(now, self.settings.timezone, self._prepare, frozenset())

    def _prepare(self, schedule: ScheduleRecord, fire: datetime) -> NewTask:
        """The task of one fire: the template checked by the service once per version of the
        schedule (kept by id and `updated_at`), with the fire's time and jitter."""
        known = self._templates.get(schedule.id)
        if known is not None and known[0] == schedule.updated_at:
            template = known[1]
        else:
            if len(self._templates) >= TEMPLATES:
                self._templates.clear()
            template = self.service.prepare(task_request(schedule, fire))
            self._templates[schedule.id] = (schedule.updated_at, template)
        jitter = schedule.jitter_s or 0.0
        run_after = fire + timedelta(seconds=random.uniform(0, jitter)) if jitter else None
        return template._replace(scheduled_for=fire, run_after=run_after)

    async def _carry_out(self, batch: Sequence[tuple[FirePlan, list[TaskRecord]]]) -> None:
        """After the claim committed: tell the pool and the bus, cancel what a
        `cancel_previous` fire replaces, log failures."""
        tasks = [t for _, records in batch for t in records]
        self.service.announce(tasks)
        by_fire = {(t.schedule_id, t.scheduled_for): t for t in tasks}
        for plan, _ in batch:
            for task_id in plan.cancel:
                with contextlib.suppress(ScheduleError):
                    await self.service.cancel(task_id)
            for fire in plan.fires:
                task = by_fire.get((plan.schedule.id, fire.scheduled_for))
                lag = (
                    None if task is None else (task.created_at - fire.scheduled_for).total_seconds()
                )
                self.service.bus.publish(
                    FireEvent(EventKind.SCHEDULE_FIRED, plan.schedule.id, fire.outcome.value, lag)
                )
                if fire.outcome is FireOutcome.FAILED:
                    log.error(
                        "schedule fire failed",
                        extra={
                            "action": "fire",
                            "schedule_id": plan.schedule.id,
                            "scheduled_for": fire.scheduled_for.isoformat(),
                            "error": fire.error,
                        },
                    )

    # ---- definitions --------------------------------------------------------------------------

    async def _record(
        self, spec: ScheduleSpec, now: datetime, created: datetime | None = None
    ) -> ScheduleRecord:
        """Check a spec (422 naming the field) and make its record, its first fire computed;
        `created` is when an existing schedule was first saved (an interval's grid counts
        from it when it has no `start_at`, across edits and restarts)."""
        zone = None
        if spec.timezone:
            zone = await asyncio.to_thread(check_zone, spec.timezone, "timezone")
        check_bounds(spec.start_at, spec.end_at)
        if spec.jitter_s < 0:
            raise InvalidInput([FieldProblem("jitter_s", "must not be negative")])
        record = ScheduleRecord(
            id=spec.id,
            task_type=spec.task_type,
            paused=spec.paused,
            last_fire_at=None,
            last_run_at=None,
            last_task_id=None,
            created_at=created or now,
            updated_at=now,
            name=spec.name,
            origin=spec.origin.value,
            trigger=spec.trigger.spec(),
            timezone=zone,
            parameters=dict(spec.parameters),
            priority=spec.priority,
            data_source_id=spec.data_source_id,
            interface_id=spec.interface_id,
            max_attempts=spec.max_attempts,
            timeout_s=spec.timeout_s,
            start_at=spec.start_at.astimezone(UTC) if spec.start_at else None,
            end_at=spec.end_at.astimezone(UTC) if spec.end_at else None,
            jitter_s=spec.jitter_s,
            overlap=spec.overlap.value,
            catch_up=spec.catch_up.value,
            catch_up_window_s=spec.catch_up_window_s,
            pause_note=spec.pause_note if spec.paused else None,
            next_fire_at=None,
            queued_fire_at=None,
            last_error=None,
            last_error_at=None,
        )
        self.service.prepare(task_request(record, None, now))  # the template's own checks
        if spec.data_source_id and not await self.store.source_exists(spec.data_source_id):
            raise InvalidInput(
                [FieldProblem("data_source_id", f"no data source {spec.data_source_id!r}")]
            )
        first = record.timing(self.settings.timezone).next_after(now)
        return _with_next(record, first)

    async def _declared(
        self, spec: ScheduleSpec, now: datetime, created: datetime | None
    ) -> ScheduleRecord:
        """A declared schedule's record; a bad one stops start-up naming it and its field."""
        try:
            return await self._record(spec, now, created)
        except ScheduleError as exc:
            where = "SYNCD_SCHEDULES" if spec.origin is Origin.FILE else "built-in schedule"
            raise ScheduleError(f"{where}: schedule {spec.id!r}: {exc}") from None

    async def save(
        self, spec: ScheduleSpec, *, create: bool, role: Role | None = None
    ) -> ScheduleView:
        """Create or replace a schedule made over the API (a declared one: `InvalidState`)."""
        created = None if create else (await self._changeable(spec.id)).created_at
        now = self.clock()
        record = await self._record(spec, now, created)
        if role is not None:
            self.service.prepare(task_request(record, None, now), role)
        saved = await self.store.save(record, create=create)
        self.wake()
        return await self.view(saved.id)

    async def delete(self, schedule_id: str) -> None:
        """Remove a schedule made over the API (a declared one: `InvalidState`)."""
        await self._changeable(schedule_id)
        await self.store.delete(schedule_id)
        self._templates.pop(schedule_id, None)

    async def _changeable(self, schedule_id: str) -> ScheduleRecord:
        record = await self.store.require(schedule_id)
        managed = self.managed_by(record)
        if managed is not None:
            raise InvalidState(
                f"schedule {schedule_id!r} is managed by {managed}; change it there",
                {"id": schedule_id, "managed_by": managed},
            )
        return record

    def managed_by(self, record: ScheduleRecord) -> str | None:
        """Where a declared schedule is kept ("the settings file <path>", "built-in"), or
        None for one made over the API."""
        if record.origin == Origin.FILE.value:
            return f"the settings file {self.settings.config}"
        if record.origin in (Origin.BUILTIN.value, None):
            return "built-in (its cron is a setting)"
        return None

    # ---- actions ------------------------------------------------------------------------------

    async def run_now(self, schedule_id: str, *, role: Role | None = None) -> TaskRecord:
        """Enqueue the schedule's task now, by hand (its fires are unchanged)."""
        record = await self.store.require(schedule_id)
        now = self.clock()
        task, _ = await self.service.create(task_request(record, None, now), role=role)
        await self.store.record_task(schedule_id, task.id)
        return task

    async def pause(self, schedule_id: str, note: str | None = None) -> ScheduleView:
        """Stop firing the schedule on every daemon, across restarts, with a note why."""
        await self.store.set_paused(schedule_id, True, note, None)
        return await self.view(schedule_id)

    async def resume(self, schedule_id: str) -> ScheduleView:
        """Fire again from the next fire time; the fires of the pause are not caught up."""
        record = await self.store.require(schedule_id)
        nxt = record.timing(self.settings.timezone).next_after(self.clock())
        await self.store.set_paused(schedule_id, False, None, nxt)
        self.wake()
        return await self.view(schedule_id)

    async def backfill(
        self, schedule_id: str, start: datetime, end: datetime, *, role: Role | None = None
    ) -> list[TaskRecord]:
        """Enqueue the fires of `[start, end]` (in the past) that have no task yet, each
        under the schedule's overlap policy."""
        now = self.clock()
        if end <= start:
            raise InvalidInput([FieldProblem("end", "must be after start")])
        if end > now:
            raise InvalidInput([FieldProblem("end", "must not be in the future")])
        record = await self.store.require(schedule_id)
        timing = record.timing(self.settings.timezone)
        fires = list(timing.fires_between(start - timedelta(microseconds=1), end))
        if len(fires) > MAX_CATCH_UP:
            raise InvalidInput(
                [
                    FieldProblem(
                        "start", f"the range holds {len(fires)} fires; at most {MAX_CATCH_UP}"
                    )
                ]
            )
        if role is not None:
            self.service.prepare(task_request(record, None, now), role)
        fired = await self.store.fired_at(schedule_id, fires)
        fresh = [f for f in fires if f not in fired]
        ctx = self._context(now)
        done = await self.store.backfill(
            schedule_id, lambda s, u, src: plan_backfill(s, fresh, u, _with(ctx, src))
        )
        if done is None:
            return []
        await self._carry_out([done])
        return done[1]

    # ---- views --------------------------------------------------------------------------------

    async def views(self, page: Page) -> tuple[list[ScheduleView], int]:
        """A page of the schedules (by id) with their next fire and last run, and how many
        schedules there are."""
        records, total = await self.store.page(page)
        last = await self.store.last_runs([r.id for r in records])
        words = await asyncio.to_thread(_describe, records)
        views = [self._view(r, 1, last.get(r.id)) for r in records]
        return [replace(v, description=words[v.record.id]) for v in views], total

    async def view(self, schedule_id: str, *, runs: bool = False) -> ScheduleView:
        """One schedule with its next `UPCOMING` fires (and its last 10 runs: `runs`)."""
        record = await self.store.require(schedule_id)
        recent = await self.store.runs(schedule_id, 10)
        view = self._view(record, UPCOMING, recent[0] if recent else None)
        words = await asyncio.to_thread(_describe, [record])
        return replace(view, runs=recent if runs else None, description=words[record.id])

    def _view(self, record: ScheduleRecord, count: int, last: TaskRecord | None) -> ScheduleView:
        zone = record.timezone or self.settings.timezone
        nxt: list[datetime] = []
        if not record.paused and record.next_fire_at is not None:
            nxt = [record.next_fire_at]
            if count > 1:
                nxt.extend(record.timing(zone).upcoming(record.next_fire_at, count - 1))
        return ScheduleView(record, zone, nxt, last, None, self.managed_by(record))


def _planner(
    rule: Callable[[ScheduleRecord, Sequence[tuple[str, str]], Context], FirePlan | None],
    ctx: Context,
) -> Planner:
    """`rule` as the store's planner, with the data sources the claim found. A schedule the
    rules cannot handle at all (its stored zone is gone from this machine, say) is stopped
    with the reason as its last error, so that it cannot hold up every other schedule's
    claim."""

    claim = ctx  # with the data sources of the claim (the same for all its schedules)

    def plan(
        schedule: ScheduleRecord, unfinished: Sequence[tuple[str, str]], sources: frozenset[str]
    ) -> FirePlan | None:
        nonlocal claim
        if claim.sources is not sources:
            claim = _with(ctx, sources)
        try:
            return rule(schedule, unfinished, claim)
        except Exception as exc:
            log.exception(
                "schedule cannot fire", extra={"action": "fire", "schedule_id": schedule.id}
            )
            fire = schedule.next_fire_at or ctx.now
            problem = f"cannot fire, stopped: {exc}"
            return FirePlan(
                schedule,
                [Fire(fire, FireOutcome.FAILED, error=problem)],
                next_fire_at=None,
                last_fire_at=schedule.last_fire_at,
                queued_fire_at=None,
                error=problem,
            )

    return plan


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector paused while a turn claims fires (other coroutines
    run meanwhile; a turn takes a few tenths of a second per thousand fires due).

    A claim of a thousand fires makes tens of thousands of objects that live until its
    batch (or the turn, for the plans `tick` returns) is done, then go by reference counting
    alone. With the collector on they are traversed by the young collections they outlive
    and, counted as survivors, set off full collections of the whole heap: a fifth to a
    quarter of the scheduler's CPU in a burst. Paused, they are never traversed; what the
    turn leaves behind is collected as usual afterwards."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _describe(records: Sequence[ScheduleRecord]) -> dict[str, str]:
    """Each schedule's trigger in words (run off the event loop: see `describe_cron`)."""
    return {r.id: trigger_of(r.trigger).describe() for r in records}


def _with(ctx: Context, sources: frozenset[str]) -> Context:
    return Context(ctx.now, ctx.default_zone, ctx.prepare, sources, ctx.memo)


def _with_next(record: ScheduleRecord, first: datetime | None) -> ScheduleRecord:
    values = dict(record.__dict__)
    values["next_fire_at"] = first
    return ScheduleRecord(**values)
