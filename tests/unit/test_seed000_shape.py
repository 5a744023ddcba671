"""Seed 000's task shape: statuses collapse to running | completed | error."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest

from controllers.models import seed000_task_json
from schedule.models import TaskStatus
from schedule.records import TaskRecord

CREATED = datetime(2026, 3, 1, 3, 0, tzinfo=UTC)
DONE = datetime(2026, 3, 1, 3, 0, 5, 250000, tzinfo=UTC)


def task(status: TaskStatus, error: str | None = None) -> TaskRecord:
    finished = DONE if status.finished else None
    return TaskRecord(
        id="7b0f4c2e-0000-4000-8000-000000000001",
        reference="HD6EKSD8DO9",
        task_type="partnumber_book_create",
        status=status,
        priority=0,
        data_source_id=None,
        interface_id=None,
        parameters={},
        progress=100 if status is TaskStatus.COMPLETED else 40,
        message="m",
        processed_rows=0,
        total_rows=None,
        error_count=0,
        result={"version": "PNBOOK-2026-03-01-001"} if status is TaskStatus.COMPLETED else None,
        error=error,
        attempt=1,
        max_attempts=3,
        timeout_s=None,
        retry_of=None,
        dedupe_key=None,
        callback_url=None,
        run_after=CREATED,
        cancel_requested=False,
        lease_owner=None,
        lease_expires_at=None,
        created_at=CREATED,
        started_at=CREATED,
        updated_at=CREATED,
        finished_at=finished,
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
