"""What a task is: its statuses, what enqueuing one takes, and its fields, each defined once.

`TaskRecord` is the one definition of a task's fields. Each says its column in `sync_tasks`,
its name in the API's task JSON (`api=`, or `internal=True` when the API does not show it), its
description there (`doc=`) and its value in a new task (`new=`: a constant, `Request` for a
field of the `NewTask`, `New` for an id, a reference or the time of the create, `Rule` for
anything computed). From it come the table (`schedule.models`), the record's conversions from
stored rows (`schedule.columns`), a new task's values (`new_task_values`), the SQLite hot paths'
column lists and rows (`schedule.store.sqlite`) and the task JSON with its response model
(`controllers.models`). How to add a field: docs/architecture.md, "Adding a field to a task".
"""

from __future__ import annotations

import enum
import operator
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, NamedTuple

from sqlalchemy import JSON, BigInteger, Boolean, Float, Integer, String, Text

from schedule.clock import utc
from schedule.columns import Kind, RowField, TableRow, Timestamp, column

JsonObject = dict[str, Any]
CallbackStatus = Literal["pending", "delivered", "failed"]


class TaskStatus(enum.StrEnum):
    """Lifecycle of a task (DESIGN.md, Task model)."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in FINISHED


FINISHED = frozenset({TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED})


class NewTask(NamedTuple):
    """What is needed to enqueue a task (defaults already applied by the service).

    A named tuple, like the other records made once or more per task on the queue's hot path
    (`Outcome`, `ProgressUpdate`): several times cheaper to build than a frozen dataclass."""

    task_type: str
    parameters: JsonObject
    max_attempts: int
    priority: int = 0
    data_source_id: str | None = None
    interface_id: str | None = None
    run_after: datetime | None = None
    timeout_s: float | None = None
    dedupe_key: str | None = None
    callback_url: str | None = None
    retry_of: str | None = None
    service: str | None = None  # external tasks: who may claim it (GET /api/crontask)
    service_group: str | None = None
    schedule_id: str | None = None  # the schedule whose fire created it
    scheduled_for: datetime | None = None  # that fire's scheduled time (aware UTC)


class New(enum.Enum):
    """Values of a new task that no constant gives (`column(new=...)`)."""

    ID = "a random UUID4 string (schedule.ids)"
    REFERENCE = "a random public reference (schedule.ids)"
    NOW = "the time of the create"


@dataclass(frozen=True)
class Request:
    """A new task's value: the `NewTask` field `name` (by default the field's own name)."""

    name: str | None = None


@dataclass(frozen=True)
class Rule:
    """A new task's value computed from its `NewTask` and the time of the create."""

    compute: Callable[[NewTask, datetime], Any]


def _run_after(item: NewTask, now: datetime) -> datetime:
    return utc(item.run_after) or now


def _scheduled_for(item: NewTask, now: datetime) -> datetime | None:
    return utc(item.scheduled_for)


def _callback_status(item: NewTask, now: datetime) -> CallbackStatus | None:
    return "pending" if item.callback_url else None


class TaskRecord(TableRow):
    """One task: one row of `sync_tasks` (times aware UTC)."""

    id: str = column(String(36), primary_key=True, new=New.ID)
    reference: str = column(String(11), unique=True, new=New.REFERENCE)
    task_type: str = column(String(64), new=Request())
    status: TaskStatus = column(String(16), new=TaskStatus.PENDING)
    priority: int = column(Integer, server_default=0, new=Request())
    data_source_id: str | None = column(String(64), new=Request())
    interface_id: str | None = column(String(64), new=Request())
    parameters: JsonObject = column(JSON, new=Request())
    progress: int = column(Integer, server_default=0)
    message: str = column(Text, new="")
    processed_rows: int = column(BigInteger, server_default=0)
    total_rows: int | None = column(BigInteger)
    error_count: int = column(Integer, server_default=0)
    result: JsonObject | None = column(JSON)
    error: str | None = column(Text)
    attempt: int = column(Integer, server_default=0)
    max_attempts: int = column(Integer, new=Request())
    timeout_s: float | None = column(Float, new=Request())
    retry_of: str | None = column(String(36), new=Request())
    dedupe_key: str | None = column(String(255), new=Request())
    # Equal to dedupe_key while the task is unfinished, NULL after: a unique index on it
    # enforces "one unfinished task per key" on every dialect (NULLs never collide).
    dedupe_active: str | None = column(
        String(255), unique=True, internal=True, new=Request("dedupe_key")
    )
    callback_url: str | None = column(String(2048), new=Request())
    run_after: datetime = column(Timestamp, new=Rule(_run_after))
    cancel_requested: bool = column(Boolean, server_default=False)
    lease_owner: str | None = column(String(128))
    lease_expires_at: datetime | None = column(Timestamp, internal=True)
    created_at: datetime = column(Timestamp, new=New.NOW)
    started_at: datetime | None = column(Timestamp)
    updated_at: datetime = column(Timestamp, new=New.NOW)
    finished_at: datetime | None = column(Timestamp)
    # External workers (seed 003): `service`/`service_group` are copied from the parameters of
    # an `external` task at create time, so that `GET /api/crontask` filters on indexed
    # columns, not JSON; `temp` is the intermediate state an external worker reports.
    service: str | None = column(
        String(64), new=Request(), doc="external tasks: the service that may claim it"
    )
    service_group: str | None = column(
        String(64), new=Request(), api="group", doc="external tasks: the group within the service"
    )
    temp: Any = column(JSON, doc="external tasks: the intermediate state last reported")
    # The completion callback's delivery state: `pending` (to deliver once the task finished),
    # `delivered` or `failed`; `callback_next_at` is when the sender may try next (a short
    # claim while it sends, the backoff after a failure), so deliveries survive restarts and
    # are shared by nodes.
    callback_status: CallbackStatus | None = column(String(16), new=Rule(_callback_status))
    callback_attempts: int = column(Integer, server_default=0)
    callback_error: str | None = column(Text)
    callback_next_at: datetime | None = column(Timestamp, internal=True)
    # Schedules: the schedule whose fire created the task and that fire's time. A unique
    # index on the pair (schedule.models) makes a fire enqueue at most one task, whichever
    # daemon claims it.
    schedule_id: str | None = column(
        String(64), new=Request(), doc="the schedule whose fire created the task"
    )
    scheduled_for: datetime | None = column(
        Timestamp, new=Rule(_scheduled_for), doc="the scheduled time of that fire"
    )


TASK_FIELDS = TaskRecord.row_fields()


def is_constant(new: Any) -> bool:
    """Whether a field's `new=` is a constant (not `Request`, `New` or `Rule`)."""
    return not isinstance(new, Request | New | Rule)


def _written_when_new(field: RowField) -> bool:
    """Whether a new task's INSERT names this column: not when the value is a constant that
    the column's default already gives (its server default, or NULL). JSON columns are always
    written, as SQLAlchemy's `JSON` type writes None: the text `null`."""
    new = field.spec.new
    return not is_constant(new) or field.kind is Kind.JSON or new != field.spec.server_default


#: The columns a new task's INSERT sets; every other one starts at its default.
NEW_FIELDS = tuple(f for f in TASK_FIELDS if _written_when_new(f))


def new_task_values(item: NewTask, now: datetime, ids: tuple[str, str]) -> tuple[Any, ...]:
    """A new task's field values, in field order, as each field's `new=` says: `now` is the
    time of the create (aware UTC), `ids` the task's (id, reference) from `new_ids`."""
    computed = tuple([compute(item, now) for compute in _COMPUTE])
    return _PICK(item + ids + (now,) + computed + _CONSTANTS)


def _plan() -> tuple[tuple[Rule, ...], tuple[Any, ...], Callable[[Any], tuple[Any, ...]]]:
    """Where each field's new value comes from, as a position in the tuple `new_task_values`
    builds: the `NewTask`'s fields, then id, reference and now, the rules' results, the
    constants."""
    rules: list[Rule] = []
    constants: list[Any] = []
    sources: list[tuple[str, int]] = []
    for f in TASK_FIELDS:
        new = f.spec.new
        if isinstance(new, Request):
            sources.append(("request", NewTask._fields.index(new.name or f.name)))
        elif isinstance(new, New):
            sources.append(("special", _SPECIALS.index(new)))
        elif isinstance(new, Rule):
            sources.append(("rule", len(rules)))
            rules.append(new)
        else:
            sources.append(("constant", len(constants)))
            constants.append(new)
    offset = {"request": 0, "special": len(NewTask._fields)}
    offset["rule"] = offset["special"] + len(_SPECIALS)
    offset["constant"] = offset["rule"] + len(rules)
    pick = operator.itemgetter(*(offset[kind] + index for kind, index in sources))
    return tuple(rules), tuple(constants), pick


_SPECIALS = (New.ID, New.REFERENCE, New.NOW)
_RULES, _CONSTANTS, _PICK = _plan()
_COMPUTE = tuple(rule.compute for rule in _RULES)
