"""What several modules of the task store share: statements (SQLAlchemy Core), each run on a
connection its caller got from the connector, inside the caller's transaction, and what a
claim and a finish write.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, insert, or_, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from schedule import jsontext
from schedule.clock import naive
from schedule.models import sync_task_attempts, sync_task_errors, sync_tasks
from schedule.records import Outcome
from schedule.store.connector import Connector
from schedule.task import FINISHED, JsonObject, TaskRecord, TaskStatus

T = sync_tasks
A = sync_task_attempts
E = sync_task_errors
FINISHED_VALUES = [s.value for s in FINISHED]
CLAIM_ORDER = (T.c.priority.desc(), T.c.run_after.asc(), T.c.created_at.asc())


def claim_values(owner: str, now: datetime, lease_s: float) -> dict[str, Any]:
    """The columns a claim sets: running, next attempt, leased to `owner`."""
    return {
        "status": TaskStatus.RUNNING.value,
        "attempt": T.c.attempt + 1,
        "lease_owner": owner,
        "lease_expires_at": now + timedelta(seconds=lease_s),
        "started_at": now,
        "updated_at": now,
        "error": None,
        "progress": 0,
        "message": "",
        "processed_rows": 0,
    }


async def take(
    db: Connector,
    conn: AsyncConnection,
    due: Select[Any],
    values: dict[str, Any],
    *,
    skip_locked: bool = True,
) -> list[RowMapping]:
    """Claim the tasks `due` selects (their ids, in claim order): lock them, skipping those
    another transaction holds (or waiting for them: `skip_locked=False`), set `values`, and read
    them back. On SQLite the transaction holds the write lock already, so the three statements
    are one atomic step there too."""
    ids = list((await conn.execute(db.lock(due, skip_locked=skip_locked))).scalars())
    if not ids:
        return []
    await conn.execute(update(T).where(T.c.id.in_(ids)).values(**values))
    rows = (await conn.execute(select(T).where(T.c.id.in_(ids)))).mappings().all()
    return list(rows)


async def read_task(conn: AsyncConnection, key: str) -> TaskRecord | None:
    """A task by id or reference."""
    row = (await conn.execute(select(T).where(or_(T.c.id == key, T.c.reference == key)))).first()
    return TaskRecord.from_row(row._mapping) if row is not None else None


def in_claim_order(tasks: Sequence[TaskRecord]) -> list[TaskRecord]:
    """`tasks` sorted as they are claimed: priority first, then run_after, then created_at."""
    return sorted(tasks, key=lambda t: (-t.priority, t.run_after, t.created_at))


async def record_attempt(
    conn: AsyncConnection,
    task: TaskRecord,
    now: datetime,
    outcome: str,
    error: str | None,
    node_id: str | None = None,
) -> None:
    """Add the attempt record of `task`'s current attempt, ended `now` with `outcome`."""
    await conn.execute(
        insert(A).values(
            task_id=task.id,
            attempt=task.attempt,
            node_id=node_id or task.lease_owner or "?",
            started_at=naive(task.started_at) if task.started_at else now,
            finished_at=now,
            outcome=outcome,
            error=error,
        )
    )


FinishValues = tuple[
    str, JsonObject | None, str | None, int, str, int, int | None, datetime | None, bool
]
"""What a finish writes of one outcome: status, result, error, progress, message, processed
rows, total rows, the retry time (naive UTC; None: run_after becomes now) and whether it is an
end (which frees the dedupe key) rather than a retry (which keeps it held). A plain tuple: it
is made once per task on the queue's hot path."""


def finish_values(outcome: Outcome) -> FinishValues:
    """The values a finish writes for `outcome`: the last progress reported (100 % for a
    completion), the result with non-finite floats made null, the retry time."""
    progress = outcome.progress
    if progress is None:
        percent, message, processed, total = 0, "", 0, None
    else:
        percent = progress.progress
        message, processed, total = (
            progress.message[:2000],
            progress.processed_rows,
            progress.total_rows,
        )
    if outcome.status is TaskStatus.COMPLETED:
        percent = 100
    return (
        outcome.status.value,
        jsontext.finite(outcome.result),
        outcome.error,
        percent,
        message,
        processed,
        total,
        naive(outcome.retry_at) if outcome.retry_at else None,
        outcome.status in FINISHED,
    )
