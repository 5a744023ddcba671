"""How an attempt's ending maps to the next status (no database: the runner is pure)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from config.settings import Settings
from engine.context import CancelState, LiveProgress, TaskContext
from engine.exceptions import LeaseLost, PermanentError, RetryableError, TaskCancelled
from engine.handlers.base import HandlerSpec, JsonObject, Parameters
from engine.retry import RetryPolicy
from engine.worker import AttemptRunner
from schedule.records import RecordError
from schedule.store import connect
from schedule.stores import Stores, open_stores
from schedule.task import FINISHED, NewTask, TaskRecord, TaskStatus, new_task_values

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def record(attempt: int = 1, max_attempts: int = 3, timeout_s: float | None = None) -> TaskRecord:
    new = NewTask("t", {}, max_attempts, timeout_s=timeout_s)
    pending = TaskRecord.from_values(new_task_values(new, NOW, ("t1", "REF00000001")))
    return dataclasses.replace(
        pending,
        status=TaskStatus.RUNNING,
        attempt=attempt,
        lease_owner="n",
        lease_expires_at=NOW,
        started_at=NOW,
    )


@pytest.fixture(scope="module")
def stores() -> Stores:
    """Stores no attempt here touches (the runner is pure)."""
    return open_stores(connect(create_async_engine("sqlite+aiosqlite://")))


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    path: Path = tmp_path_factory.mktemp("s")
    return Settings(database_url=f"sqlite:///{path / 'x.db'}", state_dir=path)


async def run(
    raise_: BaseException | None, task: TaskRecord, stores: Stores, settings: Settings
) -> tuple[TaskStatus, str, str | None] | None:
    async def handler(ctx: TaskContext) -> JsonObject:
        if raise_ is not None:
            raise raise_
        return {"ok": True}

    async def sink(errors: Sequence[RecordError]) -> bool:
        return True

    ctx = TaskContext(
        task=task, params=Parameters(), stores=stores, clock=lambda: NOW, settings=settings,
        live=LiveProgress(task.id, task.attempt), cancel=CancelState(), error_sink=sink,
        log=logging.LoggerAdapter(logging.getLogger("t")),
    )  # fmt: skip
    outcome = await AttemptRunner(RetryPolicy(1, 10), lambda: NOW, max_result_bytes=65536).run(
        HandlerSpec(task_type="t", run=handler), ctx
    )
    return None if outcome is None else (outcome.status, outcome.outcome, outcome.error)


@pytest.mark.parametrize(
    ("error", "attempt", "expected"),
    [
        (None, 1, (TaskStatus.COMPLETED, "completed", None)),
        (RetryableError("flaky"), 1, (TaskStatus.PENDING, "retry", "flaky")),
        (RetryableError("flaky"), 3, (TaskStatus.FAILED, "failed", "flaky")),
        (PermanentError("bad"), 1, (TaskStatus.FAILED, "failed", "bad")),
        (ValueError("oops"), 1, (TaskStatus.FAILED, "failed", "ValueError: oops")),
        (TaskCancelled("stop"), 1, (TaskStatus.CANCELLED, "cancelled", "stop")),
        (LeaseLost("gone"), 1, None),
    ],
)
async def test_outcome_of_an_attempt(
    error: BaseException | None,
    attempt: int,
    expected: tuple[TaskStatus, str, str | None] | None,
    stores: Stores,
    settings: Settings,
) -> None:
    assert await run(error, record(attempt=attempt), stores, settings) == expected


async def test_timeout_is_retryable(stores: Stores, settings: Settings) -> None:
    async def slow(ctx: TaskContext) -> JsonObject:
        await asyncio.Event().wait()
        return {}

    task = record(timeout_s=0.01)
    ctx = TaskContext(
        task=task, params=Parameters(), stores=stores, clock=lambda: NOW, settings=settings,
        live=LiveProgress(task.id, 1), cancel=CancelState(), error_sink=_true,
        log=logging.LoggerAdapter(logging.getLogger("t")),
    )  # fmt: skip
    outcome = await AttemptRunner(RetryPolicy(1, 10), lambda: NOW, max_result_bytes=65536).run(
        HandlerSpec(task_type="t", run=slow), ctx
    )
    assert outcome is not None and outcome.outcome == "retry"
    assert outcome.retry_at is not None and outcome.retry_at > NOW


async def _true(errors: Sequence[RecordError]) -> bool:
    return True


def test_backoff_grows_exponentially_with_jitter_and_is_capped() -> None:
    policy = RetryPolicy(initial_s=1, max_s=60)
    for attempt in range(1, 6):
        base = 2 ** (attempt - 1)
        assert base <= policy.delay(attempt) <= base + 1
    assert policy.delay(20) == 60
    assert RetryPolicy(initial_s=0).delay(3) == 0


def test_finished_statuses() -> None:
    assert {s for s in TaskStatus if s.finished} == set(FINISHED)
    assert not TaskStatus.PENDING.finished and not TaskStatus.RUNNING.finished
