"""Periodic jobs on every dialect: coalesced catch-up, one task per fire, persisted pause."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from config.settings import Settings
from engine.handlers import default_registry
from schedule.events import FireEvent
from schedule.exceptions import NotFound
from schedule.periodic import PeriodicJob, PeriodicScheduler, latest_fire
from schedule.records import Outcome, Page, TaskFilter
from schedule.schedules import ScheduleStore
from schedule.service import ScheduleService
from schedule.store import Connector, TaskStore, connect, make_store
from schedule.task import TaskStatus
from tests.conftest import make_settings
from tests.helpers import Clock, Events

START = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


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
    ddb: AsyncEngine, settings: Settings, clock: Clock
) -> tuple[PeriodicScheduler, ScheduleService]:
    """A daemon's scheduler and service (no engine: nothing runs, tasks stay pending)."""
    db = connect(ddb)
    service = ScheduleService(make_store(db, clock), default_registry(), settings)
    return PeriodicScheduler(service, ScheduleStore(db, clock), settings, clock=clock), service


async def tasks_of(store: TaskStore, task_type: str) -> list[str | None]:
    tasks, *_ = await store.list_tasks(TaskFilter(task_type=task_type), Page(1, 100))
    return [t.dedupe_key for t in tasks]


def test_latest_fire_finds_the_newest_due_time_only() -> None:
    job = PeriodicJob("j", "noop", "*/5 * * * *", "X")
    trigger = job.trigger(ZoneInfo("UTC"))
    now = datetime(2026, 3, 10, 12, 7, 30, tzinfo=UTC)
    assert latest_fire(trigger, now - timedelta(days=90), now) == datetime(
        2026, 3, 10, 12, 5, tzinfo=UTC
    )
    assert latest_fire(trigger, datetime(2026, 3, 10, 12, 5, tzinfo=UTC), now) is None
    yearly = PeriodicJob("y", "noop", "0 3 1 1 *", "X").trigger(ZoneInfo("Europe/Moscow"))
    far = datetime(2030, 6, 1, tzinfo=UTC)
    assert latest_fire(yearly, datetime(2026, 1, 1, tzinfo=UTC), far) == datetime(
        2030, 1, 1, 0, 0, tzinfo=UTC
    )  # 03:00 Moscow


async def test_missed_fires_are_caught_up_once(
    ddb: AsyncEngine, dialect_settings: Settings, clock: Clock, store: TaskStore
) -> None:
    scheduler, _ = make_scheduler(ddb, dialect_settings, clock)
    await scheduler.store.ensure([(j.id, j.task_type) for j in scheduler.jobs.values()])
    assert await scheduler.catch_up() == []  # first start: nothing was missed
    clock.advance(days=5, hours=3)  # down for five nights: 2026-03-15 15:00 UTC
    fired = await scheduler.catch_up()
    assert sorted(t.task_type for t in fired) == [
        "partnumber_book_create",
        "partnumber_book_retention",
        "task_retention",
    ]
    # 03:00 Moscow = 00:00 UTC; only the newest missed fire (the 15th), not one per night.
    assert await tasks_of(store, "partnumber_book_create") == [
        "partnumber_book_create@2026-03-15T00:00:00Z"
    ]
    assert await scheduler.catch_up() == []
    restarted, _ = make_scheduler(ddb, dialect_settings, clock)
    assert await restarted.catch_up() == []
    views = {v.id: v for v in await restarted.views()}
    view = views["partnumber_book_create"]
    snapshot = next(t for t in fired if t.task_type == "partnumber_book_create")
    assert view.last_task_id == snapshot.id
    assert view.next_run_at == datetime(2026, 3, 16, 0, 0, tzinfo=UTC)
    assert view.cron == "0 3 * * *" and view.timezone == "Europe/Moscow"


async def test_two_daemons_create_one_task_per_fire(
    ddb: AsyncEngine, dialect_settings: Settings, clock: Clock, store: TaskStore
) -> None:
    first, _ = make_scheduler(ddb, dialect_settings, clock)
    second, _ = make_scheduler(ddb, dialect_settings, clock)
    await first.store.ensure([(j.id, j.task_type) for j in first.jobs.values()])
    fire_at = datetime(2026, 3, 11, 0, 0, tzinfo=UTC)
    clock.now = fire_at + timedelta(seconds=1)
    a, b = await asyncio.gather(
        first.fire("task_retention", fire_at), second.fire("task_retention", fire_at)
    )
    ids = {t.id for t in (a, b) if t is not None}
    assert len(ids) == 1
    assert await tasks_of(store, "task_retention") == ["task_retention@2026-03-11T00:00:00Z"]
    # A daemon that fires late, after the task finished, adds nothing either.
    (task_id,) = ids
    await store.claim("n", 1, 30)
    running = await store.require(task_id)
    assert running.status is TaskStatus.RUNNING
    done = Outcome(task_id, running.attempt, TaskStatus.COMPLETED, "completed")
    assert await store.finish("n", [done]) == {task_id}
    assert await second.fire("task_retention", fire_at) is None
    assert "task_retention" not in {t.task_type for t in await second.catch_up()}
    assert len(await tasks_of(store, "task_retention")) == 1


async def test_pause_persists_and_resume_skips_paused_fires(
    ddb: AsyncEngine, dialect_settings: Settings, clock: Clock, store: TaskStore
) -> None:
    scheduler, _ = make_scheduler(ddb, dialect_settings, clock)
    await scheduler.store.ensure([(j.id, j.task_type) for j in scheduler.jobs.values()])
    paused = await scheduler.pause("partnumber_book_create")
    assert paused.paused and paused.next_run_at is None
    clock.advance(days=2)
    restarted, _ = make_scheduler(ddb, dialect_settings, clock)  # a restart keeps the pause
    fired = await restarted.catch_up()
    assert "partnumber_book_create" not in {t.task_type for t in fired}
    assert await restarted.fire("partnumber_book_create", clock.now - timedelta(hours=1)) is None
    assert (await restarted.view("partnumber_book_create")).paused
    resumed = await restarted.resume("partnumber_book_create")
    assert not resumed.paused
    assert await restarted.catch_up() == []  # the fires missed while paused are skipped
    assert await tasks_of(store, "partnumber_book_create") == []
    clock.advance(days=1)
    fired = await restarted.catch_up()
    assert [t.task_type for t in fired if t.task_type == "partnumber_book_create"] == [
        "partnumber_book_create"
    ]


async def test_run_now_and_unknown_ids(
    ddb: AsyncEngine, dialect_settings: Settings, clock: Clock, store: TaskStore
) -> None:
    scheduler, _ = make_scheduler(ddb, dialect_settings, clock)
    await scheduler.store.ensure([(j.id, j.task_type) for j in scheduler.jobs.values()])
    task = await scheduler.run_now("partnumber_book_retention")
    assert task.status is TaskStatus.PENDING and task.task_type == "partnumber_book_retention"
    view = await scheduler.view("partnumber_book_retention")
    assert view.last_task_id == task.id and view.last_run_at == clock.now
    assert await scheduler.catch_up() == []  # a manual run is not a scheduled fire
    for action in (scheduler.run_now, scheduler.pause, scheduler.resume, scheduler.view):
        with pytest.raises(NotFound):
            await action("nope")


async def test_cron_callback_enqueues_the_fire_that_just_passed(
    ddb: AsyncEngine,
    dialect_settings: Settings,
    clock: Clock,
    store: TaskStore,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="schedule.periodic")  # the daemon logs at INFO
    scheduler, service = make_scheduler(ddb, dialect_settings, clock)
    events = Events(service.bus)
    await scheduler.store.ensure([(j.id, j.task_type) for j in scheduler.jobs.values()])
    clock.now = datetime(2026, 3, 11, 1, 0, 0, 300000, tzinfo=UTC)  # 04:00:00.3 Moscow
    await scheduler.on_fire("task_retention")
    await scheduler.on_fire("task_retention")  # a second daemon's callback for the same fire
    assert await tasks_of(store, "task_retention") == ["task_retention@2026-03-11T01:00:00Z"]
    assert await tasks_of(store, "partnumber_book_create") == []
    fires = [(e.job_id, e.ok) for e in events.seen if isinstance(e, FireEvent)]
    assert fires == [("task_retention", True)]
    assert events.count("created") == 1
    logged = [r for r in caplog.records if r.getMessage() == "periodic job fired"]
    assert [getattr(r, "task_created", None) for r in logged] == [True]


async def test_start_registers_cron_jobs_and_stops(
    ddb: AsyncEngine, dialect_settings: Settings, clock: Clock
) -> None:
    scheduler, _ = make_scheduler(ddb, dialect_settings, clock)
    await scheduler.start()
    try:
        jobs = {j.id: j for j in scheduler.cron_jobs()}
        assert set(jobs) == set(scheduler.jobs)
        assert str(jobs["task_retention"].trigger.timezone) == "Europe/Moscow"
    finally:
        await scheduler.stop()
    assert scheduler.cron_jobs() == []
