"""Statistics over the task table: counts by status and type, success rate, mean duration,
the queue's length and finished tasks per hour (read only)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, literal_column, select

from schedule.clock import naive
from schedule.models import status_is
from schedule.records import HourCount, Statistics
from schedule.store.connector import HOUR_FORMAT, Connector
from schedule.store.queries import FINISHED_VALUES, T
from schedule.task import TaskStatus


class TaskStatistics:
    """Aggregates for `/statistics`, the dashboard's charts, metrics and the systemd status."""

    def __init__(self, db: Connector) -> None:
        self.db = db

    async def summary(self, since: datetime) -> Statistics:
        """Counts by status and type, success rate and mean duration of tasks created since
        `since`; tasks running by node and the queue's length now."""
        recent = T.c.created_at >= naive(since)
        duration = self.db.seconds_between(T.c.started_at, T.c.finished_at)
        async with self.db.read() as conn:
            by_status = await _counts(conn, select(T.c.status, func.count()).where(recent))
            by_type = await _counts(conn, select(T.c.task_type, func.count()).where(recent))
            done = and_(
                recent, T.c.status == TaskStatus.COMPLETED.value, T.c.started_at.is_not(None)
            )
            avg = (await conn.execute(select(func.avg(duration)).where(done))).scalar_one()
            running = await _counts(
                conn,
                select(T.c.lease_owner, func.count()).where(status_is(TaskStatus.RUNNING)),
            )
            queued = (
                await conn.execute(select(func.count()).where(status_is(TaskStatus.PENDING)))
            ).scalar_one()
        completed = by_status.get(TaskStatus.COMPLETED.value, 0)
        failed = by_status.get(TaskStatus.FAILED.value, 0)
        return Statistics(
            since=since,
            total=sum(by_status.values()),
            by_status={s.value: int(by_status.get(s.value, 0)) for s in TaskStatus},
            by_type=by_type,
            success_rate=round(completed / (completed + failed), 4) if completed + failed else None,
            avg_duration_s=round(float(avg), 3) if avg is not None else None,
            running_by_node=running,
            queue_length=int(queued),
        )

    async def queue_length(self) -> int:
        """Pending tasks, due or not."""
        async with self.db.read() as conn:
            query = select(func.count()).where(status_is(TaskStatus.PENDING))
            return int((await conn.execute(query)).scalar_one())

    async def throughput(self, start: datetime, hours: int) -> list[HourCount]:
        """Tasks that finished in each of `hours` hours from `start` (an hour boundary), by
        final status; hours without any are included with zero counts."""
        start = start.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        end = start + timedelta(hours=hours)
        bucket = self.db.hour_of(T.c.finished_at).label("bucket")
        query = (
            select(bucket, T.c.status, func.count())
            .where(
                T.c.finished_at >= naive(start),
                T.c.finished_at < naive(end),
                T.c.status.in_(FINISHED_VALUES),
            )
            .group_by(literal_column("bucket"), T.c.status)
        )
        async with self.db.read() as conn:
            rows = (await conn.execute(query)).all()
        counts: dict[datetime, dict[str, int]] = {}
        for hour, status, count in rows:
            at = datetime.strptime(str(hour), HOUR_FORMAT).replace(tzinfo=UTC)
            counts.setdefault(at, {})[str(status)] = int(count)
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
