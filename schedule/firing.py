"""What the due fires of a schedule become: pure rules, no database.

The scheduler claims due schedules in the database (`ScheduleStore.claim_fires`) and, inside
that same transaction, asks `plan_due` what each one's fires become, given the schedule's
unfinished tasks:

* Catch-up. The fires due now are those from the schedule's `next_fire_at` up to now. When the
  newest of them is the only one and at most `ON_TIME_S` old, it fires on time (`enqueued`).
  Otherwise fires were missed (no daemon ran, or the schedule was just resumed): `none` drops
  them all (`missed`) and fires the newest only if it is on time; `latest` enqueues one task,
  for the newest (`caught_up`); `all` enqueues one per fire within `catch_up_window_s`
  (`caught_up`), the older ones are `missed`.
* Overlap, for each fire to enqueue, against the schedule's unfinished (pending or running)
  tasks: `skip` enqueues nothing while there is one (`skipped_overlap`); `queue_one` keeps the
  first such fire waiting (`queued`, enqueued by `plan_queued` once the previous task ended)
  and skips the rest; `cancel_previous` cancels them and enqueues; `allow` enqueues.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from schedule.definition import CatchUp, FireOutcome, Overlap, ScheduleRecord
from schedule.exceptions import ScheduleError
from schedule.records import TaskRequest
from schedule.task import NewTask
from schedule.triggers import Timing

#: A fire handled at most this long after its time is on time; older ones were missed.
ON_TIME_S = 60.0
#: The catch-up window of `all` when the schedule sets none.
DEFAULT_WINDOW_S = 86_400.0
#: At most this many fires of one schedule are enqueued by one catch-up or backfill.
MAX_CATCH_UP = 1_000

Prepare = Callable[[ScheduleRecord, datetime], NewTask]
"""The task of a schedule's fire, checked against its type with the defaults filled in
(`ScheduleService.prepare` of `task_request`); `ScheduleError` when it is refused."""


@dataclass(frozen=True, slots=True)
class Fire:
    """One fire and what became of it (`task` is set when it enqueued one)."""

    scheduled_for: datetime
    outcome: FireOutcome
    task: NewTask | None = None
    error: str | None = None


@dataclass(slots=True)
class FirePlan:
    """What one claim does to one schedule: its fires, and its state afterwards."""

    schedule: ScheduleRecord
    fires: list[Fire] = field(default_factory=list)
    next_fire_at: datetime | None = None
    last_fire_at: datetime | None = None
    queued_fire_at: datetime | None = None
    cancel: list[str] = field(default_factory=list)  # unfinished task ids to cancel
    error: str | None = None

    @property
    def tasks(self) -> list[NewTask]:
        return [f.task for f in self.fires if f.task is not None]


@dataclass(frozen=True)
class Context:
    """What the rules need besides the schedule: the time, the zone, and the checks.

    `memo` keeps the due fires and the next fire of each distinct timing within one claim:
    ten thousand `* * * * *` schedules due together share one computation."""

    now: datetime
    default_zone: str
    prepare: Prepare
    sources: frozenset[str]  # data sources that exist
    memo: dict[tuple[Any, ...], tuple[list[datetime], datetime | None]] = field(
        default_factory=dict
    )


def overlap_matters(schedule: ScheduleRecord) -> bool:
    """Whether the plan of `schedule`'s fires depends on its unfinished tasks: under `allow` it
    does not, and a claim need not read them."""
    return schedule.overlap_policy is not Overlap.ALLOW


def plan_due(
    schedule: ScheduleRecord, unfinished: Sequence[tuple[str, str]], ctx: Context
) -> FirePlan:
    """The fires of a claimed schedule whose `next_fire_at` is due, and its next state."""
    assert schedule.next_fire_at is not None
    key = (
        repr(schedule.trigger),
        schedule.timezone,
        schedule.start_at,
        schedule.end_at,
        schedule.created_at if "every_s" in schedule.trigger else None,
        schedule.next_fire_at,
        schedule.catch_up_policy,
        schedule.catch_up_window_s,
    )
    known = ctx.memo.get(key)
    if known is None:
        timing = schedule.timing(ctx.default_zone)
        due = _due(schedule, timing, ctx.now)
        known = ctx.memo[key] = (due, timing.next_after(max(due[-1], ctx.now)))
    due, nxt = known
    plan = FirePlan(
        schedule,
        next_fire_at=nxt,
        last_fire_at=due[-1],
        queued_fire_at=schedule.queued_fire_at,
    )
    chosen = _catch_up(schedule, due, ctx.now, plan)
    _overlap(schedule, chosen, list(unfinished), ctx, plan)
    return plan


def plan_queued(
    schedule: ScheduleRecord, unfinished: Sequence[tuple[str, str]], ctx: Context
) -> FirePlan | None:
    """The waiting fire of a `queue_one` schedule, once its previous task has ended."""
    fire = schedule.queued_fire_at
    if fire is None or unfinished:
        return None
    plan = FirePlan(
        schedule,
        next_fire_at=schedule.next_fire_at,
        last_fire_at=schedule.last_fire_at,
        queued_fire_at=None,
    )
    plan.fires.append(_enqueue(schedule, fire, FireOutcome.ENQUEUED, ctx, plan))
    return plan


def plan_backfill(
    schedule: ScheduleRecord,
    fires: Sequence[datetime],
    unfinished: Sequence[tuple[str, str]],
    ctx: Context,
) -> FirePlan:
    """Past fires asked for by hand, each under the overlap policy; the schedule's own state
    is unchanged."""
    plan = FirePlan(
        schedule,
        next_fire_at=schedule.next_fire_at,
        last_fire_at=schedule.last_fire_at,
        queued_fire_at=schedule.queued_fire_at,
    )
    _overlap(schedule, [(f, FireOutcome.CAUGHT_UP) for f in fires], list(unfinished), ctx, plan)
    return plan


def _due(schedule: ScheduleRecord, timing: Timing, now: datetime) -> list[datetime]:
    """The due fire times, oldest first: `next_fire_at`, then the later ones up to now
    (for a policy that enqueues one task at most, only the newest of those matters)."""
    first = schedule.next_fire_at
    assert first is not None
    if schedule.catch_up_policy is CatchUp.ALL:
        window = timedelta(seconds=schedule.catch_up_window_s or DEFAULT_WINDOW_S)
        start = max(first, now - window)
        fires = [first] if start == first else []
        fires.extend(timing.fires_between(start if fires else start - _TICK, now))
        return fires[-MAX_CATCH_UP:] if fires else [first]
    newest = latest_fire(timing, first, now)
    return [first] if newest is None or newest == first else [first, newest]


_TICK = timedelta(microseconds=1)
_WINDOWS = (timedelta(minutes=5), timedelta(days=1), timedelta(days=32), timedelta(days=400))


def latest_fire(timing: Timing, first: datetime, now: datetime) -> datetime | None:
    """The newest fire time in `(first, now]`, or None; searches growing windows back from
    `now`, so a long outage with a frequent trigger costs a few steps, not one per period."""
    for window in _WINDOWS:
        start = max(first, now - window)
        last = None
        for fire in timing.fires_between(start, now):
            last = fire
        if last is not None or start == first:
            return last
    return None


def _catch_up(
    schedule: ScheduleRecord, due: list[datetime], now: datetime, plan: FirePlan
) -> list[tuple[datetime, FireOutcome]]:
    """The fires to enqueue, with the outcome each counts as; the dropped ones are noted."""
    newest = due[-1]
    on_time = (now - newest).total_seconds() <= ON_TIME_S
    if len(due) == 1 and on_time:
        return [(newest, FireOutcome.ENQUEUED)]
    policy = schedule.catch_up_policy
    if policy is CatchUp.NONE:
        dropped = due if not on_time else due[:-1]
        plan.fires.extend(Fire(f, FireOutcome.MISSED) for f in dropped)
        return [(newest, FireOutcome.ENQUEUED)] if on_time else []
    if policy is CatchUp.LATEST:
        plan.fires.extend(Fire(f, FireOutcome.MISSED) for f in due[:-1] if f != newest)
        return [(newest, FireOutcome.CAUGHT_UP)]
    window = timedelta(seconds=schedule.catch_up_window_s or DEFAULT_WINDOW_S)
    plan.fires.extend(Fire(f, FireOutcome.MISSED) for f in due if f < now - window)
    return [(f, FireOutcome.CAUGHT_UP) for f in due if f >= now - window]


def _overlap(
    schedule: ScheduleRecord,
    chosen: list[tuple[datetime, FireOutcome]],
    unfinished: list[tuple[str, str]],
    ctx: Context,
    plan: FirePlan,
) -> None:
    policy = schedule.overlap_policy
    for fire, outcome in chosen:
        if unfinished and policy is Overlap.SKIP:
            plan.fires.append(Fire(fire, FireOutcome.SKIPPED_OVERLAP))
            continue
        if unfinished and policy is Overlap.QUEUE_ONE:
            if plan.queued_fire_at is None:
                plan.queued_fire_at = fire
                plan.fires.append(Fire(fire, FireOutcome.QUEUED))
            else:
                plan.fires.append(Fire(fire, FireOutcome.SKIPPED_OVERLAP))
            continue
        if unfinished and policy is Overlap.CANCEL_PREVIOUS:
            plan.cancel.extend(task_id for task_id, _ in unfinished if task_id)
            unfinished = []
        made = _enqueue(schedule, fire, outcome, ctx, plan)
        plan.fires.append(made)
        if made.task is not None:
            unfinished = [*unfinished, ("", "pending")]


def _enqueue(
    schedule: ScheduleRecord, fire: datetime, outcome: FireOutcome, ctx: Context, plan: FirePlan
) -> Fire:
    """The task of one fire, or a failed fire naming why it could not be made."""
    if schedule.data_source_id and schedule.data_source_id not in ctx.sources:
        problem = f"data source {schedule.data_source_id!r} does not exist"
    else:
        try:
            return Fire(fire, outcome, ctx.prepare(schedule, fire))
        except ScheduleError as exc:
            problem = str(exc)
    plan.error = problem
    return Fire(fire, FireOutcome.FAILED, error=problem)


def task_request(
    schedule: ScheduleRecord, fire: datetime | None, now: datetime | None = None
) -> TaskRequest:
    """The task a schedule's template asks for, for the fire at `fire` (a run by hand passes
    None and the time of the request as `now`)."""
    jitter = schedule.jitter_s or 0.0
    scheduled = fire if fire is not None else now
    run_after = fire + timedelta(seconds=random.uniform(0, jitter)) if fire and jitter else None
    return TaskRequest(
        task_type=schedule.task_type,
        parameters=dict(schedule.parameters or {}),
        priority=schedule.priority,
        data_source_id=schedule.data_source_id,
        interface_id=schedule.interface_id,
        max_attempts=schedule.max_attempts,
        timeout_s=schedule.timeout_s,
        run_after=run_after,
        schedule_id=schedule.id,
        scheduled_for=scheduled,
    )
