"""Per-hour throughput of finished tasks (the dashboard's chart), on every dialect."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from config.settings import Settings
from engine.handlers import default_registry
from schedule.models import TaskStatus
from schedule.records import NewTask, Outcome
from schedule.service import ScheduleService
from schedule.store import TaskStore, make_store
from tests.helpers import Clock


@pytest.fixture
def clock() -> Clock:
    return Clock(datetime(2026, 3, 1, 9, 30, tzinfo=UTC))


@pytest.fixture
async def st(dialect_engine: AsyncEngine, clock: Clock) -> AsyncIterator[TaskStore]:
    yield make_store(dialect_engine, clock)
    await dialect_engine.dispose()


async def finish_at(st: TaskStore, clock: Clock, at: datetime, status: TaskStatus) -> None:
    """Create, claim and end one task at the clock time `at`."""
    clock.now = at
    await st.create(NewTask(task_type="noop", parameters={}, max_attempts=1))
    (task,) = await st.claim("n1", 1, lease_s=60)
    outcome = status.value if status is not TaskStatus.PENDING else "retry"
    assert await st.finish("n1", [Outcome(task.id, task.attempt, status, outcome)]) == {task.id}


async def test_counts_per_hour_by_final_status(st: TaskStore, clock: Clock) -> None:
    base = datetime(2026, 3, 1, 6, 0, tzinfo=UTC)
    await finish_at(st, clock, base + timedelta(minutes=1), TaskStatus.COMPLETED)
    await finish_at(st, clock, base + timedelta(minutes=59, seconds=59), TaskStatus.COMPLETED)
    await finish_at(st, clock, base + timedelta(minutes=30), TaskStatus.FAILED)
    await finish_at(st, clock, base + timedelta(hours=2, minutes=5), TaskStatus.CANCELLED)
    await finish_at(st, clock, base + timedelta(hours=2, minutes=6), TaskStatus.PENDING)  # retry
    await finish_at(st, clock, base - timedelta(minutes=1), TaskStatus.COMPLETED)  # before
    await finish_at(st, clock, base + timedelta(hours=4), TaskStatus.COMPLETED)  # after

    hours = await st.throughput(base + timedelta(minutes=20), 4)  # truncated to 06:00

    assert [h.hour for h in hours] == [base + timedelta(hours=i) for i in range(4)]
    assert [h.by_status for h in hours] == [
        {"completed": 2, "failed": 1, "cancelled": 0},
        {"completed": 0, "failed": 0, "cancelled": 0},
        {"completed": 0, "failed": 0, "cancelled": 1},
        {"completed": 0, "failed": 0, "cancelled": 0},
    ]


async def test_service_window_ends_with_the_current_hour(
    st: TaskStore, clock: Clock, dialect_settings: Settings
) -> None:
    service = ScheduleService(st, default_registry(), dialect_settings)
    await finish_at(st, clock, datetime(2026, 3, 1, 9, 10, tzinfo=UTC), TaskStatus.COMPLETED)
    await finish_at(st, clock, datetime(2026, 2, 28, 10, 10, tzinfo=UTC), TaskStatus.FAILED)
    await finish_at(st, clock, datetime(2026, 2, 28, 9, 59, tzinfo=UTC), TaskStatus.FAILED)
    clock.now = datetime(2026, 3, 1, 9, 45, tzinfo=UTC)

    hours = await service.throughput(24)

    assert len(hours) == 24
    assert hours[0].hour == datetime(2026, 2, 28, 10, 0, tzinfo=UTC)
    assert hours[-1].hour == datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
    assert hours[0].by_status["failed"] == 1  # the 09:59 one the day before is outside
    assert hours[-1].by_status["completed"] == 1
    assert sum(sum(h.by_status.values()) for h in hours) == 2
