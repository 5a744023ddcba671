"""Internal records that cross the store boundary (frozen dataclasses, aware UTC times).

The records made once or more per task on the queue's hot path (`NewTask`, `ProgressUpdate`,
`Outcome`) are named tuples instead: just as immutable, and several times cheaper to build
than a frozen dataclass, whose `__init__` sets every field through `object.__setattr__`.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

from schedule.models import TaskStatus

JsonObject = dict[str, Any]


def utc(value: datetime | None) -> datetime | None:
    """A database time (naive UTC) as an aware UTC datetime."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def naive(value: datetime) -> datetime:
    """An aware time as the naive UTC value the database stores."""
    return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value


@dataclass(frozen=True)
class TaskRecord:
    """One row of `sync_tasks`."""

    id: str
    reference: str
    task_type: str
    status: TaskStatus
    priority: int
    data_source_id: str | None
    interface_id: str | None
    parameters: JsonObject
    progress: int
    message: str
    processed_rows: int
    total_rows: int | None
    error_count: int
    result: JsonObject | None
    error: str | None
    attempt: int
    max_attempts: int
    timeout_s: float | None
    retry_of: str | None
    dedupe_key: str | None
    callback_url: str | None
    run_after: datetime
    cancel_requested: bool
    lease_owner: str | None
    lease_expires_at: datetime | None
    created_at: datetime
    started_at: datetime | None
    updated_at: datetime
    finished_at: datetime | None
    # issue 6: external workers and completion callbacks
    service: str | None = None
    service_group: str | None = None
    temp: Any = None
    callback_status: str | None = None
    callback_attempts: int = 0
    callback_error: str | None = None

    @classmethod
    def from_row(cls, row: Mapping[Any, Any]) -> TaskRecord:
        """Build from a `sync_tasks` row mapping."""
        values = list(_FIELD_GETTER(row))
        values[_STATUS_AT] = TaskStatus(values[_STATUS_AT])
        values[_CANCEL_AT] = bool(values[_CANCEL_AT])
        for index in _TIME_AT:
            value = values[index]
            if value is not None and value.tzinfo is None:  # the common case, made cheap
                values[index] = value.replace(tzinfo=UTC)
            else:
                values[index] = utc(value)
        return cls.from_values(values)

    @classmethod
    def from_values(cls, values: Sequence[Any]) -> TaskRecord:
        """Build from values already converted, in field order, as the generated `__init__`
        would (the class has no `__post_init__`), minus its 35 `object.__setattr__` calls:
        those were a third of the cost of building a record, which the engine does twice per
        task (create and claim)."""
        record = object.__new__(cls)
        record.__dict__.update(zip(_TASK_FIELDS, values, strict=True))
        return record


_TASK_FIELDS = tuple(TaskRecord.__dataclass_fields__)
_TIME_FIELDS = (
    "run_after",
    "created_at",
    "updated_at",
    "lease_expires_at",
    "started_at",
    "finished_at",
)
_FIELD_GETTER = operator.itemgetter(*_TASK_FIELDS)
_STATUS_AT = _TASK_FIELDS.index("status")
_CANCEL_AT = _TASK_FIELDS.index("cancel_requested")
_TIME_AT = tuple(_TASK_FIELDS.index(name) for name in _TIME_FIELDS)


class NewTask(NamedTuple):
    """What is needed to enqueue a task (defaults already applied by the service)."""

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


@dataclass(frozen=True)
class AttemptRecord:
    """One execution attempt of a task."""

    attempt: int
    node_id: str
    started_at: datetime
    finished_at: datetime | None
    outcome: str | None
    error: str | None


@dataclass(frozen=True)
class RecordError:
    """A per-record error reported by a handler: which record, where, and why."""

    reason: str
    record: Any = None
    position: int | None = None


@dataclass(frozen=True)
class StoredRecordError:
    """A per-record error as stored."""

    id: int
    attempt: int
    position: int | None
    record: Any
    reason: str
    created_at: datetime


@dataclass(frozen=True)
class TaskFilter:
    """Filters of the task list."""

    status: TaskStatus | None = None
    task_type: str | None = None
    data_source_id: str | None = None
    search: str | None = None  # a reference or id prefix, or a dedupe key prefix


@dataclass(frozen=True)
class Page:
    """A 1-based page of a list."""

    page: int = 1
    size: int = 20

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.size


class ProgressUpdate(NamedTuple):
    """Live progress of a running attempt, flushed to the database at a bounded rate."""

    task_id: str
    attempt: int
    progress: int
    message: str
    processed_rows: int
    total_rows: int | None


class Outcome(NamedTuple):
    """How an attempt ended, as the engine reports it to the store."""

    task_id: str
    attempt: int
    status: TaskStatus  # completed, failed, cancelled, or pending (retry later)
    outcome: str  # attempt outcome: completed, failed, retry, cancelled, timeout
    result: JsonObject | None = None
    error: str | None = None
    retry_at: datetime | None = None
    progress: ProgressUpdate | None = None


@dataclass(frozen=True)
class HeartbeatReply:
    """Which leases a node still holds, and which of those tasks were asked to cancel."""

    held: frozenset[str]
    cancel_requested: frozenset[str]


@dataclass(frozen=True)
class Statistics:
    """Aggregates over tasks created since a moment."""

    since: datetime
    total: int
    by_status: dict[str, int]
    by_type: dict[str, int]
    success_rate: float | None
    avg_duration_s: float | None
    running_by_node: dict[str, int] = field(default_factory=dict)
    queue_length: int = 0


@dataclass(frozen=True)
class HourCount:
    """Tasks that finished within one hour, by final status (throughput chart)."""

    hour: datetime
    by_status: dict[str, int]


@dataclass(frozen=True)
class TaskRequest:
    """A create request as the API received it; the service fills in the defaults."""

    task_type: str
    parameters: JsonObject = field(default_factory=dict)
    priority: int | None = None
    data_source_id: str | None = None
    interface_id: str | None = None
    run_after: datetime | None = None
    max_attempts: int | None = None
    timeout_s: float | None = None
    dedupe_key: str | None = None
    callback_url: str | None = None


@dataclass(frozen=True)
class TaskDetail:
    """One task with its attempts (the running one included) for `GET /tasks/{id}`."""

    task: TaskRecord
    attempts: list[AttemptRecord]


@dataclass(frozen=True)
class BatchResult:
    """The result of one item of a batch cancel/retry."""

    id: str
    ok: bool
    status: str | None = None
    error: str | None = None
    task_id: str | None = None  # the new task of a retry


@dataclass(frozen=True)
class ExternalReport:
    """What an external worker reports on a task it claimed (`PUT /api/crontask/{id}`)."""

    status: str | None = None  # running | completed | failed; None: progress only
    progress: int | None = None
    message: str | None = None
    temp: Any = None
    has_temp: bool = False
    output: Any = None
    has_output: bool = False
    attempt: int | None = None  # fencing: refuse a report for an older attempt


@dataclass(frozen=True)
class CallbackDelivery:
    """A finished task whose completion callback is due, claimed for one delivery attempt."""

    task: TaskRecord
    attempt: int  # 1 for the first delivery attempt
