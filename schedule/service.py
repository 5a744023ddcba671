"""ScheduleService: task CRUD and state transitions; tells the worker pool what changed."""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol
from urllib.parse import urlsplit

from pydantic import ValidationError

from config.settings import Role, Settings, normalize_host
from schedule.events import EventBus, EventKind, TaskEvent
from schedule.exceptions import FieldProblem, Forbidden, InvalidInput, InvalidState, NotFound
from schedule.records import (
    AttemptRecord,
    BatchResult,
    ErrorPage,
    ExternalReport,
    HourCount,
    Outcome,
    Page,
    Statistics,
    TaskDetail,
    TaskFilter,
    TaskPage,
    TaskRequest,
)
from schedule.store import TaskStore
from schedule.task import NewTask, TaskRecord, TaskStatus
from schedule.tasktypes import TaskType, TaskTypes, UnknownTaskType

log = logging.getLogger(__name__)
#: Measures a stored value's size as UTF-8 JSON (built once: `json.dumps` with options builds
#: an encoder on every call).
_SIZE_ENCODER = json.JSONEncoder(ensure_ascii=False)

#: The roles that may enqueue a maintenance task type (`HandlerSpec.maintenance`) by hand.
MAINTAINERS: frozenset[Role] = frozenset({"admin"})


class LiveView(Protocol):
    """In-memory progress of a running attempt (the engine's `LiveProgress`)."""

    progress: int
    message: str
    processed_rows: int
    total_rows: int | None


class WorkerPool(Protocol):
    """What the service needs from the worker pool of this node (the engine's `SyncEngine`)."""

    def wake(self) -> None:
        """Something was enqueued or changed: claim now."""

    def request_cancel(self, task_id: str, reason: str = ...) -> bool:
        """Ask a task running here to stop."""

    def live(self, task_id: str) -> LiveView | None:
        """The in-memory progress of a task running here."""

    def hold_claims(self, seconds: float) -> None:
        """Take no new task for at most `seconds` (the running ones go on and finish): the
        scheduler's burst of fires goes to the database first."""

    def release_claims(self) -> None:
        """End `hold_claims`, and claim now."""


class ScheduleService:
    """The one place where tasks are created and change state on request.

    Methods that enqueue take the `role` of the API caller who asks; a maintenance task type
    (one that deletes data) needs a role in `MAINTAINERS` then (`Forbidden` otherwise). `None`
    is the daemon itself (its periodic jobs), which is not a role and is not refused.
    """

    def __init__(
        self,
        store: TaskStore,
        registry: TaskTypes,
        settings: Settings,
        pool: WorkerPool | None = None,
        bus: EventBus | None = None,
    ) -> None:
        self.store = store
        self.registry = registry
        self.settings = settings
        self.pool = pool
        # Every change made here is published: `created`, `updated`, `cancel_requested`,
        # `cancelled` (and `finished` for a task that ends here), `started` for an external
        # claim.
        self.bus = bus if bus is not None else EventBus()

    def _publish(self, kind: EventKind, task: TaskRecord, outcome: Outcome | None = None) -> None:
        if self.bus.wants(kind):  # once per created task: no event built when nobody listens
            self.bus.publish(TaskEvent(kind, task, outcome))

    # ---- create -------------------------------------------------------------------------

    async def create(
        self, request: TaskRequest, *, role: Role | None = None
    ) -> tuple[TaskRecord, bool]:
        """Enqueue one task; `False` when an unfinished task already holds its dedupe key."""
        (pair,) = await self.create_many([request], role=role)
        return pair

    async def create_many(
        self, requests: Sequence[TaskRequest], *, role: Role | None = None
    ) -> list[tuple[TaskRecord, bool]]:
        """Check and validate every request first (nothing is written if one is refused or
        bad), then enqueue all."""
        items = [
            self.prepare(r, role, prefix=self._prefix(i, len(requests)))
            for i, r in enumerate(requests)
        ]
        pairs = await self.store.create_many(items)
        self.announce([task for task, created in pairs if created])
        return pairs

    def announce(self, tasks: Sequence[TaskRecord]) -> None:
        """Tasks were enqueued (here or by a schedule's fire): wake the pool, log and publish
        `created` for each."""
        if tasks and self.pool is not None:
            self.pool.wake()
        logged = log.isEnabledFor(logging.INFO)  # once per batch, not an extra dict per task
        for task in tasks:
            if logged:
                log.info(
                    "task created",
                    extra={"task_id": task.id, "task_type": task.task_type, "action": "create"},
                )
            self._publish(EventKind.CREATED, task)

    @staticmethod
    def _prefix(index: int, count: int) -> str:
        return f"tasks.{index}." if count > 1 else ""

    def prepare(self, request: TaskRequest, role: Role | None = None, prefix: str = "") -> NewTask:
        """The task `request` asks for, checked against its type and with the defaults filled
        in, without enqueuing it (`InvalidInput` / `Forbidden` when it is refused); the
        schedules check their task template with it."""
        spec = self._spec(request.task_type, prefix)
        self._check_by_hand(spec, role, f"{prefix}task_type")
        self._check_size(request.parameters, f"{prefix}parameters")
        parsed = self._validate_params(spec, request.parameters, prefix)
        if request.callback_url is not None:
            self._check_callback_url(request.callback_url, prefix)
        if spec.needs_data_source and not request.data_source_id:
            raise InvalidInput(
                [FieldProblem(f"{prefix}data_source_id", f"required for {spec.task_type}")]
            )
        max_attempts = request.max_attempts or spec.default_max_attempts
        return NewTask(
            task_type=request.task_type,
            parameters=request.parameters,
            max_attempts=max_attempts or self.settings.default_max_attempts,
            priority=request.priority if request.priority is not None else spec.default_priority,
            data_source_id=request.data_source_id,
            interface_id=request.interface_id,
            run_after=request.run_after,
            timeout_s=request.timeout_s,
            dedupe_key=request.dedupe_key,
            callback_url=request.callback_url,
            service=getattr(parsed, "service", None) if spec.external else None,
            service_group=getattr(parsed, "group", None) if spec.external else None,
            schedule_id=request.schedule_id,
            scheduled_for=request.scheduled_for,
        )

    @staticmethod
    def _check_by_hand(spec: TaskType, role: Role | None, where: str) -> None:
        """Refuse a maintenance type asked for by a role outside `MAINTAINERS`."""
        if not spec.maintenance or role is None or role in MAINTAINERS:
            return
        allowed = ", ".join(sorted(MAINTAINERS))
        raise Forbidden(
            f"{where}: role {role!r} may not enqueue {spec.task_type!r} by hand: it is a "
            f"maintenance task type (it deletes data), for {allowed} only",
            {"field": where, "role": role, "task_type": spec.task_type},
        )

    def _check_size(self, value: Any, field: str) -> None:
        """Refuse a stored JSON value larger than `SYNCD_MAX_PARAMETERS_KB` (422 naming it):
        every task list and live frame carries it, so a few huge ones made pages of hundreds
        of megabytes."""
        limit = self.settings.max_parameters_kb * 1024
        size = len(_SIZE_ENCODER.encode(value).encode())
        if size > limit:
            raise InvalidInput(
                [
                    FieldProblem(
                        field,
                        f"is {size:,} bytes as JSON; at most {limit:,} "
                        f"(SYNCD_MAX_PARAMETERS_KB={self.settings.max_parameters_kb})",
                    )
                ]
            )

    def _check_callback_url(self, url: str, prefix: str) -> None:
        """Only http(s) URLs on the allowed hosts, and only with a signing secret set."""
        field = f"{prefix}callback_url"
        try:
            parts = urlsplit(url)
            host = normalize_host(parts.hostname or "")
            _ = parts.port  # raises ValueError for a bad port
        except ValueError as exc:
            raise InvalidInput([FieldProblem(field, f"not a valid URL: {exc}")]) from None
        problem = None
        if parts.scheme not in ("http", "https"):
            problem = f"scheme {parts.scheme!r} is not allowed; use http or https"
        elif not host:
            problem = "the URL has no host"
        elif not self.settings.callback_secret:
            problem = "callbacks are disabled: SYNCD_CALLBACK_SECRET is not set"
        elif host not in {normalize_host(h) for h in self.settings.callback_allowed_hosts}:
            problem = f"host {host!r} is not in SYNCD_CALLBACK_ALLOWED_HOSTS"
        if problem is not None:
            raise InvalidInput([FieldProblem(field, problem)])

    def _spec(self, task_type: str, prefix: str = "") -> TaskType:
        try:
            return self.registry.get(task_type)
        except UnknownTaskType:
            known = ", ".join(self.registry.names())
            raise InvalidInput(
                [
                    FieldProblem(
                        f"{prefix}task_type", f"unknown task type {task_type!r}; known: {known}"
                    )
                ]
            ) from None

    @staticmethod
    def _validate_params(spec: TaskType, parameters: dict[str, Any], prefix: str) -> Any:
        try:
            return spec.validate(parameters)
        except ValidationError as exc:
            raise InvalidInput(
                [
                    FieldProblem(
                        f"{prefix}parameters" + "".join(f".{p}" for p in err["loc"]),
                        err["msg"].removeprefix("Value error, "),
                    )
                    for err in exc.errors()
                ]
            ) from None

    # ---- read ---------------------------------------------------------------------------

    async def get(self, key: str) -> TaskDetail:
        """One task with its attempts; a task running on this node shows live progress."""
        stored, attempts = await self.store.detail(key)
        task = self._merge_live(stored)
        if task.status is TaskStatus.RUNNING and task.started_at is not None:
            attempts.append(
                AttemptRecord(
                    attempt=task.attempt,
                    node_id=task.lease_owner or "",
                    started_at=task.started_at,
                    finished_at=None,
                    outcome=None,
                    error=None,
                )
            )
        return TaskDetail(task=task, attempts=attempts)

    async def find(self, key: str) -> TaskRecord:
        """One task (live progress merged), without attempts."""
        return self._merge_live(await self.store.require(key))

    async def list_tasks(self, flt: TaskFilter, page: Page) -> TaskPage:
        """A page of tasks, newest first, with live progress merged."""
        found = await self.store.list_tasks(flt, page)
        return found._replace(tasks=[self._merge_live(t) for t in found.tasks])

    async def errors(
        self, key: str, page: Page, after: int | None = None, before: int | None = None
    ) -> ErrorPage:
        """Per-record errors of a task (`TaskStore.errors`)."""
        task = await self.store.require(key)
        return await self.store.errors(task.id, page, after, before)

    async def statistics(self, since: datetime) -> Statistics:
        """Database-wide aggregates since `since`."""
        return await self.store.stats.summary(since)

    async def throughput(self, hours: int) -> list[HourCount]:
        """Finished tasks per hour over the last `hours` hours, the current hour included."""
        now = self.store.clock().astimezone(UTC)
        start = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=hours - 1)
        return await self.store.stats.throughput(start, hours)

    async def find_many(self, ids: Sequence[str]) -> list[TaskRecord]:
        """Tasks by id (unknown ones skipped), live progress merged."""
        return [self._merge_live(t) for t in await self.store.get_many(ids)]

    def _merge_live(self, task: TaskRecord) -> TaskRecord:
        if task.status is not TaskStatus.RUNNING or self.pool is None:
            return task
        live = self.pool.live(task.id)
        if live is None:
            return task
        return dataclasses.replace(
            task,
            progress=live.progress,
            message=live.message,
            processed_rows=live.processed_rows,
            total_rows=live.total_rows,
        )

    # ---- transitions --------------------------------------------------------------------

    async def update(self, key: str, changes: dict[str, Any]) -> TaskRecord:
        """Change parameters, priority, run_after or max_attempts of a pending task."""
        task = await self.store.require(key)
        if "parameters" in changes:
            self._check_size(changes["parameters"], "parameters")
            self._validate_params(self._spec(task.task_type), changes["parameters"], "")
        updated = await self.store.update_pending(task.id, changes)
        if self.pool is not None:
            self.pool.wake()
        self._publish(EventKind.UPDATED, updated)
        return updated

    async def cancel(self, key: str) -> TaskRecord:
        """Cancel: a pending task at once; a running one cooperatively (then by force)."""
        task = await self.store.cancel(key)
        if task.status is TaskStatus.RUNNING and self.pool is not None:
            self.pool.request_cancel(task.id)
        elif task.status is TaskStatus.CANCELLED:
            # It was pending and ended here, not in the pool: `finished`, as the engine says it
            # of the tasks it ends (metrics, completion callbacks, uploads), then `cancelled`.
            outcome = Outcome(task.id, task.attempt, TaskStatus.CANCELLED, "cancelled")
            self._publish(EventKind.FINISHED, task, outcome)
        kind = EventKind.CANCELLED if task.status.finished else EventKind.CANCEL_REQUESTED
        self._publish(kind, task)
        return task

    async def retry(self, key: str, *, role: Role | None = None) -> TaskRecord:
        """A new task from a failed or cancelled one (`retry_of` points back)."""
        old = await self.store.require(key)
        self._check_retry(old, role, key)
        if old.status not in (TaskStatus.FAILED, TaskStatus.CANCELLED):
            raise InvalidState(
                f"task is {old.status.value}; only failed or cancelled tasks can be retried"
            )
        new = NewTask(
            task_type=old.task_type,
            parameters=old.parameters,
            max_attempts=old.max_attempts,
            priority=old.priority,
            data_source_id=old.data_source_id,
            interface_id=old.interface_id,
            timeout_s=old.timeout_s,
            dedupe_key=old.dedupe_key,
            callback_url=old.callback_url,
            retry_of=old.id,
            service=old.service,
            service_group=old.service_group,
        )
        task, created = await self.store.create(new)
        if not created:
            raise InvalidState(
                f"task {task.id} with the same dedupe_key is already {task.status.value}"
            )
        if self.pool is not None:
            self.pool.wake()
        self._publish(EventKind.CREATED, task)
        return task

    async def delete(self, key: str) -> None:
        """Delete a finished task and its records."""
        await self.store.delete(key)

    def _may_refuse(self, role: Role | None) -> bool:
        """Whether some task type is one this role may not enqueue by hand."""
        maintenance = any(spec.maintenance for spec in self.registry)
        return maintenance and role is not None and role not in MAINTAINERS

    def _check_retry(self, old: TaskRecord, role: Role | None, key: str) -> None:
        if old.task_type in self.registry:  # an unknown type fails when it runs, as before
            self._check_by_hand(self.registry.get(old.task_type), role, f"task {key}")

    async def batch(
        self, action: str, ids: Sequence[str], *, role: Role | None = None
    ) -> list[BatchResult]:
        """Cancel or retry many; each id succeeds or fails on its own, except that a retry a
        role may not make refuses the whole batch (`Forbidden`) before anything is retried.

        Each task is acted on once however often it is named (by id or by reference): one
        result per distinct key, in the order given; a key naming a task already handled
        repeats that task's result (a retry naming one id 1,000 times makes one new task).
        """
        keys = list(dict.fromkeys(ids))
        if action == "retry" and self._may_refuse(role):
            for key in keys:
                try:
                    self._check_retry(await self.store.require(key), role, key)
                except NotFound:
                    continue  # reported in its place below
        results: list[BatchResult] = []
        done: dict[str, BatchResult] = {}  # task id -> the result of acting on it
        for key in keys:
            found = await self.store.get(key)
            if found is not None and found.id in done:
                results.append(dataclasses.replace(done[found.id], id=key))
                continue
            target = found.id if found is not None else key
            try:
                task = await (
                    self.cancel(target) if action == "cancel" else self.retry(target, role=role)
                )
            except (NotFound, InvalidState) as exc:
                result = BatchResult(id=key, ok=False, error=str(exc))
            else:
                new_id = task.id if action == "retry" else None
                result = BatchResult(id=key, ok=True, status=task.status.value, task_id=new_id)
            if found is not None:
                done[found.id] = result
            results.append(result)
        return results

    # ---- external workers (seed 003) ------------------------------------------------------

    async def claim_external(self, service: str, group: str | None) -> TaskRecord | None:
        """Hand the first due task of `service` (and `group`) to an external worker."""
        owner = f"external:{service}"[:128]
        task = await self.store.external.claim(
            owner, service, group, self.settings.external_lease_s
        )
        if task is not None:
            log.info(
                "external task claimed",
                extra={"task_id": task.id, "task_type": task.task_type, "action": "claim"},
            )
            self._publish(EventKind.STARTED, task)
        return task

    async def report_external(self, key: str, report: ExternalReport) -> TaskRecord:
        """Apply an external worker's report; a final status ends the task."""
        if report.has_temp:
            self._check_size(report.temp, "temp")
        if report.has_output:
            self._check_size(report.output, "output")
        task, outcome = await self.store.external.report(
            key, report, self.settings.external_lease_s
        )
        if outcome is not None:
            log.info(
                "external task %s",
                outcome.outcome,
                extra={"task_id": task.id, "task_type": task.task_type, "action": "report"},
            )
            self._publish(EventKind.FINISHED, task, outcome)
        return task
