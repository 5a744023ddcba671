"""The dashboard's throughput window, on every dialect (the store's per-hour counts are in the
contract suite, test_store.py)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from config.settings import Settings
from engine.handlers import default_registry
from schedule.records import Outcome
from schedule.service import ScheduleService
from schedule.store import Connector, TaskStore, make_store
from schedule.task import NewTask, TaskStatus
from tests.helpers import Clock


@pytest.fixture
def clock() -> Clock:
    return Clock(datetime(2026, 3, 1, 9, 30, tzinfo=UTC))


@pytest.fixture
def st(dialect_connector: Connector, clock: Clock) -> TaskStore:
    return make_store(dialect_connector, clock)


async def finish_at(st: TaskStore, clock: Clock, at: datetime, status: TaskStatus) -> None:
    """Create, claim and end one task at the clock time `at`."""
    clock.now = at
    await st.create(NewTask(task_type="noop", parameters={}, max_attempts=1))
    (task,) = await st.claim("n1", 1, lease_s=60)
    outcome = status.value if status is not TaskStatus.PENDING else "retry"
    assert await st.finish("n1", [Outcome(task.id, task.attempt, status, outcome)]) == {task.id}


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
