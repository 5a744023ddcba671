"""The scheduler on every dialect: one task per fire across daemons, catch-up and overlap
policies, pause and resume, backfill, failed fires, the built-in and file schedules."""

from __future__ import annotations

import asyncio
import gc
import logging
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from config.settings import ScheduleEntry, Settings
from engine.handlers import default_registry
from schedule.datasources import DataSourceStore
from schedule.definition import (
    CatchUp,
    FireOutcome,
    Origin,
    Overlap,
    ScheduleRecord,
    ScheduleSpec,
)
from schedule.events import FireEvent
from schedule.exceptions import InvalidInput, InvalidState, NotFound
from schedule.periodic import HOLD_S, PeriodicScheduler, file_spec
from schedule.records import Outcome, Page, TaskFilter
from schedule.service import ScheduleService
from schedule.store import Connector, TaskStore, connect, make_store
from schedule.stores import schedule_store
from schedule.task import TaskRecord, TaskStatus
from schedule.triggers import Trigger
from tests.conftest import make_settings
from tests.helpers import Clock, Events

START = datetime(2026, 3, 10, 12, 0, 30, tzinfo=UTC)


@pytest.fixture
def clock() -> Clock:
    return Clock(START)


@pytest.fixture
def dialect_settings(database_url: str, tmp_path: Path) -> Settings:
    return make_settings(database_url, tmp_path, timezone="Europe/Moscow")


@pytest.fixture
def store(dialect_connector: Connector, clock: Clock) -> TaskStore:
    return make_store(dialect_connector, clock)


def make_scheduler(
    ddb: AsyncEngine,
    settings: Settings,
    clock: Clock,
    declared: list[ScheduleSpec] | None = None,
) -> PeriodicScheduler:
    """A daemon's scheduler and service (no engine: nothing runs, tasks stay pending)."""
    db = connect(ddb)
    service = ScheduleService(make_store(db, clock), default_registry(), settings)
    return PeriodicScheduler(
        service, schedule_store(db, clock), settings, clock=clock, declared=declared or []
    )


def spec(schedule_id: str = "erp", **fields: object) -> ScheduleSpec:
    values: dict[str, object] = {"task_type": "noop", "trigger": Trigger(cron="*/15 * * * *")}
    values.update(fields)
    return ScheduleSpec(id=schedule_id, **values)  # type: ignore[arg-type]


async def tasks_of(store: TaskStore, schedule_id: str) -> list[TaskRecord]:
    tasks, *_ = await store.list_tasks(TaskFilter(schedule_id=schedule_id), Page(1, 500))
    return sorted(tasks, key=lambda t: t.scheduled_for or START)


def fires(tasks: list[TaskRecord]) -> list[str]:
    return [t.scheduled_for.strftime("%d %H:%M") for t in tasks if t.scheduled_for]


async def finish(store: TaskStore, task: TaskRecord) -> None:
    """Run a pending task to completion by hand."""
    claimed = await store.claim("n", 100, 30)
    for t in claimed:
        if t.id == task.id:
            await store.finish("n", [Outcome(t.id, t.attempt, TaskStatus.COMPLETED, "completed")])
        else:
            await store.release("n", {t.id: t.attempt})


async def test_a_fire_enqueues_one_task_with_its_schedule_and_time(
    ddb: AsyncEngine, dialect_settings: Settings, clock: Clock, store: TaskStore
) -> None:
    scheduler = make_scheduler(ddb, dialect_settings, clock)
    events = Events(scheduler.service.bus)
    view = await scheduler.save(spec(parameters={"steps": 2}, priority=5), create=True)
    assert view.next_fires[:2] == [datetime(2026, 3, 10, 12, m, tzinfo=UTC) for m in (15, 30)]
    assert await scheduler.tick() == []
    clock.now = datetime(2026, 3, 10, 12, 15, 0, 200000, tzinfo=UTC)
    (plan,) = await scheduler.tick()
    assert gc.isenabled()  # paused during the claim only
    assert [f.outcome for f in plan.fires] == [FireOutcome.ENQUEUED]
    (task,) = await tasks_of(store, "erp")
    assert task.scheduled_for == datetime(2026, 3, 10, 12, 15, tzinfo=UTC)
    assert task.schedule_id == "erp" and task.parameters == {"steps": 2} and task.priority == 5
    assert await scheduler.tick() == []  # claimed: the next fire is 12:30
    assert (await scheduler.store.require("erp")).next_fire_at == datetime(
        2026, 3, 10, 12, 30, tzinfo=UTC
    )
    (fired,) = [e for e in events.seen if isinstance(e, FireEvent)]
    assert (fired.job_id, fired.outcome) == ("erp", "enqueued")
    assert fired.lag_s == pytest.approx(0.2)
    assert events.count("created") == 1


async def test_an_idle_turn_is_one_read_and_the_sleep_reaches_the_next_fire(
    ddb: AsyncEngine, dialect_settings: Settings, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    scheduler = make_scheduler(ddb, dialect_settings, clock)
    await scheduler.save(spec(), create=True)  # next fire 12:15
    reads: list[str] = []
    for name in ("due_state", "claim_fires", "claim_queued"):
        method = getattr(scheduler.store, name)

        async def counted(*args: object, _name: str = name, _method: Any = method) -> Any:
            reads.append(_name)
            return await _method(*args)

        monkeypatch.setattr(scheduler.store, name, counted)
    clock.now = datetime(2026, 3, 10, 12, 14, 59, 500000, tzinfo=UTC)
    assert await scheduler.tick() == []
    assert reads == ["due_state"]
    assert scheduler.until_next() == pytest.approx(0.5)
    clock.now = datetime(2026, 3, 10, 12, 15, 0, 100000, tzinfo=UTC)
    assert len(await scheduler.tick()) == 1
    claims = ["claim_fires"] * scheduler.store.concurrent_claims  # 2 at once on MariaDB
    assert reads[1:] == ["due_state", *claims, "due_state"]
    assert scheduler.until_next() == 1.0  # the poll: 12:30 is further


class RecordingPool:
    """A worker pool that records what the scheduler asks of it."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def wake(self) -> None:
        self.calls.append("wake")

    def request_cancel(self, task_id: str, reason: str = "") -> bool:
        return False

    def live(self, task_id: str) -> None:
        return None

    def hold_claims(self, seconds: float) -> None:
        self.calls.append(f"hold {seconds}")

    def release_claims(self) -> None:
        self.calls.append("release")


async def test_a_turn_that_fires_holds_the_pools_claims_until_the_fires_are_in(
    ddb: AsyncEngine, dialect_settings: Settings, clock: Clock
) -> None:
    scheduler = make_scheduler(ddb, dialect_settings, clock)
    pool = RecordingPool()
    scheduler.service.pool = pool
    for i in range(3):
        await scheduler.save(spec(f"s{i}", overlap=Overlap.ALLOW), create=True)  # fires 12:15
    assert await scheduler.tick() == [] and pool.calls == []  # an idle turn leaves it alone
    clock.now = datetime(2026, 3, 10, 12, 15, 0, 100000, tzinfo=UTC)
    assert len(await scheduler.tick()) == 3
    assert pool.calls == [f"hold {HOLD_S}", "wake", "release"]  # woken for the new tasks
    # fires due again at once (less than HOLD_S after the hold ended): the pool claims on, so
    # that fires due all the time leave it at least half of the time
    clock.now = datetime(2026, 3, 10, 12, 30, 0, 100000, tzinfo=UTC)
    assert len(await scheduler.tick()) == 3
    assert pool.calls[3:] == ["wake"]


async def test_when_one_of_the_concurrent_claims_fails_the_turn_stops_them_all(
    ddb: AsyncEngine,
    dialect_settings: Settings,
    clock: Clock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    scheduler = make_scheduler(ddb, dialect_settings, clock)
    pool = RecordingPool()
    scheduler.service.pool = pool
    await scheduler.save(spec(), create=True)
    monkeypatch.setattr(scheduler.store, "concurrent_claims", 2)
    started: list[int] = []
    stopped = asyncio.Event()

    async def claim_fires(*args: object) -> list[Any]:
        started.append(len(started))
        if len(started) == 1:
            await asyncio.sleep(0.05)
            raise RuntimeError("the database went away")
        try:
            await asyncio.sleep(30)  # a slow claim: stopped when its sibling fails
        finally:
            stopped.set()
        return []

    monkeypatch.setattr(scheduler.store, "claim_fires", claim_fires)
    clock.now = datetime(2026, 3, 10, 12, 15, 0, 100000, tzinfo=UTC)
    with pytest.raises(RuntimeError, match="went away"):
        await scheduler.tick()
    await asyncio.wait_for(stopped.wait(), 5)
    assert started == [0, 1]
    assert pool.calls == [f"hold {HOLD_S}", "release"]  # released even so


async def test_daemons_sharing_a_database_fire_each_fire_once(
    ddb: AsyncEngine, dialect_settings: Settings, clock: Clock, store: TaskStore
) -> None:
    daemons = [make_scheduler(ddb, dialect_settings, clock) for _ in range(3)]
    for i in range(30):
        every_minute = spec(f"s{i}", trigger=Trigger(cron="* * * * *"), overlap=Overlap.ALLOW)
        await daemons[i % 3].save(every_minute, create=True)
    for minute in range(3):
        clock.now = datetime(2026, 3, 10, 12, 1 + minute, 0, 1000, tzinfo=UTC)
        await asyncio.gather(*(d.tick() for d in daemons))
    tasks, total, *_ = await store.list_tasks(TaskFilter(), Page(1, 500))
    assert total == 90
    assert len({(t.schedule_id, t.scheduled_for) for t in tasks}) == 90


async def test_a_definition_changed_on_another_daemon_is_used_at_the_next_fire(
    ddb: AsyncEngine, dialect_settings: Settings, clock: Clock, store: TaskStore
) -> None:
    first = make_scheduler(ddb, dialect_settings, clock)
    second = make_scheduler(ddb, dialect_settings, clock)
    every_minute = Trigger(cron="* * * * *")
    made = await first.save(
        spec(trigger=every_minute, overlap=Overlap.ALLOW, parameters={"steps": 1}), create=True
    )
    clock.now = datetime(2026, 3, 10, 12, 1, 0, 1000, tzinfo=UTC)
    await first.tick()  # `first` has claimed it: it knows this definition
    # Changed on the other daemon, whose clock reads what it read at the create (or is
    # behind): the definition is still known as changed.
    clock.now = START
    changed = await second.save(
        spec(trigger=every_minute, overlap=Overlap.ALLOW, parameters={"steps": 2}, priority=3),
        create=False,
    )
    assert changed.record.updated_at > made.record.updated_at
    clock.now = datetime(2026, 3, 10, 12, 2, 0, 1000, tzinfo=UTC)
    await first.tick()
    old, new = await tasks_of(store, "erp")
    assert (old.parameters, old.priority) == ({"steps": 1}, 0)
    assert (new.parameters, new.priority) == ({"steps": 2}, 3)
    # Deleted and made again under the same id at the same clock reading, through `first`.
    clock.now = START
    await first.delete("erp")
    again = spec(trigger=every_minute, overlap=Overlap.ALLOW, parameters={"steps": 3})
    await first.save(again, create=True)
    clock.now = datetime(2026, 3, 10, 12, 3, 0, 1000, tzinfo=UTC)
    await first.tick()
    newest = (await tasks_of(store, "erp"))[-1]
    assert newest.parameters == {"steps": 3}


async def test_the_tasks_of_one_claim_keep_each_their_own_fields(
    ddb: AsyncEngine, dialect_settings: Settings, clock: Clock, store: TaskStore
) -> None:
    """A claim's INSERT leaves out the columns NULL in all its rows: one schedule sets what
    the other leaves NULL, and each task has its own."""
    scheduler = make_scheduler(ddb, dialect_settings, clock)
    await scheduler.save(spec("bare"), create=True)
    full = spec("full", parameters={"steps": 2}, priority=4, interface_id="parts", timeout_s=90)
    await scheduler.save(replace(full, max_attempts=5, jitter_s=30), create=True)
    clock.now = datetime(2026, 3, 10, 12, 15, 1, tzinfo=UTC)
    await scheduler.tick()
    (bare,) = await tasks_of(store, "bare")
    (made,) = await tasks_of(store, "full")
    fire = datetime(2026, 3, 10, 12, 15, tzinfo=UTC)
    for task in (bare, made):
        assert task == await store.get(task.id)
        assert task.status is TaskStatus.PENDING and task.scheduled_for == fire
        assert task.created_at == task.updated_at == clock.now
        assert task.result is None and task.message == "" and task.attempt == 0
    assert (bare.parameters, bare.priority, bare.interface_id, bare.timeout_s) == (
        {},
        0,
        None,
        None,
    )
    assert bare.run_after == clock.now
    assert (made.parameters, made.priority, made.interface_id) == ({"steps": 2}, 4, "parts")
    assert (made.timeout_s, made.max_attempts) == (90, 5)
    assert fire <= made.run_after <= fire + timedelta(seconds=30)


async def test_catch_up_policies_after_downtime(
    ddb: AsyncEngine, dialect_settings: Settings, clock: Clock, store: TaskStore
) -> None:
    scheduler = make_scheduler(ddb, dialect_settings, clock)
    for name, policy in (("latest", CatchUp.LATEST), ("none", CatchUp.NONE), ("all", CatchUp.ALL)):
        await scheduler.save(
            spec(name, catch_up=policy, overlap=Overlap.ALLOW, catch_up_window_s=1800),
            create=True,
        )
    clock.now = datetime(2026, 3, 10, 13, 20, tzinfo=UTC)  # down from 12:00:30 to 13:20
    await scheduler.tick()
    assert fires(await tasks_of(store, "latest")) == ["10 13:15"]
    assert fires(await tasks_of(store, "none")) == []
    assert fires(await tasks_of(store, "all")) == ["10 13:00", "10 13:15"]  # the window: 30 min
    await scheduler.tick()  # once: a second turn (or daemon) adds nothing
    assert len(await tasks_of(store, "latest")) == 1
    clock.now = datetime(2026, 3, 10, 13, 30, 5, tzinfo=UTC)
    await scheduler.tick()
    assert fires(await tasks_of(store, "none")) == ["10 13:30"]


async def test_overlap_policies(
    ddb: AsyncEngine, dialect_settings: Settings, clock: Clock, store: TaskStore
) -> None:
    scheduler = make_scheduler(ddb, dialect_settings, clock)
    for policy in Overlap:
        await scheduler.save(spec(policy.value, overlap=policy), create=True)
    for minute in (15, 30, 45):
        clock.now = datetime(2026, 3, 10, 12, minute, 1, tzinfo=UTC)
        await scheduler.tick()
    assert fires(await tasks_of(store, "skip")) == ["10 12:15"]
    assert fires(await tasks_of(store, "allow")) == ["10 12:15", "10 12:30", "10 12:45"]
    cancelled = await tasks_of(store, "cancel_previous")
    assert [t.status for t in cancelled] == [TaskStatus.CANCELLED] * 2 + [TaskStatus.PENDING]
    queued = await tasks_of(store, "queue_one")
    assert fires(queued) == ["10 12:15"]
    assert (await scheduler.store.require("queue_one")).queued_fire_at == datetime(
        2026, 3, 10, 12, 30, tzinfo=UTC
    )
    await finish(store, queued[0])
    await scheduler.tick()  # the previous task ended: the queued fire is enqueued
    assert fires(await tasks_of(store, "queue_one")) == ["10 12:15", "10 12:30"]


async def test_pause_with_a_note_holds_on_every_daemon_and_resume_skips_its_fires(
    ddb: AsyncEngine, dialect_settings: Settings, clock: Clock, store: TaskStore
) -> None:
    first = make_scheduler(ddb, dialect_settings, clock)
    second = make_scheduler(ddb, dialect_settings, clock)
    await first.save(spec(), create=True)
    paused = await first.pause("erp", "ERP maintenance until 14:00")
    assert paused.record.paused and paused.record.pause_note == "ERP maintenance until 14:00"
    assert paused.next_fires == []
    clock.now = datetime(2026, 3, 10, 13, 50, tzinfo=UTC)
    assert await second.tick() == []
    resumed = await second.resume("erp")
    assert not resumed.record.paused and resumed.record.pause_note is None
    assert resumed.next_fires[0] == datetime(2026, 3, 10, 14, 0, tzinfo=UTC)
    assert await first.tick() == []  # the fires of the pause are not caught up
    clock.now = datetime(2026, 3, 10, 14, 0, 1, tzinfo=UTC)
    await first.tick()
    assert fires(await tasks_of(store, "erp")) == ["10 14:00"]
    await first.delete("erp")  # deleted through one daemon: the other fires it no more
    clock.now = datetime(2026, 3, 10, 14, 15, 1, tzinfo=UTC)
    assert await second.tick() == []
    assert fires(await tasks_of(store, "erp")) == ["10 14:00"]


async def test_backfill_enqueues_the_past_fires_once(
    ddb: AsyncEngine, dialect_settings: Settings, clock: Clock, store: TaskStore
) -> None:
    scheduler = make_scheduler(ddb, dialect_settings, clock)
    await scheduler.save(spec(overlap=Overlap.ALLOW), create=True)
    start, end = datetime(2026, 3, 10, 9, 0, tzinfo=UTC), datetime(2026, 3, 10, 10, 0, tzinfo=UTC)
    made = await scheduler.backfill("erp", start, end)
    assert len(made) == 5  # 09:00, 09:15, 09:30, 09:45, 10:00
    assert await scheduler.backfill("erp", start, end) == []  # already there
    with pytest.raises(InvalidInput, match="end: must not be in the future"):
        await scheduler.backfill("erp", start, clock.now + timedelta(hours=1))
    await scheduler.save(spec("skipper"), create=True)
    assert len(await scheduler.backfill("skipper", start, end)) == 1  # overlap skip holds


async def test_a_fire_whose_task_cannot_be_made_is_recorded_and_the_rest_go_on(
    ddb: AsyncEngine,
    dialect_settings: Settings,
    clock: Clock,
    store: TaskStore,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="schedule.periodic")
    scheduler = make_scheduler(ddb, dialect_settings, clock)
    await scheduler.save(spec("ok"), create=True)
    await scheduler.save(spec("broken"), create=True)
    # The task type's own checks refuse the template now (a parameter it no longer takes).
    await scheduler.store.save(
        await _with_params(scheduler, "broken", {"no_such_parameter": 1}), create=False
    )
    clock.now = datetime(2026, 3, 10, 12, 15, 1, tzinfo=UTC)
    await scheduler.tick()
    assert fires(await tasks_of(store, "ok")) == ["10 12:15"]
    broken = await scheduler.store.require("broken")
    assert broken.last_error and "no_such_parameter" in broken.last_error
    assert broken.next_fire_at == datetime(2026, 3, 10, 12, 30, tzinfo=UTC)
    assert any(r.getMessage() == "schedule fire failed" for r in caplog.records)


async def test_a_fire_whose_data_source_was_deleted_fails_and_is_recorded(
    ddb: AsyncEngine, dialect_settings: Settings, clock: Clock, store: TaskStore
) -> None:
    scheduler = make_scheduler(ddb, dialect_settings, clock)
    sources = DataSourceStore(scheduler.store.db, clock)
    definition = {
        "name": "ERP parts",
        "kind": "sql",
        "connection": {},
        "target_table": "tools",
        "key_columns": ["tool_id"],
        "column_mapping": {},
        "interfaces": {},
    }
    await sources.create("erp-parts", definition)
    await scheduler.save(spec(task_type="full_sync", data_source_id="erp-parts"), create=True)
    await sources.delete("erp-parts")
    events = Events(scheduler.service.bus)
    clock.now = datetime(2026, 3, 10, 12, 15, 1, tzinfo=UTC)
    await scheduler.tick()
    assert await tasks_of(store, "erp") == []
    failed = await scheduler.store.require("erp")
    assert failed.last_error == "data source 'erp-parts' does not exist"
    assert failed.last_error_at == clock.now
    outcomes = [e.outcome for e in events.seen if isinstance(e, FireEvent)]
    assert outcomes == ["failed"]


async def test_a_schedule_that_cannot_fire_at_all_is_stopped_and_the_rest_go_on(
    ddb: AsyncEngine, dialect_settings: Settings, clock: Clock, store: TaskStore
) -> None:
    scheduler = make_scheduler(ddb, dialect_settings, clock)
    await scheduler.save(spec("ok"), create=True)
    made = await scheduler.save(spec("lost-zone"), create=True)
    # Its zone is not on this machine (any more): no fire time can be computed for it.
    await scheduler.store.save(replace(made.record, timezone="Mars/Olympus"), create=False)
    clock.now = datetime(2026, 3, 10, 12, 15, 1, tzinfo=UTC)
    await scheduler.tick()
    assert fires(await tasks_of(store, "ok")) == ["10 12:15"]
    stopped = await scheduler.store.require("lost-zone")
    assert stopped.next_fire_at is None
    assert stopped.last_error and "cannot fire, stopped" in stopped.last_error
    clock.now = datetime(2026, 3, 10, 12, 30, 1, tzinfo=UTC)
    await scheduler.tick()
    assert len(await tasks_of(store, "ok")) == 1  # skip: the 12:15 task is still pending


async def test_an_interval_keeps_its_grid_across_edits_and_pauses(
    ddb: AsyncEngine, dialect_settings: Settings, clock: Clock, store: TaskStore
) -> None:
    scheduler = make_scheduler(ddb, dialect_settings, clock)
    made = await scheduler.save(spec(trigger=Trigger(every_s=600)), create=True)
    # Without start_at an interval counts from when the schedule was first saved.
    assert made.next_fires[:2] == [START + timedelta(minutes=10), START + timedelta(minutes=20)]
    clock.advance(minutes=3)
    again = await scheduler.save(spec(trigger=Trigger(every_s=600), priority=7), create=False)
    assert again.next_fires[0] == START + timedelta(minutes=10)
    assert again.record.created_at == START and again.record.priority == 7
    await scheduler.pause("erp")
    resumed = await scheduler.resume("erp")
    assert resumed.next_fires[0] == START + timedelta(minutes=10)
    clock.now = START + timedelta(minutes=10, seconds=1)
    await scheduler.tick()
    assert (await scheduler.store.require("erp")).next_fire_at == START + timedelta(minutes=20)


async def _with_params(
    scheduler: PeriodicScheduler, schedule_id: str, params: dict[str, object]
) -> ScheduleRecord:
    return replace(await scheduler.store.require(schedule_id), parameters=params)


async def test_bad_definitions_are_refused_naming_the_field(
    ddb: AsyncEngine, dialect_settings: Settings, clock: Clock
) -> None:
    scheduler = make_scheduler(ddb, dialect_settings, clock)
    cases = [
        (spec(timezone="Mars/Olympus"), "timezone: unknown time zone"),
        (spec(task_type="nope"), "task_type"),
        (spec(data_source_id="gone"), "data_source_id: no data source 'gone'"),
        (
            spec(start_at=START, end_at=START - timedelta(hours=1)),
            "end_at: must be after start_at",
        ),
        (spec(parameters={"sleep_s": "long"}), "parameters"),
    ]
    for bad, message in cases:
        with pytest.raises(InvalidInput, match=message):
            await scheduler.save(bad, create=True)
    await scheduler.save(spec(), create=True)
    with pytest.raises(InvalidState, match="already exists"):
        await scheduler.save(spec(), create=True)
    with pytest.raises(NotFound):
        await scheduler.delete("nope")


async def test_declared_schedules_are_read_only_and_follow_the_declaration(
    ddb: AsyncEngine, dialect_settings: Settings, clock: Clock, store: TaskStore
) -> None:
    entry = ScheduleEntry(id="nightly", task_type="noop", trigger={"cron": "0 2 * * *"})
    declared = [file_spec(entry)]
    scheduler = make_scheduler(ddb, dialect_settings, clock, declared)
    await scheduler.start(loop=False)
    view = await scheduler.view("nightly")
    assert view.record.origin == Origin.FILE.value and view.managed_by
    # 02:00 Moscow is 23:00 UTC the day before.
    assert view.next_fires[0] == datetime(2026, 3, 10, 23, 0, tzinfo=UTC)
    with pytest.raises(InvalidState, match="settings file"):
        await scheduler.delete("nightly")
    with pytest.raises(InvalidState, match="settings file"):
        await scheduler.save(spec("nightly"), create=False)
    restarted = make_scheduler(ddb, dialect_settings, clock, [])
    await restarted.start(loop=False)  # removed from the file: removed
    with pytest.raises(NotFound):
        await restarted.view("nightly")


async def test_daemons_starting_together_on_a_new_database_all_start(
    ddb: AsyncEngine, dialect_settings: Settings, clock: Clock
) -> None:
    """Each declares the same schedules at once: the rows one inserts are new to the others
    (their lock could not cover them), and they look again instead of failing to start."""
    entries = [
        ScheduleEntry(id=f"f{i}", task_type="noop", trigger={"cron": "0 2 * * *"}) for i in range(5)
    ]
    daemons = [
        make_scheduler(ddb, dialect_settings, clock, [file_spec(e) for e in entries])
        for _ in range(4)
    ]
    await asyncio.gather(*(d.start(loop=False) for d in daemons))
    views, _ = await daemons[0].store.page(Page(1, 50))
    assert sorted(v.id for v in views) == [f"f{i}" for i in range(5)]


async def test_run_now_enqueues_without_moving_the_fires(
    ddb: AsyncEngine, dialect_settings: Settings, clock: Clock, store: TaskStore
) -> None:
    scheduler = make_scheduler(ddb, dialect_settings, clock)
    await scheduler.save(spec(), create=True)
    task = await scheduler.run_now("erp")
    assert task.schedule_id == "erp" and task.scheduled_for == clock.now
    view = await scheduler.view("erp", runs=True)
    assert view.runs is not None and [r.id for r in view.runs] == [task.id]
    assert view.next_fires[0] == datetime(2026, 3, 10, 12, 15, tzinfo=UTC)
    assert len(view.next_fires) == 5
    for action in (scheduler.run_now, scheduler.resume, scheduler.view):
        with pytest.raises(NotFound):
            await action("nope")
