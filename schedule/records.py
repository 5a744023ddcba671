"""Internal records that cross the store boundary (frozen dataclasses, aware UTC times).

The task itself, `TaskRecord`, and what enqueuing one takes, `NewTask`, are in `schedule.task`.
The records made once or more per task on the queue's hot path (`ProgressUpdate`, `Outcome`) are
named tuples instead: just as immutable, and several times cheaper to build than a frozen
dataclass, whose `__init__` sets every field through `object.__setattr__`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from schedule.task import JsonObject, TaskRecord, TaskStatus


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
    schedule_id: str | None = None
    search: str | None = None  # a reference or id prefix, or a dedupe key prefix


#: The task list counts the tasks that match up to this many; beyond, its total says "more
#: than COUNT_CAP" (an exact count of a million rows is most of a second, and on MariaDB each
#: thousand index entries counted cost about 0.25 ms of every page's answer). Pages by number
#: stay within the counted part (the API refuses an offset at or past it); deeper pages go
#: through a cursor (`Page.after`), whose cost does not grow with depth.
COUNT_CAP = 1_000


@dataclass(frozen=True)
class Keyset:
    """A place in the task list's order (newest first: `created_at`, then `id`, descending):
    a page that starts after it begins with the next task in that order."""

    created_at: datetime
    id: str


@dataclass(frozen=True)
class Page:
    """A 1-based page of a list; for the task list, `after` (a cursor) instead of a number
    starts the page right after that place, and `before` ends it right before that place (the
    page just newer), both at any depth for the same cost."""

    page: int = 1
    size: int = 20
    after: Keyset | None = None
    before: Keyset | None = None

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.size


class TaskPage(NamedTuple):
    """A page of the task list: its tasks, how many match (`total`, exact when `exact`; else
    more than `total` match and `total` is the count's cap), where the next page starts (None
    on the last page) and where the previous one ends (the place of this page's first task;
    None on the first page)."""

    tasks: list[TaskRecord]
    total: int
    exact: bool
    next: Keyset | None
    previous: Keyset | None


class ErrorPage(NamedTuple):
    """A page of a task's record errors, in the order they were recorded: how many the task
    has (`total`, exact when `exact`; else more than `total`, the cap of the task list), and
    the ids the next page starts after and the previous one ends before (None at the ends)."""

    errors: list[StoredRecordError]
    total: int
    exact: bool
    next: int | None
    previous: int | None


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
    """Aggregates since a moment: tasks that finished since then, and pending and running now."""

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
    schedule_id: str | None = None  # set by the scheduler only, never by an API caller
    scheduled_for: datetime | None = None


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
