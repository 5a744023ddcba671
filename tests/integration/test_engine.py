"""The worker pool on a real SQLite file: wake-ups, retries, timeouts, cancellation, shutdown."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine

from config.settings import Settings
from engine import engine as engine_module
from engine.context import TaskContext
from engine.engine import SyncEngine
from engine.handlers import default_registry
from engine.handlers.base import HandlerSpec, JsonObject, Registry
from schedule.events import EventBus
from schedule.models import sync_tasks
from schedule.records import Page, TaskRequest
from schedule.service import ScheduleService
from schedule.store import TaskStore
from schedule.stores import Stores
from schedule.task import TaskStatus
from tests.conftest import make_settings
from tests.helpers import Events, Gates


async def explode(ctx: TaskContext) -> JsonObject:
    raise KeyError("the handler has a bug")


@pytest.fixture
def gates() -> Gates:
    return Gates()


@pytest.fixture
def registry(gates: Gates) -> Registry:
    reg = default_registry()
    reg.register(gates.spec())
    reg.register(gates.spec("single", concurrency=1))
    reg.register(HandlerSpec(task_type="explode", run=explode))
    return reg


@pytest.fixture
def settings(sqlite_url: str, tmp_path: Path) -> Settings:
    # A long poll interval: a task must start because the submit woke the engine, not a poll.
    return make_settings(sqlite_url, tmp_path, poll_interval_s=30.0, lease_s=3.0)


@pytest.fixture
def events(bus: EventBus) -> Events:
    return Events(bus)


async def create(service: ScheduleService, task_type: str = "noop", **kw: object) -> str:
    params = kw.pop("parameters", {})
    task, _ = await service.create(TaskRequest(task_type, parameters=params, **kw))  # type: ignore[arg-type]
    return task.id


async def test_submit_wakes_an_idle_engine(service: ScheduleService, events: Events) -> None:
    task_id = await create(service)
    await events.wait(task_id, "finished", within=5)  # far below the 30 s poll interval
    detail = await service.get(task_id)
    assert detail.task.status is TaskStatus.COMPLETED and detail.task.progress == 100
    assert [a.outcome for a in detail.attempts] == ["completed"]


async def test_held_claims_wait_for_the_release(
    service: ScheduleService, pool: SyncEngine, events: Events
) -> None:
    """While the scheduler holds the pool's claims (a burst of fires), a task enqueued is not
    started; the release starts it at once, and a hold ends by itself after its time."""
    pool.hold_claims(30.0)
    task_id = await create(service)  # wakes the engine, which must not claim
    await asyncio.sleep(0.3)
    assert (await service.get(task_id)).task.status is TaskStatus.PENDING
    pool.release_claims()
    await events.wait(task_id, "finished", within=5)  # far below the 30 s poll interval
    pool.hold_claims(0.2)
    later = await create(service)
    await asyncio.sleep(0.3)
    pool.wake()  # the hold has lapsed: the next look claims
    await events.wait(later, "finished", within=5)


async def test_retryable_failures_retry_then_complete(
    service: ScheduleService, events: Events
) -> None:
    task_id = await create(service, parameters={"fail_times": 2}, max_attempts=3)
    await events.wait(task_id, "finished", count=3)
    detail = await service.get(task_id)
    assert detail.task.status is TaskStatus.COMPLETED and detail.task.attempt == 3
    assert [a.outcome for a in detail.attempts] == ["retry", "retry", "completed"]
    assert "planned failure 2/2" in (detail.attempts[1].error or "")


async def test_retries_stop_at_max_attempts(service: ScheduleService, events: Events) -> None:
    task_id = await create(service, parameters={"fail_times": 5}, max_attempts=2)
    await events.wait(task_id, "finished", count=2)
    task = await service.find(task_id)
    assert task.status is TaskStatus.FAILED and task.attempt == 2
    assert task.error == "noop: planned failure 2/5"


async def test_permanent_failure_is_not_retried(service: ScheduleService, events: Events) -> None:
    task_id = await create(service, parameters={"fail_permanently": True}, max_attempts=5)
    await events.wait(task_id, "finished")
    task = await service.find(task_id)
    assert task.status is TaskStatus.FAILED and task.attempt == 1


async def test_handler_bug_fails_task_and_daemon_keeps_going(
    service: ScheduleService, events: Events
) -> None:
    broken = await create(service, "explode")
    await events.wait(broken, "finished")
    task = await service.find(broken)
    assert task.status is TaskStatus.FAILED
    assert task.error == "KeyError: 'the handler has a bug'"
    after = await create(service)
    await events.wait(after, "finished")
    assert (await service.find(after)).status is TaskStatus.COMPLETED


async def test_timeout_fails_the_attempt(service: ScheduleService, events: Events) -> None:
    task_id = await create(
        service, parameters={"sleep_s": 30, "steps": 3}, timeout_s=0.2, max_attempts=1
    )
    await events.wait(task_id, "finished")
    task = await service.find(task_id)
    assert task.status is TaskStatus.FAILED and task.error == "timed out after 0.2 s"


async def test_cooperative_cancel_of_a_running_task(
    service: ScheduleService, events: Events, gates: Gates
) -> None:
    task_id = await create(service, "gate", parameters={"name": "c"})
    async with asyncio.timeout(5):
        await gates.started["c"].wait()
    asked = await service.cancel(task_id)
    assert asked.status is TaskStatus.RUNNING and asked.cancel_requested
    gates.release["c"].set()  # the handler reaches its checkpoint
    await events.wait(task_id, "finished")
    task = await service.find(task_id)
    assert task.status is TaskStatus.CANCELLED
    assert (await service.get(task_id)).attempts[-1].outcome == "cancelled"


async def test_uncooperative_task_is_cancelled_by_force_after_grace(
    service: ScheduleService, events: Events
) -> None:
    task_id = await create(service, parameters={"sleep_s": 60, "steps": 1, "cooperative": False})
    await events.wait(task_id, "started")
    await service.cancel(task_id)
    await events.wait(task_id, "finished", within=5)  # grace is 0.5 s
    task = await service.find(task_id)
    assert task.status is TaskStatus.CANCELLED and "forced" in (task.error or "")


async def test_pending_cancel_is_immediate(service: ScheduleService) -> None:
    task, _ = await service.create(TaskRequest("noop", run_after=_later()))
    cancelled = await service.cancel(task.id)
    assert cancelled.status is TaskStatus.CANCELLED and cancelled.finished_at is not None


async def test_live_progress_is_merged_and_flushed(
    service: ScheduleService, events: Events, gates: Gates, store: TaskStore
) -> None:
    task_id = await create(service, "gate", parameters={"name": "p", "report": 50})
    async with asyncio.timeout(5):
        await gates.started["p"].wait()
    live = await service.find(task_id)
    assert (live.progress, live.message, live.processed_rows) == (50, "halfway", 50)

    async def flushed() -> bool:
        return (await store.require(task_id)).progress == 50

    await events.until(flushed, within=5)  # checked again as each flush is announced
    gates.release["p"].set()
    await events.wait(task_id, "finished")
    errors, total, *_ = await service.errors(task_id, _page())
    assert total == 1 and errors[0].position == 7 and errors[0].record == {"n": 1}


async def test_type_concurrency_limit(
    service: ScheduleService, events: Events, gates: Gates
) -> None:
    ids = [await create(service, "single", parameters={"name": f"s{i}"}) for i in range(3)]
    for i, task_id in enumerate(ids):
        async with asyncio.timeout(5):
            await gates.started[f"s{i}"].wait()
        gates.release[f"s{i}"].set()
        await events.wait(task_id, "finished")
    assert gates.peak == 1


async def test_lost_lease_is_never_written(
    service: ScheduleService, events: Events, gates: Gates, db: AsyncEngine
) -> None:
    task_id = await create(service, "gate", parameters={"name": "l"})
    async with asyncio.timeout(5):
        await gates.started["l"].wait()
    async with db.begin() as conn:  # another node rescued and re-claimed the task
        await conn.execute(
            update(sync_tasks).where(sync_tasks.c.id == task_id).values(lease_owner="other")
        )
    await events.wait(task_id, "lost", within=10)  # noticed at the next heartbeat
    task = await service.find(task_id)
    assert task.status is TaskStatus.RUNNING and task.lease_owner == "other"


async def test_shutdown_gives_running_tasks_back(
    stores: Stores, store: TaskStore, registry: Registry, sqlite_url: str, tmp_path: Path
) -> None:
    quick = make_settings(sqlite_url, tmp_path, shutdown_grace_s=0.1)
    bus = EventBus()
    pool = SyncEngine(stores, registry, quick, bus=bus)
    events = Events(bus)
    service = ScheduleService(store, registry, quick, pool, bus)
    await pool.start()
    task_id = await create(service, parameters={"sleep_s": 60, "steps": 60})
    await events.wait(task_id, "started")
    await pool.stop()
    task = await store.require(task_id)
    assert task.status is TaskStatus.PENDING and task.attempt == 0
    assert [a.outcome for a in await store.attempts(task_id)] == ["released"]


async def test_shutdown_gives_back_a_task_that_ignores_its_cancellation(
    stores: Stores,
    store: TaskStore,
    sqlite_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(engine_module, "STOP_WAIT_S", 0.5)
    # A cancel grace far longer than the test: stopping must not wait for it.
    quick = make_settings(sqlite_url, tmp_path, shutdown_grace_s=0.1, cancel_grace_s=600)
    started, release = asyncio.Event(), asyncio.Event()

    async def stubborn(ctx: TaskContext) -> JsonObject:
        started.set()
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:  # a handler bug: the cancellation is swallowed
                continue
        return {"stubborn": True}

    registry = default_registry()
    registry.register(HandlerSpec(task_type="stubborn", run=stubborn))
    bus = EventBus()
    pool = SyncEngine(stores, registry, quick, bus=bus)
    events = Events(bus)
    service = ScheduleService(store, registry, quick, pool, bus)
    await pool.start()
    task_id = await create(service, "stubborn")
    async with asyncio.timeout(10):
        await started.wait()
    async with asyncio.timeout(10):
        await pool.stop()
    assert "released" in events.kinds(task_id)
    task = await store.require(task_id)
    assert task.status is TaskStatus.PENDING and task.attempt == 0 and task.lease_owner is None
    assert [a.outcome for a in await store.attempts(task_id)] == ["released"]
    release.set()  # let the handler's coroutine end before the test's loop closes


def _later() -> datetime:
    return datetime.now(UTC) + timedelta(hours=1)


def _page() -> Page:
    return Page(1, 10)
