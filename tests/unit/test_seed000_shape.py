"""Seed 000's task shape: statuses collapse to running | completed | error."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest

from controllers.models import seed000_task_json
from schedule.task import NewTask, TaskRecord, TaskStatus, new_task_values

CREATED = datetime(2026, 3, 1, 3, 0, tzinfo=UTC)
DONE = datetime(2026, 3, 1, 3, 0, 5, 250000, tzinfo=UTC)


def task(status: TaskStatus, error: str | None = None) -> TaskRecord:
    ids = ("7b0f4c2e-0000-4000-8000-000000000001", "HD6EKSD8DO9")
    new = NewTask("partnumber_book_create", {}, 3)
    pending = TaskRecord.from_values(new_task_values(new, CREATED, ids))
    completed = status is TaskStatus.COMPLETED
    return dataclasses.replace(
        pending,
        status=status,
        progress=100 if completed else 40,
        message="m",
        result={"version": "PNBOOK-2026-03-01-001"} if completed else None,
        error=error,
        attempt=1,
        started_at=CREATED,
        finished_at=DONE if status.finished else None,
    )


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (TaskStatus.PENDING, "running"),
        (TaskStatus.RUNNING, "running"),
        (TaskStatus.COMPLETED, "completed"),
        (TaskStatus.FAILED, "error"),
        (TaskStatus.CANCELLED, "error"),
    ],
)
def test_status_mapping(status: TaskStatus, expected: str) -> None:
    assert seed000_task_json(task(status))["status"] == expected


def test_shape_and_errors() -> None:
    done = seed000_task_json(task(TaskStatus.COMPLETED))
    assert done == {
        "id": "7b0f4c2e-0000-4000-8000-000000000001",
        "type": "partnumber_book_create",
        "status": "completed",
        "progress": 100,
        "message": "m",
        "result": {"version": "PNBOOK-2026-03-01-001"},
        "error": None,
        "created_at": "2026-03-01T03:00:00.000Z",
        "done_at": "2026-03-01T03:00:05.250Z",
    }
    assert seed000_task_json(task(TaskStatus.FAILED, "the snapshot is empty"))["error"] == (
        "the snapshot is empty"
    )
    assert seed000_task_json(task(TaskStatus.CANCELLED))["error"] == "cancelled"
    # A retry pending after a failed attempt still reads "running", without the old error.
    retrying = dataclasses.replace(task(TaskStatus.PENDING), error="lock busy")
    assert seed000_task_json(retrying)["error"] is None
    assert seed000_task_json(retrying)["done_at"] is None
