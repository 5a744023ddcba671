"""Why a pending task waits: each reason from the task and the daemons' load."""

from __future__ import annotations

import dataclasses
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from schedule.nodes import ClusterLoad
from schedule.task import NewTask, TaskRecord, TaskStatus, new_task_values
from schedule.waiting import TypeRule, explain

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
IDLE = ClusterLoad(nodes=2, slots=8, busy=3, running_by_type=Counter({"noop": 3}))


def task(**changes: Any) -> TaskRecord:
    """A new `noop` task of five attempts, with `changes` made to its fields."""
    new = TaskRecord.from_values(new_task_values(NewTask("noop", {}, 5), NOW, ("t", "R")))
    return dataclasses.replace(new, **changes)


def test_only_pending_tasks_wait() -> None:
    for status in (TaskStatus.RUNNING, TaskStatus.COMPLETED, TaskStatus.FAILED):
        assert explain(task(status=status), NOW, IDLE, TypeRule()) is None


def test_due_later_and_retry_backoff() -> None:
    later = NOW + timedelta(minutes=3)
    due = explain(task(run_after=later), NOW, IDLE, TypeRule())
    assert due is not None and (due.reason, due.due_at, due.next_attempt) == ("due_later", later, 1)
    retry = explain(task(run_after=later, attempt=1, error="boom"), NOW, IDLE, TypeRule())
    assert retry is not None
    assert (retry.reason, retry.next_attempt, retry.max_attempts, retry.last_error) == (
        "retry_backoff",
        2,
        5,
        "boom",
    )


def test_due_tasks_wait_for_a_worker_a_node_a_slot_or_their_type() -> None:
    external = explain(task(), NOW, IDLE, TypeRule(external=True), position=4)
    assert external is not None and (external.reason, external.position) == ("external_worker", 4)
    nobody = ClusterLoad(nodes=0, slots=0, busy=0, running_by_type=Counter())
    gone = explain(task(), NOW, nobody, TypeRule())
    assert gone is not None and gone.reason == "no_node"
    # One per node of this type, two nodes alive, two running: the type's limit.
    capped = ClusterLoad(nodes=2, slots=8, busy=2, running_by_type=Counter({"noop": 2}))
    limited = explain(task(), NOW, capped, TypeRule(per_node=1))
    assert limited is not None
    assert (limited.reason, limited.type_running, limited.type_limit) == ("type_limit", 2, 2)
    full = ClusterLoad(nodes=2, slots=8, busy=8, running_by_type=Counter({"other": 8}))
    busy = explain(task(), NOW, full, TypeRule(per_node=1), position=3)
    assert busy is not None
    assert (busy.reason, busy.slots_busy, busy.slots_total, busy.position) == (
        "no_free_slot",
        8,
        8,
        3,
    )
    free = explain(task(), NOW, IDLE, TypeRule(per_node=4), position=1)
    assert free is not None and (free.reason, free.slots_busy, free.slots_total) == ("queued", 3, 8)
