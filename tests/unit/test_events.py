"""The event bus: typed kinds, delivery in subscription order, a failing subscriber isolated."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import pytest

from schedule.events import (
    PAYLOADS,
    TASK_KINDS,
    EventBus,
    EventKind,
    FireEvent,
    NodeEvent,
    TaskEvent,
)
from schedule.task import NewTask, TaskRecord, new_task_values

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def task(task_id: str = "t1") -> TaskRecord:
    """A pending noop task (nothing here reads its fields but its id)."""
    new = NewTask("noop", {}, max_attempts=3)
    return TaskRecord.from_values(new_task_values(new, NOW, (task_id, "REF00000001")))


def test_every_kind_has_a_payload_and_the_live_feed_values_are_kept() -> None:
    assert set(PAYLOADS) == set(EventKind)
    # The live feed shows these values to browsers: they are part of the contract.
    assert {k.value for k in TASK_KINDS} == {
        "created",
        "updated",
        "cancel_requested",
        "cancelled",
        "started",
        "finished",
        "released",
        "lost",
        "rescued",
    }


def test_handlers_get_only_their_kinds_in_subscription_order() -> None:
    bus = EventBus()
    calls: list[str] = []
    bus.subscribe(TaskEvent, [EventKind.FINISHED], lambda e: calls.append(f"a:{e.kind}"))
    bus.subscribe(TaskEvent, TASK_KINDS, lambda e: calls.append(f"b:{e.kind}"))
    bus.subscribe(FireEvent, [EventKind.SCHEDULE_FIRED], lambda e: calls.append(f"c:{e.job_id}"))
    bus.publish(TaskEvent(EventKind.CREATED, task()))
    bus.publish(TaskEvent(EventKind.FINISHED, task()))
    bus.publish(FireEvent(EventKind.SCHEDULE_FIRED, "snapshot", "enqueued", 0.01))
    bus.publish(NodeEvent(EventKind.DATABASE_DOWN, "n1"))  # nobody listens: nothing happens
    assert calls == ["b:created", "a:finished", "b:finished", "c:snapshot"]


def test_a_failing_subscriber_is_logged_and_never_breaks_the_publisher(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bus = EventBus()
    after: list[EventKind] = []

    def broken(event: TaskEvent) -> None:
        raise RuntimeError("subscriber bug")

    bus.subscribe(TaskEvent, [EventKind.STARTED], broken)
    bus.subscribe(TaskEvent, [EventKind.STARTED], lambda e: after.append(e.kind))
    with caplog.at_level(logging.ERROR, logger="schedule.events"):
        bus.publish(TaskEvent(EventKind.STARTED, task("t9")))
    assert after == [EventKind.STARTED]
    (record,) = caplog.records
    assert record.getMessage() == "event subscriber failed"
    assert getattr(record, "task_id", None) == "t9"
    assert getattr(record, "event", None) == "started"


def test_a_kind_is_refused_with_the_wrong_payload_type() -> None:
    bus = EventBus()
    with pytest.raises(TypeError, match="SCHEDULE_FIRED events carry FireEvent, not TaskEvent"):
        bus.subscribe(TaskEvent, [EventKind.SCHEDULE_FIRED], lambda e: None)
    assert bus.subscribers(EventKind.SCHEDULE_FIRED) == 0


def test_unsubscribe_stops_delivery_even_during_one() -> None:
    bus = EventBus()
    seen: list[str] = []
    stop_second = None

    def first(event: TaskEvent) -> None:
        seen.append("first")
        assert stop_second is not None
        stop_second()  # the delivery under way still reaches `second`

    def second(event: TaskEvent) -> None:
        seen.append("second")

    bus.subscribe(TaskEvent, [EventKind.LOST], first)
    stop_second = bus.subscribe(TaskEvent, [EventKind.LOST], second)
    bus.publish(TaskEvent(EventKind.LOST, task()))
    bus.publish(TaskEvent(EventKind.LOST, task()))
    assert seen == ["first", "second", "first"]
    assert bus.subscribers(EventKind.LOST) == 1
    assert bus.wants(EventKind.LOST) and not bus.wants(EventKind.RESCUED)
