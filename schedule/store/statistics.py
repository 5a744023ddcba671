"""Statistics of the tasks: counts by status and type, success rate, mean duration, the
queue's length and finished tasks per hour (read only; finished tasks from the rollups)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from schedule.clock import naive
from schedule.models import status_is, sync_task_rollups
from schedule.records import HourCount, Statistics
from schedule.store import rollups
from schedule.store.connector import Connector
from schedule.store.queries import FINISHED_VALUES, T
from schedule.task import TaskStatus

R = sync_task_rollups


class TaskStatistics:
    """Aggregates for `/statistics`, the dashboard's charts, metrics and the systemd status.

    Finished tasks are counted from the rollups (`schedule.store.rollups`: per hour of the
    finish, type and outcome), so a window of any length costs the same at any table size and
    counts tasks that retention has deleted since; pending and running tasks are counted as
    they are now, through the claim and lease indexes."""

    def __init__(self, db: Connector) -> None:
        self.db = db

    async def summary(self, since: datetime) -> Statistics:
        """Tasks that finished from the hour of `since` on, by outcome and type, their
        success rate and mean run time (completed tasks); the tasks pending and running now
        (by type, and running by node) and the queue's length."""
        window = R.c.hour >= naive(rollups.hour_of(since.astimezone(UTC)))
        finished = (
            select(R.c.task_type, R.c.outcome, func.sum(R.c.tasks), func.sum(R.c.timed))
            .add_columns(func.sum(R.c.duration_s))
            .where(window)
            .group_by(R.c.task_type, R.c.outcome)
        )
        live = select(T.c.status, T.c.task_type, func.count()).group_by(T.c.status, T.c.task_type)
        async with self.db.read() as conn:
            rows = (await conn.execute(finished)).all()
            pending = (await conn.execute(live.where(status_is(TaskStatus.PENDING)))).all()
            running = (await conn.execute(live.where(status_is(TaskStatus.RUNNING)))).all()
            by_node = await _counts(
                conn,
                select(T.c.lease_owner, func.count()).where(status_is(TaskStatus.RUNNING)),
            )
        by_status = dict.fromkeys((s.value for s in TaskStatus), 0)
        by_type: dict[str, int] = {}
        timed = duration = 0.0
        for task_type, outcome, count, started, seconds in rows:
            by_status[str(outcome)] += int(count)
            by_type[str(task_type)] = by_type.get(str(task_type), 0) + int(count)
            if outcome == TaskStatus.COMPLETED.value:
                timed, duration = timed + int(started), duration + float(seconds)
        for status, task_type, count in (*pending, *running):
            by_status[str(status)] += int(count)
            by_type[str(task_type)] = by_type.get(str(task_type), 0) + int(count)
        completed = by_status[TaskStatus.COMPLETED.value]
        failed = by_status[TaskStatus.FAILED.value]
        return Statistics(
            since=since,
            total=sum(by_status.values()),
            by_status=by_status,
            by_type=by_type,
            success_rate=round(completed / (completed + failed), 4) if completed + failed else None,
            avg_duration_s=round(duration / timed, 3) if timed else None,
            running_by_node=by_node,
            queue_length=by_status[TaskStatus.PENDING.value],
        )

    async def queue_length(self) -> int:
        """Pending tasks, due or not."""
        async with self.db.read() as conn:
            query = select(func.count()).where(status_is(TaskStatus.PENDING))
            return int((await conn.execute(query)).scalar_one())

    async def throughput(self, start: datetime, hours: int) -> list[HourCount]:
        """Tasks that finished in each of `hours` hours from `start` (an hour boundary), by
        final status; hours without any are included with zero counts (from the rollups)."""
        start = rollups.hour_of(start.astimezone(UTC))
        end = start + timedelta(hours=hours)
        query = (
            select(R.c.hour, R.c.outcome, func.sum(R.c.tasks))
            .where(R.c.hour >= naive(start), R.c.hour < naive(end))
            .group_by(R.c.hour, R.c.outcome)
        )
        async with self.db.read() as conn:
            rows = (await conn.execute(query)).all()
        counts: dict[datetime, dict[str, int]] = {}
        for hour, status, count in rows:
            counts.setdefault(hour.replace(tzinfo=UTC), {})[str(status)] = int(count)
        out = []
        for index in range(hours):
            at = start + timedelta(hours=index)
            found = counts.get(at, {})
            out.append(HourCount(at, {s: found.get(s, 0) for s in FINISHED_VALUES}))
        return out


async def _counts(conn: Any, query: Any) -> dict[str, int]:
    """`query` (a key column and a count) grouped by its key, as {key: count}."""
    key = query.selected_columns[0]
    rows = (await conn.execute(query.group_by(key))).all()
    return {str(k): int(v) for k, v in rows}
