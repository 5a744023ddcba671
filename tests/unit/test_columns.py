"""Records whose fields are columns: what is derived from one definition (the table, the
conversions, the API shape, a new task's values)."""

from __future__ import annotations

import dataclasses
import enum
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import JSON, Boolean, Integer, MetaData, String, Table

from controllers.models import TaskOut, task_json
from schedule.columns import Kind, TableRow, Timestamp, column, table_columns
from schedule.models import sync_tasks
from schedule.task import TASK_FIELDS, NewTask, TaskRecord, TaskStatus, new_task_values

NOW = datetime(2026, 5, 1, 8, 30, 0, 250000, tzinfo=UTC)


class Colour(enum.StrEnum):
    RED = "red"
    BLUE = "blue"


class Gadget(TableRow):
    """A small record of every kind of field."""

    id: str = column(String(8), primary_key=True)
    colour: Colour = column(String(8))
    size: int = column(Integer, server_default=3)
    label: str | None = column(String(20), api="name", doc="what it is called")
    seen_at: datetime | None = column(Timestamp)
    data: Any = column(JSON)
    on: bool = column(Boolean, server_default=False, internal=True)


def test_the_table_follows_the_fields() -> None:
    table = Table("gadgets", MetaData(), *table_columns(Gadget))
    assert list(table.c.keys()) == ["id", "colour", "size", "label", "seen_at", "data", "on"]
    nullable = {c.name for c in table.c if c.nullable}
    assert nullable == {"label", "seen_at", "data"}  # the types that admit None (and Any)
    assert table.c.id.primary_key and not table.c.id.nullable
    assert table.c.size.server_default is not None
    assert [f.kind for f in Gadget.row_fields()] == [
        Kind.PLAIN,
        Kind.ENUM,
        Kind.PLAIN,
        Kind.PLAIN,
        Kind.TIME,
        Kind.JSON,
        Kind.BOOL,
    ]
    assert [f.api_name for f in Gadget.row_fields()] == [
        "id",
        "colour",
        "size",
        "name",
        "seen_at",
        "data",
        None,
    ]


def test_rows_become_records_with_their_conversions() -> None:
    stored = {
        "id": "g1",
        "colour": "blue",
        "size": 3,
        "label": None,
        "seen_at": datetime(2026, 5, 1, 8, 30),  # naive UTC, as the database gives it
        "data": {"k": [1]},
        "on": 1,
    }
    gadget = Gadget.from_row(stored)
    seen = datetime(2026, 5, 1, 8, 30, tzinfo=UTC)
    assert gadget == Gadget("g1", Colour.BLUE, 3, None, seen, {"k": [1]}, True)
    assert gadget.colour is Colour.BLUE and gadget.on is True
    assert Gadget.from_values(list(vars(gadget).values())) == gadget
    with pytest.raises(dataclasses.FrozenInstanceError):
        gadget.size = 4  # type: ignore[misc]


def test_a_field_without_a_column_is_refused() -> None:
    with pytest.raises(TypeError, match="not defined with column"):

        class Broken(TableRow):
            id: str = column(String(8), primary_key=True)
            plain: int = 0


def test_sync_tasks_is_the_task_record() -> None:
    assert list(sync_tasks.c.keys()) == [f.name for f in TASK_FIELDS]
    assert {c.name for c in sync_tasks.c if not c.nullable} == {
        f.name for f in TASK_FIELDS if not f.nullable
    }


def test_a_new_task_takes_the_values_its_fields_say() -> None:
    plain = TaskRecord.from_values(new_task_values(NewTask("noop", {}, 3), NOW, ("i", "R")))
    assert (plain.id, plain.reference, plain.status, plain.attempt) == (
        "i",
        "R",
        TaskStatus.PENDING,
        0,
    )
    assert plain.run_after == plain.created_at == plain.updated_at == NOW
    assert (plain.message, plain.progress, plain.cancel_requested) == ("", 0, False)
    assert plain.callback_status is None and plain.dedupe_active is None
    later = NOW + timedelta(hours=1)
    new = NewTask("noop", {"a": 1}, 2, 5, dedupe_key="k", callback_url="http://h/", run_after=later)
    full = TaskRecord.from_values(new_task_values(new, NOW, ("i", "R")))
    assert (full.priority, full.parameters, full.max_attempts) == (5, {"a": 1}, 2)
    assert (full.dedupe_key, full.dedupe_active, full.callback_status) == ("k", "k", "pending")
    assert full.run_after == later and full.created_at == NOW


def test_the_task_json_and_its_model_come_from_the_definition() -> None:
    new = NewTask("external", {}, 3, service="s", service_group="g")
    task = TaskRecord.from_values(new_task_values(new, NOW, ("i", "R")))
    body = task_json(task)
    assert list(body) == list(TaskOut.model_fields)
    hidden = {"dedupe_active", "lease_expires_at", "callback_next_at", "service_group"}
    assert hidden.isdisjoint(body) and body["group"] == "g"
    assert (body["status"], body["created_at"], body["finished_at"]) == (
        "pending",
        "2026-05-01T08:30:00.250Z",
        None,
    )
    TaskOut.model_validate(body)
    schema = TaskOut.model_json_schema()
    assert schema["properties"]["group"]["description"].startswith("external tasks")
