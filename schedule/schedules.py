"""Persistent state of the periodic jobs (`sync_schedules`): last fire, last task, paused.

Shared by every daemon on the database, so a pause made through one daemon's API holds for all,
and survives restarts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from schedule.clock import Clock, naive, utc, utcnow
from schedule.exceptions import NotFound
from schedule.models import sync_schedules
from schedule.store import Connector

S = sync_schedules


@dataclass(frozen=True)
class ScheduleRow:
    """One row of `sync_schedules` (times aware UTC)."""

    id: str
    task_type: str
    paused: bool
    last_fire_at: datetime | None
    last_run_at: datetime | None
    last_task_id: str | None
    created_at: datetime


class ScheduleStore:
    """Reads and writes `sync_schedules`."""

    def __init__(self, db: Connector, clock: Clock = utcnow) -> None:
        self.db = db
        self.clock = clock

    async def ensure(self, jobs: Sequence[tuple[str, str]]) -> None:
        """Create the rows of `(id, task_type)` jobs that have none yet (first start)."""
        now = naive(self.clock())
        for job_id, task_type in jobs:
            if await self.get(job_id) is not None:
                continue
            try:
                async with self.db.write() as conn:
                    await conn.execute(
                        insert(S).values(
                            id=job_id,
                            task_type=task_type,
                            paused=False,
                            created_at=now,
                            updated_at=now,
                        )
                    )
            except IntegrityError:
                pass  # another daemon created it at the same moment

    async def get(self, job_id: str) -> ScheduleRow | None:
        """A job's row, or None."""
        async with self.db.read() as conn:
            row = (await conn.execute(select(S).where(S.c.id == job_id))).first()
        if row is None:
            return None
        return ScheduleRow(
            id=row.id,
            task_type=row.task_type,
            paused=bool(row.paused),
            last_fire_at=utc(row.last_fire_at),
            last_run_at=utc(row.last_run_at),
            last_task_id=row.last_task_id,
            created_at=utc(row.created_at) or self.clock(),
        )

    async def require(self, job_id: str) -> ScheduleRow:
        """A job's row, or `NotFound`."""
        row = await self.get(job_id)
        if row is None:
            raise NotFound(f"no schedule {job_id!r}")
        return row

    async def record_fire(self, job_id: str, fire_at: datetime, task_id: str) -> bool:
        """Note a scheduled fire and its task; False when a newer fire was already noted."""
        now = naive(self.clock())
        fire = naive(fire_at)
        async with self.db.write() as conn:
            result = await conn.execute(
                update(S)
                .where(S.c.id == job_id, or_(S.c.last_fire_at.is_(None), S.c.last_fire_at < fire))
                .values(last_fire_at=fire, last_run_at=now, last_task_id=task_id, updated_at=now)
            )
        return bool(result.rowcount)

    async def record_run(self, job_id: str, task_id: str) -> None:
        """Note a run requested by hand (the fire baseline is left alone)."""
        now = naive(self.clock())
        async with self.db.write() as conn:
            await conn.execute(
                update(S)
                .where(S.c.id == job_id)
                .values(last_run_at=now, last_task_id=task_id, updated_at=now)
            )

    async def set_paused(
        self, job_id: str, paused: bool, skip_until: datetime | None = None
    ) -> ScheduleRow:
        """Pause or resume; `skip_until` moves the fire baseline so paused fires are skipped."""
        now = naive(self.clock())
        async with self.db.write() as conn:
            result = await conn.execute(
                update(S).where(S.c.id == job_id).values(paused=paused, updated_at=now)
            )
            if result.rowcount and skip_until is not None:
                fire = naive(skip_until)
                await conn.execute(
                    update(S)
                    .where(
                        S.c.id == job_id, or_(S.c.last_fire_at.is_(None), S.c.last_fire_at < fire)
                    )
                    .values(last_fire_at=fire)
                )
        return await self.require(job_id)
