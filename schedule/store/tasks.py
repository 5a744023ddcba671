"""The task store's contract: what the service, the engine and the API may ask of it.

Every backend implements all of it (`SqliteTaskStore`, `MySqlTaskStore`, both on the shared
`SqlTaskStore`), and one contract test suite runs unchanged against each
(tests/integration/test_store.py). Writes made on behalf of a running attempt are fenced by
`lease_owner` and `attempt`: a node that lost its lease cannot finish, extend or report on the
task any more. Each call is one transaction through the connector's write or read path.

Three parts of the task table have a module of their own and are reached through the store:
`external` (the external-worker protocol), `callbacks` (the completion-callback outbox) and
`stats` (statistics).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

from schedule.clock import Clock
from schedule.records import (
    AttemptRecord,
    ErrorPage,
    HeartbeatReply,
    Outcome,
    Page,
    ProgressUpdate,
    RecordError,
    TaskFilter,
    TaskPage,
)
from schedule.store.callbacks import CallbackOutbox
from schedule.store.connector import Connector
from schedule.store.external import ExternalWorkers
from schedule.store.statistics import TaskStatistics
from schedule.task import NewTask, TaskRecord


class TaskStore(ABC):
    """Durable tasks: creation, reads, transitions asked for by people, and the engine's
    side (claim, heartbeat, progress, finish, release, rescue). Use `make_store` to get the
    implementation for a connector's backend."""

    db: Connector
    clock: Clock
    external: ExternalWorkers
    callbacks: CallbackOutbox
    stats: TaskStatistics
    #: Where `list_tasks` stops counting (its total is then flagged inexact).
    count_cap: int

    # ---- creation -------------------------------------------------------------------------

    @abstractmethod
    async def create(self, new: NewTask) -> tuple[TaskRecord, bool]:
        """Insert a task; with a `dedupe_key` held by an unfinished task, return that one
        (`created` False)."""

    @abstractmethod
    async def create_many(self, items: Sequence[NewTask]) -> list[tuple[TaskRecord, bool]]:
        """Insert tasks in one transaction; `created` is False for deduplicated ones (a key
        given twice in `items` makes one task)."""

    # ---- reads ----------------------------------------------------------------------------

    @abstractmethod
    async def get(self, key: str) -> TaskRecord | None:
        """A task by id or reference."""

    @abstractmethod
    async def require(self, key: str) -> TaskRecord:
        """A task by id or reference, or `NotFound`."""

    @abstractmethod
    async def detail(self, key: str) -> tuple[TaskRecord, list[AttemptRecord]]:
        """A task by id or reference with its finished attempts (oldest first), read in one
        transaction, or `NotFound`: `GET` of one task, the API's hottest read."""

    @abstractmethod
    async def get_many(self, ids: Collection[str]) -> list[TaskRecord]:
        """Tasks by id (unknown ids are skipped), in no particular order."""

    @abstractmethod
    async def list_tasks(self, flt: TaskFilter, page: Page) -> TaskPage:
        """Newest first (`created_at`, then `id`), filtered, from `page.after` when given,
        the page just newer than `page.before` when that is given (else by page number); the
        total matching is counted up to `COUNT_CAP` and flagged inexact beyond it. The next
        page starts after the last task's place, the previous one ends before the first's."""

    @abstractmethod
    async def attempts(self, task_id: str) -> list[AttemptRecord]:
        """Finished attempts of a task, oldest first."""

    @abstractmethod
    async def errors(
        self, task_id: str, page: Page, after: int | None = None, before: int | None = None
    ) -> ErrorPage:
        """Per-record errors of a task in the order they were recorded: after the error id
        `after`, or the page just before the error id `before`, or by page number. The total is
        the task's `error_count`, capped as the task list's is."""

    # ---- transitions requested by people --------------------------------------------------

    @abstractmethod
    async def update_pending(self, key: str, changes: dict[str, Any]) -> TaskRecord:
        """Change a pending task; `InvalidState` once it has started or finished."""

    @abstractmethod
    async def cancel(self, key: str) -> TaskRecord:
        """Pending: cancelled now. Running: `cancel_requested` set. Finished: `InvalidState`."""

    @abstractmethod
    async def delete(self, key: str) -> None:
        """Delete a finished task with its attempts and record errors (`InvalidState` for an
        unfinished one)."""

    @abstractmethod
    async def delete_finished_before(self, cutoff: datetime, batch: int = 500) -> int:
        """Delete one batch of tasks that finished before `cutoff`; returns how many."""

    # ---- the engine's side ----------------------------------------------------------------

    @abstractmethod
    async def claim(
        self, node_id: str, limit: int, lease_s: float, types: Collection[str] | None = None
    ) -> list[TaskRecord]:
        """Atomically take up to `limit` due pending tasks (of `types`; none when `types` is
        empty) in claim order: priority DESC, run_after, created_at."""

    @abstractmethod
    async def heartbeat(
        self, node_id: str, attempts: dict[str, int], lease_s: float
    ) -> HeartbeatReply:
        """Extend the leases this node holds; report lost ones and cancel requests."""

    @abstractmethod
    async def save_progress(self, node_id: str, updates: Sequence[ProgressUpdate]) -> None:
        """Write live progress of running attempts this node still owns."""

    @abstractmethod
    async def record_errors(
        self, node_id: str, task_id: str, attempt: int, errors: Sequence[RecordError]
    ) -> bool:
        """Store per-record errors of an attempt this node owns; False when fenced off."""

    @abstractmethod
    async def finish(self, node_id: str, outcomes: Sequence[Outcome]) -> set[str]:
        """Write how attempts ended, in one transaction; returns the ids actually written
        (only attempts whose lease this node still holds)."""

    @abstractmethod
    async def finish_and_claim(
        self,
        node_id: str,
        outcomes: Sequence[Outcome],
        limit: int,
        lease_s: float,
        types: Collection[str],
    ) -> tuple[set[str], list[TaskRecord]]:
        """`finish` the outcomes, then `claim` up to `limit` tasks of `types` (none when
        `limit` is 0): the engine's round for slots its attempts just left."""

    @abstractmethod
    async def release(self, node_id: str, attempts: dict[str, int]) -> set[str]:
        """Give running tasks back to `pending` without counting the attempt (shutdown)."""

    @abstractmethod
    async def unclaim(self, node_id: str, attempts: dict[str, int]) -> None:
        """Undo a claim this node cannot run now (a type at its limit): as if never taken."""

    @abstractmethod
    async def rescue(self) -> list[TaskRecord]:
        """Recover tasks whose lease expired: retry if attempts remain, else fail them."""
