"""The external-worker protocol (seed 003): a worker pulls a task of its service and reports
on it until it ends.

`GET /api/crontask` claims with the same rules as the engine's claim (due, pending, claim
order, one atomic step, a lease), restricted to one service (and group); `PUT /api/crontask/{id}`
reports progress, intermediate state (`temp`) or the end. Only a running task takes reports, and
only for its current attempt; a report extends the lease, an end writes the attempt record.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update

from schedule.clock import Clock, naive
from schedule.exceptions import InvalidState, NotFound
from schedule.models import status_is
from schedule.records import ExternalReport, Outcome
from schedule.store import rollups
from schedule.store.connector import Connector
from schedule.store.queries import CLAIM_ORDER, T, claim_values, read_task, record_attempt, take
from schedule.task import TaskRecord, TaskStatus


class ExternalWorkers:
    """Claims and reports of external workers, on the task table."""

    def __init__(self, db: Connector, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    async def claim(
        self, owner: str, service: str, group: str | None, lease_s: float
    ) -> TaskRecord | None:
        """Atomically take the first due pending task of `service` (and `group`), in claim
        order, leased to `owner`; None when there is none."""
        now = naive(self.clock())
        due = select(T.c.id).where(
            T.c.service == service,
            status_is(TaskStatus.PENDING),
            T.c.run_after <= now,
        )
        if group is not None:
            due = due.where(T.c.service_group == group)
        due = due.order_by(*CLAIM_ORDER).limit(1)
        values = claim_values(owner, now, lease_s)
        async with self.db.write() as conn:
            rows = await take(self.db, conn, due, values)
            if not rows:
                # The engine's claims scan pending rows of every service in claim order and
                # hold each for an instant (MariaDB): a skipping claim that met only held rows
                # found nothing, though a task was due. Once more, waiting for the holders (their
                # transactions are short; a row another worker took no longer matches after).
                rows = await take(self.db, conn, due, values, skip_locked=False)
        return TaskRecord.from_row(rows[0]) if rows else None

    async def report(
        self, key: str, report: ExternalReport, lease_s: float
    ) -> tuple[TaskRecord, Outcome | None]:
        """Apply a report to the running task: extend its lease, or end it. Returns the task
        as now stored and, when it finished, how."""
        task = await self._require(key)
        if task.service is None:
            raise NotFound(f"task {key!r} is not an external task")
        check_reportable(task, report)
        now = naive(self.clock())
        values, outcome = report_values(task, report, now, lease_s)
        async with self.db.write() as conn:
            done = await conn.execute(
                update(T)
                .where(
                    T.c.id == task.id,
                    T.c.attempt == task.attempt,
                    T.c.status == TaskStatus.RUNNING.value,
                )
                .values(**values)
            )
            if done.rowcount and outcome is not None:
                await record_attempt(conn, task, now, outcome.outcome, outcome.error)
                started = naive(task.started_at) if task.started_at else None
                ended = [(task.task_type, outcome.status.value, started)]
                await rollups.add(conn, rollups.increments(now, ended))
        current = await self._require(task.id)
        if done.rowcount == 0:
            raise InvalidState(f"task is {current.status.value}; the report was not applied")
        return current, outcome

    async def _require(self, key: str) -> TaskRecord:
        async with self.db.read() as conn:
            task = await read_task(conn, key)
        if task is None:
            raise NotFound(f"no task {key!r}")
        return task


def check_reportable(task: TaskRecord, report: ExternalReport) -> None:
    """Only a running task, and only its current attempt, takes reports."""
    if task.status.finished:
        raise InvalidState(f"task is already {task.status.value}; reports are no longer accepted")
    if task.status is not TaskStatus.RUNNING:
        raise InvalidState(
            f"task is {task.status.value}; claim it with GET /api/crontask before reporting"
        )
    if report.attempt is not None and report.attempt != task.attempt:
        raise InvalidState(
            f"task is at attempt {task.attempt}, the report is for attempt {report.attempt}"
        )


def report_values(
    task: TaskRecord, report: ExternalReport, now: datetime, lease_s: float
) -> tuple[dict[str, Any], Outcome | None]:
    """The columns a report sets and, when it ends the task, the outcome."""
    values: dict[str, Any] = {"updated_at": now}
    if report.progress is not None:
        values["progress"] = report.progress
    if report.message is not None:
        values["message"] = report.message[:2000]
    if report.has_temp:
        values["temp"] = report.temp
    if report.status in (None, "running"):
        values["lease_expires_at"] = now + timedelta(seconds=lease_s)
        return values, None
    result = {"output": report.output} if report.has_output else None
    if report.status == "completed":
        status, error = TaskStatus.COMPLETED, None
        values["progress"] = 100
    else:
        status = TaskStatus.FAILED
        error = report.message or "the external worker reported a failure"
    values.update(
        status=status.value,
        result=result,
        error=error,
        finished_at=now,
        dedupe_active=None,
        lease_owner=None,
        lease_expires_at=None,
    )
    outcome = Outcome(task.id, task.attempt, status, status.value, result=result, error=error)
    return values, outcome
