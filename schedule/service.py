"""ScheduleService: task CRUD and state transitions; tells the engine what changed."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from pydantic import ValidationError

from config.settings import Settings
from engine.handlers.base import HandlerSpec, Registry, UnknownTaskType
from schedule.exceptions import FieldProblem, InvalidInput, InvalidState, NotFound
from schedule.models import TaskStatus
from schedule.records import (
    AttemptRecord,
    BatchResult,
    HourCount,
    NewTask,
    Page,
    Statistics,
    StoredRecordError,
    TaskDetail,
    TaskFilter,
    TaskRecord,
    TaskRequest,
)
from schedule.store import TaskStore

log = logging.getLogger(__name__)

ServiceListener = Callable[[str, TaskRecord], None]


class LiveView(Protocol):
    """In-memory progress of a running attempt (the engine's `LiveProgress`)."""

    progress: int
    message: str
    processed_rows: int
    total_rows: int | None


class EngineLink(Protocol):
    """What the service needs from the engine of this node."""

    def wake(self) -> None: ...

    def request_cancel(self, task_id: str, reason: str = ...) -> bool: ...

    def live(self, task_id: str) -> LiveView | None: ...


class ScheduleService:
    """The one place where tasks are created and change state on request."""

    def __init__(
        self,
        store: TaskStore,
        registry: Registry,
        settings: Settings,
        engine: EngineLink | None = None,
    ) -> None:
        self.store = store
        self.registry = registry
        self.settings = settings
        self.engine = engine
        # Observers of changes made on request (the dashboard's live feed): called with
        # `created`, `updated` or `cancelled` and the task as written.
        self.listeners: list[ServiceListener] = []

    def _notify(self, kind: str, task: TaskRecord) -> None:
        for listener in self.listeners:
            try:
                listener(kind, task)
            except Exception:
                log.exception("service listener failed", extra={"task_id": task.id})

    # ---- create -------------------------------------------------------------------------

    async def create(self, request: TaskRequest) -> tuple[TaskRecord, bool]:
        """Enqueue one task; `False` when an unfinished task already holds its dedupe key."""
        (pair,) = await self.create_many([request])
        return pair

    async def create_many(self, requests: Sequence[TaskRequest]) -> list[tuple[TaskRecord, bool]]:
        """Validate every request first (nothing is written if one is bad), then enqueue all."""
        items = [
            self._new_task(r, prefix=self._prefix(i, len(requests))) for i, r in enumerate(requests)
        ]
        pairs = await self.store.create_many(items)
        if any(created for _, created in pairs) and self.engine is not None:
            self.engine.wake()
        for task, created in pairs:
            if created:
                log.info(
                    "task created",
                    extra={"task_id": task.id, "task_type": task.task_type, "action": "create"},
                )
                self._notify("created", task)
        return pairs

    @staticmethod
    def _prefix(index: int, count: int) -> str:
        return f"tasks.{index}." if count > 1 else ""

    def _new_task(self, request: TaskRequest, prefix: str = "") -> NewTask:
        spec = self._spec(request.task_type, prefix)
        self._validate_params(spec, request.parameters, prefix)
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
        )

    def _spec(self, task_type: str, prefix: str = "") -> HandlerSpec:
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
    def _validate_params(spec: HandlerSpec, parameters: dict[str, Any], prefix: str) -> None:
        try:
            spec.validate(parameters)
        except ValidationError as exc:
            raise InvalidInput(
                [
                    FieldProblem(
                        f"{prefix}parameters" + "".join(f".{p}" for p in err["loc"]), err["msg"]
                    )
                    for err in exc.errors()
                ]
            ) from None

    # ---- read ---------------------------------------------------------------------------

    async def get(self, key: str) -> TaskDetail:
        """One task with its attempts; a task running on this node shows live progress."""
        task = self._merge_live(await self.store.require(key))
        attempts = await self.store.attempts(task.id)
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

    async def list_tasks(self, flt: TaskFilter, page: Page) -> tuple[list[TaskRecord], int]:
        """A page of tasks, newest first, with live progress merged."""
        tasks, total = await self.store.list_tasks(flt, page)
        return [self._merge_live(t) for t in tasks], total

    async def errors(self, key: str, page: Page) -> tuple[list[StoredRecordError], int]:
        """Per-record errors of a task."""
        task = await self.store.require(key)
        return await self.store.errors(task.id, page)

    async def statistics(self, since: datetime) -> Statistics:
        """Database-wide aggregates since `since`."""
        return await self.store.statistics(since)

    async def throughput(self, hours: int) -> list[HourCount]:
        """Finished tasks per hour over the last `hours` hours, the current hour included."""
        now = self.store.clock().astimezone(UTC)
        start = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=hours - 1)
        return await self.store.throughput(start, hours)

    async def find_many(self, ids: Sequence[str]) -> list[TaskRecord]:
        """Tasks by id (unknown ones skipped), live progress merged."""
        return [self._merge_live(t) for t in await self.store.get_many(ids)]

    def _merge_live(self, task: TaskRecord) -> TaskRecord:
        if task.status is not TaskStatus.RUNNING or self.engine is None:
            return task
        live = self.engine.live(task.id)
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
            self._validate_params(self._spec(task.task_type), changes["parameters"], "")
        updated = await self.store.update_pending(task.id, changes)
        if self.engine is not None:
            self.engine.wake()
        self._notify("updated", updated)
        return updated

    async def cancel(self, key: str) -> TaskRecord:
        """Cancel: a pending task at once; a running one cooperatively (then by force)."""
        task = await self.store.cancel(key)
        if task.status is TaskStatus.RUNNING and self.engine is not None:
            self.engine.request_cancel(task.id)
        self._notify("cancelled" if task.status.finished else "cancel_requested", task)
        return task

    async def retry(self, key: str) -> TaskRecord:
        """A new task from a failed or cancelled one (`retry_of` points back)."""
        old = await self.store.require(key)
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
        )
        task, created = await self.store.create(new)
        if not created:
            raise InvalidState(
                f"task {task.id} with the same dedupe_key is already {task.status.value}"
            )
        if self.engine is not None:
            self.engine.wake()
        self._notify("created", task)
        return task

    async def delete(self, key: str) -> None:
        """Delete a finished task and its records."""
        await self.store.delete(key)

    async def batch(self, action: str, ids: Sequence[str]) -> list[BatchResult]:
        """Cancel or retry many; each id succeeds or fails on its own."""
        method = self.cancel if action == "cancel" else self.retry
        results: list[BatchResult] = []
        for key in ids:
            try:
                task = await method(key)
            except (NotFound, InvalidState) as exc:
                results.append(BatchResult(id=key, ok=False, error=str(exc)))
            else:
                new_id = task.id if action == "retry" else None
                results.append(
                    BatchResult(id=key, ok=True, status=task.status.value, task_id=new_id)
                )
        return results
