"""Request and response models of the task API (pydantic), and the task JSON shape."""

from __future__ import annotations

import base64
import operator
import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)

from engine.validation import NoBoolNumbers
from schedule.books import BookItem, BookRecord
from schedule.columns import Kind, RowField
from schedule.nodes import NodeRecord
from schedule.periodic import ScheduleView
from schedule.records import (
    COUNT_CAP,
    AttemptRecord,
    BatchResult,
    ErrorPage,
    ExternalReport,
    HourCount,
    Keyset,
    Page,
    StoredRecordError,
    TaskPage,
    TaskRequest,
)
from schedule.task import TASK_FIELDS, TaskRecord, TaskStatus
from schedule.triggers import zone
from schedule.waiting import Waiting

Priority = Annotated[int, Field(ge=-100, le=100)]
MaxAttempts = Annotated[int, Field(ge=1, le=20)]
TimeoutS = Annotated[float, Field(gt=0, le=7 * 86400)]
ShortId = Annotated[str, Field(min_length=1, max_length=64)]
#: Times the API takes: aware, and within what every database and `datetime` can hold in UTC
#: (`0001-01-01T00:00:00+14:00` is year 0 in UTC, which Python cannot even represent).
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9999, 12, 30, tzinfo=UTC)


#: How a time the API takes begins: a date and the `T` (or a space) before the time of day.
_ISO_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ]")


def _iso_text(value: Any) -> Any:
    """Only ISO 8601 text is a time: pydantic would also read a number (or a numeric string,
    as every query value is) as seconds since 1970, which the document does not offer."""
    if isinstance(value, datetime) or (isinstance(value, str) and _ISO_TIME.match(value)):
        return value
    raise ValueError("must be an ISO 8601 date and time, such as 2024-01-31T12:00:00Z")


def _in_range(value: datetime) -> datetime:
    try:
        utc_value = value.astimezone(UTC)
    except OverflowError:
        utc_value = None
    if utc_value is None or not EARLIEST <= utc_value <= LATEST:
        raise ValueError(f"must be between {iso(EARLIEST)} and {iso(LATEST)}")
    return value


ApiTime = Annotated[AwareDatetime, BeforeValidator(_iso_text), AfterValidator(_in_range)]


class Strict(NoBoolNumbers):
    """Base of request models: unknown fields are refused, `true` is not a number."""

    model_config = ConfigDict(extra="forbid")


class CreateTaskBody(Strict):
    """POST /api/sync/tasks."""

    task_type: str = Field(min_length=1, max_length=64)
    data_source_id: ShortId | None = None
    interface_id: ShortId | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    priority: Priority | None = None
    run_after: ApiTime | None = None
    max_attempts: MaxAttempts | None = None
    timeout_s: TimeoutS | None = None
    dedupe_key: str | None = Field(None, min_length=1, max_length=255)
    callback_url: str | None = Field(None, max_length=2048)

    def to_request(self) -> TaskRequest:
        """The service's view of this request."""
        return TaskRequest(**self.model_dump())


class BatchCreateBody(Strict):
    """POST /api/sync/tasks/batch."""

    tasks: list[CreateTaskBody] = Field(min_length=1, max_length=1000)


def _left_out(schema: dict[str, Any]) -> None:
    """The document of a field that may be left out but not sent as null: its type without the
    `null` branch, and no `default: null` (`None` only marks a field that was not sent)."""
    schema.pop("default", None)
    branches = [b for b in schema.pop("anyOf", []) if b != {"type": "null"}]
    if len(branches) == 1:
        schema.update(branches[0])
    elif branches:
        schema["anyOf"] = branches


class UpdateTaskBody(Strict):
    """PUT /api/sync/tasks/{id}: `config` is accepted as an alias of `parameters` (seed 004).

    A field left out keeps its value; none may be null, and the document says so.
    """

    parameters: dict[str, Any] | None = Field(None, json_schema_extra=_left_out)
    priority: Priority | None = Field(None, json_schema_extra=_left_out)
    run_after: ApiTime | None = Field(None, json_schema_extra=_left_out)
    max_attempts: MaxAttempts | None = Field(None, json_schema_extra=_left_out)

    @field_validator("*", mode="before")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        if value is None:  # a field left out keeps its value; null cannot be stored
            raise ValueError("may not be null; leave the field out to keep its value")
        return value

    @model_validator(mode="before")
    @classmethod
    def _config_alias(cls, data: Any) -> Any:
        if isinstance(data, dict) and "config" in data:
            if "parameters" in data:
                raise ValueError("give either parameters or config, not both")
            data = {("parameters" if k == "config" else k): v for k, v in data.items()}
        return data

    def changes(self) -> dict[str, Any]:
        """Only the fields that were sent."""
        return self.model_dump(exclude_unset=True)


class IdsBody(Strict):
    """POST /api/sync/tasks/batch/cancel and /batch/retry."""

    ids: list[str] = Field(min_length=1, max_length=1000)


class PlacedPages(Strict):
    """The paging of a list that counts up to COUNT_CAP: by number within the counted part,
    and through the places of its pages at any depth (`cursor`: the page after a page, from its
    `pagination.next_cursor`; `before`: the page before it, from its `prev_cursor`). `size`
    comes before `page`: the bound on `page` reads it."""

    size: int = Field(20, ge=1, le=500)
    page: int = Field(
        1,
        ge=1,
        description=f"by number within the first {COUNT_CAP:,} only: (page - 1) * size must "
        f"be below {COUNT_CAP}; deeper pages through `cursor`",
    )
    cursor: str | None = Field(
        None,
        max_length=200,
        description="`pagination.next_cursor` of a page: the page after it, at any depth "
        "(instead of `page`)",
    )
    before: str | None = Field(
        None,
        max_length=200,
        description="`pagination.prev_cursor` of a page: the page before it, at any depth "
        "(instead of `page` and `cursor`)",
    )

    @staticmethod
    def read_cursor(text: str) -> object:
        """The place a cursor of this list names; ValueError when it is not one."""
        raise NotImplementedError

    @field_validator("page")
    @classmethod
    def _counted(cls, value: int, info: ValidationInfo) -> int:
        size = info.data.get("size")
        if size is not None and (value - 1) * size >= COUNT_CAP:
            last = (COUNT_CAP - 1) // size + 1
            raise ValueError(
                f"pages by number reach the first {COUNT_CAP} only (at size {size}, page "
                f"{last} at most); to go deeper follow pagination.next_cursor"
            )
        return value

    @field_validator("cursor")
    @classmethod
    def _cursor(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None:
            cls.read_cursor(value)  # ValueError: a 422 naming the cursor
            if info.data.get("page", 1) != 1:
                raise ValueError("give page or cursor, not both")
        return value

    @field_validator("before")
    @classmethod
    def _before(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None:
            cls.read_cursor(value)  # ValueError: a 422 naming `before`
            if info.data.get("page", 1) != 1:
                raise ValueError("give page or before, not both")
            if info.data.get("cursor") is not None:
                raise ValueError("give cursor or before, not both")
        return value


class ListQuery(PlacedPages):
    """GET /api/sync/tasks query."""

    status: TaskStatus | None = None
    task_type: str | None = Field(None, max_length=64)
    data_source_id: str | None = Field(None, max_length=64)
    schedule_id: str | None = Field(None, max_length=64)
    q: str | None = Field(
        None,
        min_length=1,
        max_length=255,
        description="a reference or id prefix, or a dedupe key prefix (ASCII case ignored)",
    )

    @staticmethod
    def read_cursor(text: str) -> object:
        return decode_cursor(text)

    @field_validator("q")
    @classmethod
    def _trimmed(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must not be blank")
        return value.strip() if value is not None else None

    def to_page(self) -> Page:
        """The page asked for: after the cursor's place, before the `before` place, or by
        number."""
        after = decode_cursor(self.cursor) if self.cursor is not None else None
        before = decode_cursor(self.before) if self.before is not None else None
        return Page(self.page, self.size, after, before)


class ErrorsQuery(PlacedPages):
    """GET /api/sync/tasks/{id}/errors query."""

    @staticmethod
    def read_cursor(text: str) -> object:
        return decode_error_cursor(text)

    def places(self) -> tuple[int | None, int | None]:
        """The error ids the page starts after and ends before (None: not given)."""
        after = decode_error_cursor(self.cursor) if self.cursor is not None else None
        before = decode_error_cursor(self.before) if self.before is not None else None
        return after, before


_CURSOR_ID = re.compile(r"[0-9A-Za-z-]{1,36}")
_NOT_A_CURSOR = "not a cursor of this list (use pagination.next_cursor or prev_cursor)"


def encode_cursor(created_at: datetime, task_id: str) -> str:
    """The cursor of a place in the task list (`schedule.records.Keyset`): opaque URL-safe
    text that `decode_cursor` reads back."""
    stamp = created_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")
    return base64.urlsafe_b64encode(f"{stamp}|{task_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> Keyset:
    """The place a cursor names; ValueError when it is not one `encode_cursor` made."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        stamp, task_id = raw.split("|")
        created = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=UTC)
    except ValueError:  # binascii.Error and UnicodeDecodeError are ValueErrors
        raise ValueError(_NOT_A_CURSOR) from None
    if not _CURSOR_ID.fullmatch(task_id):
        raise ValueError(_NOT_A_CURSOR)
    return Keyset(created, task_id)


def encode_error_cursor(error_id: int) -> str:
    """The cursor of a place in a task's record errors: opaque URL-safe text."""
    return base64.urlsafe_b64encode(f"error|{error_id}".encode()).decode().rstrip("=")


def decode_error_cursor(cursor: str) -> int:
    """The error id an `encode_error_cursor` cursor names; ValueError for any other text."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except ValueError:
        raw = ""
    kind, _, number = raw.partition("|")
    if kind != "error" or not number.isascii() or not number.isdigit() or len(number) > 18:
        raise ValueError(_NOT_A_CURSOR)
    return int(number)


class PageQuery(Strict):
    """A page of a sub-list."""

    page: int = Field(1, ge=1, le=1_000_000)
    size: int = Field(20, ge=1, le=500)


class StatsQuery(Strict):
    """GET /api/sync/tasks/statistics query."""

    since: ApiTime | None = None

    @field_validator("since")
    @classmethod
    def _not_future(cls, value: datetime | None) -> datetime | None:
        if value is not None and value > datetime.now(UTC) + timedelta(days=1):
            raise ValueError("since is in the future")
        return value


class LiveQuery(Strict):
    """GET /api/ws query: the API token, for browsers (they cannot set a websocket header)."""

    token: str | None = Field(None, description="API token, instead of an Authorization header")


class ThroughputQuery(Strict):
    """GET /api/sync/tasks/throughput query: how many hours back (the current one included)."""

    hours: int = Field(24, ge=1, le=24 * 31)


def iso(value: datetime | None) -> str | None:
    """ISO 8601 UTC with a `Z`, milliseconds."""
    if value is None:
        return None
    if value.tzinfo is not UTC:  # the stores' times are UTC already: no conversion
        value = value.astimezone(UTC)
    return value.isoformat(timespec="milliseconds")[:-6] + "Z"


def task_json(task: TaskRecord) -> dict[str, Any]:
    """The task shape every endpoint returns (DESIGN.md, Task model): the fields the task's
    definition (`schedule.task.TaskRecord`) shows, by their API names, in field order; times
    as `iso` text, the status as its value."""
    values = list(_API_VALUES(task))
    for index in _API_TIMES:
        values[index] = iso(values[index])
    for index in _API_ENUMS:
        values[index] = values[index].value
    out = dict(zip(_API_NAMES, values, strict=True))
    out["waiting"] = None  # said by GET of one task and the list (`waiting_json`)
    return out


def waiting_json(waiting: Waiting | None) -> dict[str, Any] | None:
    """Why a pending task waits (`schedule.waiting`); None for other tasks."""
    if waiting is None:
        return None
    slots = None
    if waiting.slots_total is not None:
        slots = {"busy": waiting.slots_busy, "total": waiting.slots_total}
    limit = None
    if waiting.type_limit is not None:
        limit = {"running": waiting.type_running, "limit": waiting.type_limit}
    return {
        "reason": waiting.reason,
        "due_at": iso(waiting.due_at),
        "next_attempt": waiting.next_attempt,
        "max_attempts": waiting.max_attempts,
        "last_error": waiting.last_error,
        "slots": slots,
        "position": waiting.position,
        "type_limit": limit,
    }


def node_json(node: NodeRecord) -> dict[str, Any]:
    """One daemon of `GET /api/nodes`."""
    return {
        "node_id": node.node_id,
        "version": node.version,
        "alive": node.alive,
        "started_at": iso(node.started_at),
        "heartbeat_at": iso(node.heartbeat_at),
        "stopped_at": iso(node.stopped_at),
        "slots": {"busy": node.busy, "total": node.slots},
        "running_tasks": [
            {
                "id": t.id,
                "reference": t.reference,
                "task_type": t.task_type,
                "progress": t.progress,
                "started_at": iso(t.started_at),
            }
            for t in node.running
        ],
    }


#: The task fields the API shows, with their names there.
_API = tuple((name, f) for f in TASK_FIELDS if (name := f.api_name) is not None)
_API_NAMES = tuple(name for name, _ in _API)
_API_VALUES = operator.attrgetter(*(f.name for _, f in _API))
_API_TIMES = tuple(i for i, (_, f) in enumerate(_API) if f.kind is Kind.TIME)
_API_ENUMS = tuple(i for i, (_, f) in enumerate(_API) if f.kind is Kind.ENUM)


def _api_type(field: RowField) -> Any:
    """A task field's type in the task JSON: times are ISO text."""
    if field.kind is Kind.TIME:
        return str | None if field.nullable else str
    return field.hint


def attempt_json(attempt: AttemptRecord) -> dict[str, Any]:
    """One entry of a task's `attempts`."""
    return {
        "attempt": attempt.attempt,
        "node_id": attempt.node_id,
        "started_at": iso(attempt.started_at),
        "finished_at": iso(attempt.finished_at),
        "outcome": attempt.outcome,
        "error": attempt.error,
    }


def record_error_json(error: StoredRecordError) -> dict[str, Any]:
    """One per-record error."""
    return {
        "id": error.id,
        "attempt": error.attempt,
        "position": error.position,
        "record": error.record,
        "reason": error.reason,
        "created_at": iso(error.created_at),
    }


def batch_json(result: BatchResult) -> dict[str, Any]:
    """One item of a batch cancel/retry answer."""
    out: dict[str, Any] = {"id": result.id, "ok": result.ok}
    if result.ok:
        out["status"] = result.status
        if result.task_id is not None:
            out["task_id"] = result.task_id
    else:
        out["error"] = result.error
    return out


def pagination_json(page: int, size: int, total: int) -> dict[str, int]:
    """The `pagination` object of list answers."""
    return {"page": page, "size": size, "total": total, "total_pages": -(-total // size)}


def task_pagination_json(page: int, size: int, found: TaskPage) -> dict[str, Any]:
    """The `pagination` object of the task list: as `pagination_json`, with whether the
    total is exact (else more than `total` tasks match), the next page's cursor and the
    previous page's (`before`)."""
    return {
        **pagination_json(page, size, found.total),
        "total_exact": found.exact,
        "next_cursor": _cursor_of(found.next),
        "prev_cursor": _cursor_of(found.previous),
    }


def errors_pagination_json(page: int, size: int, found: ErrorPage) -> dict[str, Any]:
    """The `pagination` object of a task's record errors: the task list's shape."""
    return {
        **pagination_json(page, size, found.total),
        "total_exact": found.exact,
        "next_cursor": None if found.next is None else encode_error_cursor(found.next),
        "prev_cursor": None if found.previous is None else encode_error_cursor(found.previous),
    }


def _cursor_of(place: Keyset | None) -> str | None:
    return None if place is None else encode_cursor(place.created_at, place.id)


def throughput_json(hours: list[HourCount]) -> dict[str, Any]:
    """The answer of GET /api/sync/tasks/throughput."""
    return {
        "hours": len(hours),
        "since": iso(hours[0].hour) if hours else None,
        "buckets": [{"hour": iso(h.hour), **h.by_status} for h in hours],
    }


# ---- schedules, partnumber books, seed-000 task shape -----------------------------------------


class BookItemsQuery(PageQuery):
    """GET /api/admin/pricing/partnumber-books/{version}/items query."""

    partnumber: str | None = Field(None, min_length=1, max_length=255)


class CreateBookBody(Strict):
    """POST /api/admin/pricing/partnumber-books: an empty object or no body; `priority` of the
    snapshot task (when a snapshot asked for here is still unfinished, that one is answered)."""

    priority: Priority | None = None


class UploadQuery(Strict):
    """Query of an upload that starts a task: the task's `priority`."""

    priority: Priority | None = None


ScheduleId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_.-]*$")]


class TriggerBody(Strict):
    """A schedule's trigger: exactly one of `cron` (five fields), `every_s` (at least 1 s) or
    `at` (one fire, an ISO time with its offset)."""

    cron: str | None = Field(None, min_length=1, max_length=255, json_schema_extra=_left_out)
    every_s: float | None = Field(None, json_schema_extra=_left_out)
    at: ApiTime | None = Field(None, json_schema_extra=_left_out)

    @model_validator(mode="after")
    def _one(self) -> TriggerBody:
        given = [k for k in ("cron", "every_s", "at") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of cron, every_s, at")
        return self

    def spec(self) -> dict[str, Any]:
        """The trigger as `schedule.periodic.trigger_from` takes it."""
        return {k: v for k, v in self.model_dump().items() if v is not None}


class ScheduleBody(Strict):
    """POST /api/schedules (with `id`) and PUT /api/schedules/{id} (without)."""

    id: ScheduleId | None = Field(None, json_schema_extra=_left_out)
    name: str | None = Field(None, max_length=255)
    task_type: str = Field(min_length=1, max_length=64)
    trigger: TriggerBody
    parameters: dict[str, Any] = Field(default_factory=dict)
    priority: Priority | None = None
    data_source_id: ShortId | None = None
    interface_id: ShortId | None = None
    max_attempts: MaxAttempts | None = None
    timeout_s: TimeoutS | None = None
    timezone: str | None = Field(None, min_length=1, max_length=64)
    start_at: ApiTime | None = None
    end_at: ApiTime | None = None
    jitter_s: float = Field(0.0, ge=0, le=86400)
    overlap: Literal["skip", "queue_one", "cancel_previous", "allow"] = "skip"
    catch_up: Literal["none", "latest", "all"] = "latest"
    catch_up_window_s: float | None = Field(None, gt=0, le=366 * 86400)
    paused: bool = False
    pause_note: str | None = Field(None, max_length=2000)


class PauseBody(Strict):
    """POST /api/schedules/{id}/pause: why (optional)."""

    note: str | None = Field(None, max_length=2000)


class BackfillBody(Strict):
    """POST /api/schedules/{id}/backfill: the past range whose fires to enqueue."""

    start: ApiTime
    end: ApiTime


class PreviewBody(Strict):
    """POST /api/schedule-preview: a trigger to check and its next fires."""

    trigger: TriggerBody
    timezone: str | None = Field(None, min_length=1, max_length=64)
    start_at: ApiTime | None = None
    end_at: ApiTime | None = None


def schedule_json(view: ScheduleView) -> dict[str, Any]:
    """One schedule (`GET /api/schedules`, and with `runs` one schedule's page)."""
    r = view.record
    out: dict[str, Any] = {
        "id": r.id,
        "name": r.name,
        "task_type": r.task_type,
        "trigger": r.trigger,
        "description": view.description,
        "timezone": view.timezone,
        "parameters": r.parameters or {},
        "priority": r.priority,
        "data_source_id": r.data_source_id,
        "interface_id": r.interface_id,
        "max_attempts": r.max_attempts,
        "timeout_s": r.timeout_s,
        "start_at": iso(r.start_at),
        "end_at": iso(r.end_at),
        "jitter_s": r.jitter_s or 0.0,
        "overlap": r.overlap_policy.value,
        "catch_up": r.catch_up_policy.value,
        "catch_up_window_s": r.catch_up_window_s,
        "paused": r.paused,
        "pause_note": r.pause_note,
        "origin": r.origin or "builtin",
        "managed_by": view.managed_by,
        "next_run_at": iso(view.next_fires[0]) if view.next_fires else None,
        "next_fires": [
            {"utc": iso(f), "local": f.astimezone(zone(view.timezone)).isoformat()}
            for f in view.next_fires
        ],
        "last_run": None if view.last_run is None else run_json(view.last_run),
        "last_error": r.last_error,
        "last_error_at": iso(r.last_error_at),
        "created_at": iso(r.created_at),
        "updated_at": iso(r.updated_at),
    }
    if view.runs is not None:
        out["runs"] = [run_json(t) for t in view.runs]
    return out


def run_json(task: TaskRecord) -> dict[str, Any]:
    """One run of a schedule: its task's id, status and times."""
    return {
        "task_id": task.id,
        "status": task.status.value,
        "scheduled_for": iso(task.scheduled_for),
        "created_at": iso(task.created_at),
        "finished_at": iso(task.finished_at),
    }


def book_json(book: BookRecord) -> dict[str, Any]:
    """One partnumber book."""
    return {
        "id": book.id,
        "version": book.version,
        "is_active": book.is_active,
        "created_at": iso(book.created_at),
        "item_count": book.item_count,
        "task_id": book.task_id,
    }


def book_item_json(item: BookItem) -> dict[str, Any]:
    """One item of a partnumber book."""
    return {
        "partnumber": item.partnumber,
        "vendor": item.vendor,
        "lot_name": item.lot_name,
        "qty": item.qty,
        "is_primary_pn": item.is_primary_pn,
        "description": item.description,
    }


SEED000_STATUS = {
    TaskStatus.PENDING: "running",
    TaskStatus.RUNNING: "running",
    TaskStatus.COMPLETED: "completed",
    TaskStatus.FAILED: "error",
    TaskStatus.CANCELLED: "error",
}


def seed000_task_json(task: TaskRecord) -> dict[str, Any]:
    """A task in seed 000's shape: running | completed | error, with `type` and `done_at`."""
    error = task.error
    if task.status is TaskStatus.CANCELLED and not error:
        error = "cancelled"
    return {
        "id": task.id,
        "type": task.task_type,
        "status": SEED000_STATUS[task.status],
        "progress": task.progress,
        "message": task.message,
        "result": task.result,
        "error": error if task.status in (TaskStatus.FAILED, TaskStatus.CANCELLED) else None,
        "created_at": iso(task.created_at),
        "done_at": iso(task.finished_at),
    }


# ---- external workers (seed 003) ---------------------------------------------------------

ServiceName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
#: seed 003's numeric statuses, accepted as aliases: 20 started, 30 finished, -10 error.
SEED_STATUS = {20: "running", 30: "completed", -10: "failed"}


class CronTaskQuery(Strict):
    """GET /api/crontask: which service (and group) the worker serves."""

    service: ServiceName
    group: ServiceName | None = None


class CronTaskReport(Strict):
    """PUT /api/crontask/{id}: progress, intermediate state, and the end of an external task.

    Every field is optional: `{}` only extends the lease. `status` `completed` or `failed` ends
    the task (`output` becomes `result.output`, `message` the error of a failure).
    """

    status: Literal["running", "completed", "failed"] | None = None
    progress: int | None = Field(None, ge=0, le=100)
    message: str | None = Field(None, max_length=2000)
    temp: Any = Field(None, description="intermediate state, kept on the task as `temp`")
    output: Any = Field(None, description="the result, kept as `result.output`")
    attempt: int | None = Field(None, ge=1, description="refuse the report unless current")

    @field_validator("status", mode="before")
    @classmethod
    def _seed_status(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            if value not in SEED_STATUS:
                raise ValueError("numeric status must be 20, 30 or -10 (seed 003)")
            return SEED_STATUS[value]
        return value

    def to_report(self) -> ExternalReport:
        """The store's view of this report (absent and null `temp`/`output` differ)."""
        sent = self.model_fields_set
        return ExternalReport(
            status=self.status,
            progress=self.progress,
            message=self.message,
            temp=self.temp,
            has_temp="temp" in sent,
            output=self.output,
            has_output="output" in sent,
            attempt=self.attempt,
        )


# ---- response models (the OpenAPI document): TaskOut is built from the task's definition --------


class Out(BaseModel):
    """Base of response models: exactly the keys the API writes."""

    model_config = ConfigDict(extra="forbid")


class SlotsOut(Out):
    """Slots of the alive daemons (or of one daemon): busy and in all."""

    busy: int
    total: int


class TypeLimitOut(Out):
    """Tasks of a type running on the alive daemons, and how many they may run together."""

    running: int
    limit: int


class WaitingOut(Out):
    """Why a pending task waits (`waiting_json`)."""

    reason: Literal[
        "due_later",
        "retry_backoff",
        "external_worker",
        "no_node",
        "type_limit",
        "no_free_slot",
        "queued",
    ]
    due_at: str | None = Field(description="when it may start (due_later, retry_backoff)")
    next_attempt: int
    max_attempts: int
    last_error: str | None = Field(description="the error of the attempt before (retry_backoff)")
    slots: SlotsOut | None
    position: int | None = Field(
        description="its place in the claim order among due tasks (GET of one task)"
    )
    type_limit: TypeLimitOut | None


_TASK_OUT_FIELDS: dict[str, Any] = {
    name: (_api_type(f), Field(description=f.spec.doc)) for name, f in _API
}
_TASK_OUT_FIELDS["waiting"] = (
    WaitingOut | None,
    Field(
        description="why a pending task waits; given by GET of one task and by the list, null"
        " in other answers and for tasks that are not pending"
    ),
)
TaskOut = create_model(
    "TaskOut",
    __base__=Out,
    __doc__="The task JSON every task endpoint answers with (`task_json`).",
    **_TASK_OUT_FIELDS,
)


class RunningTaskOut(Out):
    """A task a daemon holds the lease of."""

    id: str
    reference: str
    task_type: str
    progress: int
    started_at: str | None


class NodeOut(Out):
    """One daemon (`node_json`)."""

    node_id: str
    version: str
    alive: bool = Field(description="heartbeats keep coming (within three heartbeat intervals)")
    started_at: str
    heartbeat_at: str
    stopped_at: str | None = Field(description="when it stopped gracefully")
    slots: SlotsOut
    running_tasks: list[RunningTaskOut]


class NodeListOut(Out):
    """`GET /api/nodes`."""

    nodes: list[NodeOut]


class AttemptOut(Out):
    """One entry of a task's `attempts` (`attempt_json`)."""

    attempt: int
    node_id: str
    started_at: str | None
    finished_at: str | None
    outcome: str | None
    error: str | None


class TaskDetailOut(TaskOut):
    """`GET /api/sync/tasks/{id}`: the task with its attempts."""

    attempts: list[AttemptOut]


class PaginationOut(Out):
    """The `pagination` object of list answers (`pagination_json`)."""

    page: int
    size: int
    total: int
    total_pages: int


class TaskPaginationOut(PaginationOut):
    """The `pagination` object of the task list (`task_pagination_json`) and of a task's
    record errors (`errors_pagination_json`)."""

    total_exact: bool = Field(
        description="false: there are more than `total` (the count stops at a cap)"
    )
    next_cursor: str | None = Field(
        description="the `cursor` of the next page; null on the last page"
    )
    prev_cursor: str | None = Field(
        description="the `before` of the previous page (the place of this page's first item);"
        " null on the first page"
    )


class TaskListOut(Out):
    """`GET /api/sync/tasks`."""

    tasks: list[TaskOut]
    pagination: TaskPaginationOut


class RecordErrorOut(Out):
    """One per-record error (`record_error_json`)."""

    id: int
    attempt: int
    position: int | None
    record: Any = Field(description="the record as the handler reported it (any JSON)")
    reason: str
    created_at: str | None


class ErrorListOut(Out):
    """`GET /api/sync/tasks/{id}/errors`."""

    errors: list[RecordErrorOut]
    pagination: TaskPaginationOut


class TaskBatchOut(Out):
    """`POST /api/sync/tasks/batch`."""

    tasks: list[TaskOut]


class RunOut(Out):
    """One run of a schedule (`run_json`)."""

    task_id: str
    status: str
    scheduled_for: str | None
    created_at: str | None
    finished_at: str | None


class FireTimeOut(Out):
    """A fire time in UTC and in the schedule's zone."""

    utc: str | None
    local: str


class ScheduleOut(Out):
    """One schedule (`schedule_json`)."""

    id: str
    name: str | None
    task_type: str
    trigger: dict[str, Any]
    description: str
    timezone: str
    parameters: dict[str, Any]
    priority: int | None
    data_source_id: str | None
    interface_id: str | None
    max_attempts: int | None
    timeout_s: float | None
    start_at: str | None
    end_at: str | None
    jitter_s: float
    overlap: str
    catch_up: str
    catch_up_window_s: float | None
    paused: bool
    pause_note: str | None
    origin: str
    managed_by: str | None
    next_run_at: str | None
    next_fires: list[FireTimeOut]
    last_run: RunOut | None
    last_error: str | None
    last_error_at: str | None
    created_at: str | None
    updated_at: str | None


class ScheduleDetailOut(ScheduleOut):
    """`GET /api/schedules/{id}`: with its last 10 runs."""

    runs: list[RunOut]


class ScheduleListOut(Out):
    """`GET /api/schedules`: a page of the schedules, by id."""

    schedules: list[ScheduleOut]
    pagination: PaginationOut


class ScheduleListQuery(PageQuery):
    """GET /api/schedules query."""

    size: int = Field(100, ge=1, le=500)


class BackfillOut(Out):
    """`POST /api/schedules/{id}/backfill`: the tasks enqueued."""

    tasks: list[TaskOut]


class PreviewOut(Out):
    """`POST /api/schedule-preview`."""

    description: str
    timezone: str
    next_fires: list[FireTimeOut]


class TaskTypeOut(Out):
    """One task type the daemon runs."""

    task_type: str
    description: str
    maintenance: bool = Field(description="only admin may enqueue it by hand (retention)")


class TaskTypesOut(Out):
    """`GET /api/sync/task-types`."""

    task_types: list[TaskTypeOut]


# ---- response models of the operations, statistics, batch and partnumber-book answers ------


class HealthOut(Out):
    """`GET /healthz`."""

    status: Literal["ok"]


class ReadyChecksOut(Out):
    """What `/readyz` checked: `ok`, or why not."""

    database: str
    writes: str
    engine: str


class ReadyOut(Out):
    """`GET /readyz` (the same shape with 503 when a check fails)."""

    status: Literal["ready", "unavailable"]
    checks: ReadyChecksOut


class WhoamiOut(Out):
    """`GET /api/whoami`."""

    role: str
    auth: bool = Field(description="false when no tokens are configured (everyone is admin)")


class DatabaseStatsOut(Out):
    """Aggregates over the database: tasks finished since `since`, and pending and running
    now."""

    total: int
    by_status: dict[str, int]
    by_type: dict[str, int]
    success_rate: float | None
    avg_duration_s: float | None
    since: str
    running_by_node: dict[str, int]


class EngineStatsOut(Out):
    """This node's engine."""

    node_id: str
    running_tasks: int
    queue_length: int
    max_concurrent: int
    uptime_s: float
    database_ok: bool
    running_by_type: dict[str, int]


class StatisticsOut(Out):
    """`GET /api/sync/tasks/statistics`."""

    database: DatabaseStatsOut
    engine: EngineStatsOut


class HourOut(Out):
    """Tasks that finished in one hour, by final status."""

    hour: str
    completed: int
    failed: int
    cancelled: int


class ThroughputOut(Out):
    """`GET /api/sync/tasks/throughput`."""

    hours: int
    since: str | None
    buckets: list[HourOut]


class BatchItemOut(Out):
    """One id of a batch cancel or retry: `status` (and a retry's new `task_id`) when it was
    done, else `error`."""

    id: str
    ok: bool
    status: str | None = None
    task_id: str | None = None
    error: str | None = None


class BatchOut(Out):
    """`POST /api/sync/tasks/batch/cancel` and `.../batch/retry`."""

    results: list[BatchItemOut]


class Seed000TaskOut(Out):
    """`GET /api/tasks/{id}`: a task in seed 000's shape."""

    id: str
    type: str
    status: Literal["running", "completed", "error"]
    progress: int
    message: str
    result: Any
    error: str | None
    created_at: str
    done_at: str | None


class BookOut(Out):
    """One partnumber book."""

    id: int
    version: str
    is_active: bool
    created_at: str
    item_count: int
    task_id: str | None


class BookListOut(Out):
    """`GET /api/admin/pricing/partnumber-books`."""

    books: list[BookOut]


class SnapshotTaskOut(Out):
    """`POST /api/admin/pricing/partnumber-books`: the snapshot task."""

    task_id: str


class BookItemOut(Out):
    """One item of a partnumber book."""

    partnumber: str
    vendor: str
    lot_name: str
    qty: int
    is_primary_pn: bool
    description: str | None


class BookItemsOut(Out):
    """`GET /api/admin/pricing/partnumber-books/{version}/items`."""

    book: BookOut
    items: list[BookItemOut]
    pagination: PaginationOut
