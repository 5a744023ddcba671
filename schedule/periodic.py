"""Periodic jobs: cron triggers that only enqueue tasks through `ScheduleService`.

Every daemon runs the same APScheduler jobs. A fire enqueues with the dedupe key
`{job_id}@{scheduled fire time}` and then records that fire in `sync_schedules`; a daemon that
finds the fire already recorded (or whose create is deduplicated onto the unfinished task of the
same fire) adds nothing, so several daemons sharing one database create one task per fire.

The newest fire is the catch-up baseline: at start-up, if the newest scheduled time since the
baseline has passed while the daemon was down, it is fired once, however many periods were
missed (coalesced). A paused job never fires; resuming moves its baseline to now, so the fires
skipped while paused are not caught up.

Each fire is published on the service's event bus (`schedule_fired`, with whether it enqueued).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger

from config.settings import Role, Settings
from schedule.clock import Clock, utcnow
from schedule.events import EventKind, FireEvent
from schedule.exceptions import NotFound
from schedule.records import TaskRequest
from schedule.schedules import ScheduleRow, ScheduleStore
from schedule.service import ScheduleService
from schedule.task import TaskRecord

log = logging.getLogger(__name__)

_WINDOWS = (timedelta(hours=1), timedelta(days=1), timedelta(days=32), timedelta(days=400))
_TICK = timedelta(microseconds=1)


@dataclass(frozen=True)
class PeriodicJob:
    """One cron job: which task type it enqueues, when, and the setting that says so."""

    id: str
    task_type: str
    cron: str
    setting: str

    def trigger(self, tz: tzinfo) -> CronTrigger:
        """The APScheduler trigger in the configured time zone."""
        return CronTrigger.from_crontab(self.cron, timezone=tz)


@dataclass(frozen=True)
class ScheduleView:
    """A job as `GET /api/schedules` shows it."""

    id: str
    task_type: str
    cron: str
    timezone: str
    next_run_at: datetime | None
    last_run_at: datetime | None
    last_task_id: str | None
    paused: bool


def default_jobs(settings: Settings) -> list[PeriodicJob]:
    """The built-in jobs, with their crons from the settings."""
    return [
        PeriodicJob(
            "partnumber_book_create",
            "partnumber_book_create",
            settings.snapshot_cron,
            "SYNCD_SNAPSHOT_CRON",
        ),
        PeriodicJob(
            "partnumber_book_retention",
            "partnumber_book_retention",
            settings.retention_cron,
            "SYNCD_RETENTION_CRON",
        ),
        PeriodicJob(
            "task_retention",
            "task_retention",
            settings.task_retention_cron,
            "SYNCD_TASK_RETENTION_CRON",
        ),
    ]


def latest_fire(trigger: CronTrigger, after: datetime, now: datetime) -> datetime | None:
    """The newest fire time in `(after, now]`, or None.

    Searches growing windows back from `now` so that a long outage with a frequent cron costs
    a few iterations, not one per missed period.
    """
    for window in _WINDOWS:
        start = max(after, now - window)
        found = _last_in(trigger, start, now)
        if found is not None or start == after:
            return found
    return _last_in(trigger, after, now)


def _last_in(trigger: CronTrigger, start: datetime, now: datetime) -> datetime | None:
    last = None
    fire = trigger.get_next_fire_time(None, start + _TICK)
    while fire is not None and fire <= now:
        last = fire
        fire = trigger.get_next_fire_time(fire, fire + _TICK)
    return last


class PeriodicScheduler:
    """Runs the cron jobs of this daemon; each fire only enqueues a task."""

    def __init__(
        self,
        service: ScheduleService,
        store: ScheduleStore,
        settings: Settings,
        jobs: Sequence[PeriodicJob] | None = None,
        clock: Clock = utcnow,
    ) -> None:
        self.service = service
        self.store = store
        self.settings = settings
        self.tz = settings.tz
        self.jobs = {j.id: j for j in (jobs if jobs is not None else default_jobs(settings))}
        self.triggers = {j.id: j.trigger(self.tz) for j in self.jobs.values()}
        self.clock = clock
        self._scheduler: AsyncIOScheduler | None = None

    # ---- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Create missing rows, catch up a missed fire per job, then start the cron triggers."""
        await self.store.ensure([(j.id, j.task_type) for j in self.jobs.values()])
        await self.catch_up()
        scheduler = AsyncIOScheduler(timezone=self.tz)
        for job_id, trigger in self.triggers.items():
            scheduler.add_job(
                self.on_fire,
                trigger,
                args=[job_id],
                id=job_id,
                coalesce=True,
                max_instances=1,
                misfire_grace_time=None,
            )
        scheduler.start()
        self._scheduler = scheduler
        log.info("periodic jobs started", extra={"action": "scheduler", "jobs": list(self.jobs)})

    async def stop(self) -> None:
        """Stop the cron triggers (enqueued tasks are the engine's business)."""
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
            self._scheduler = None

    def cron_jobs(self) -> list[Any]:
        """The APScheduler jobs while started (none once stopped)."""
        return [] if self._scheduler is None else list(self._scheduler.get_jobs())

    async def catch_up(self) -> list[TaskRecord]:
        """Fire once each job whose newest scheduled time passed since its last fire."""
        fired = []
        now = self.clock()
        for job_id in self.jobs:
            row = await self.store.require(job_id)
            if row.paused:
                continue
            due = latest_fire(self.triggers[job_id], self._baseline(row), now)
            if due is not None:
                task = await self.fire(job_id, due)
                if task is not None:
                    fired.append(task)
        return fired

    @staticmethod
    def _baseline(row: ScheduleRow) -> datetime:
        return row.last_fire_at or row.created_at

    async def on_fire(self, job_id: str) -> None:
        """APScheduler's callback: enqueue for the fire time that just passed (a failure is
        logged and published, never raised)."""
        try:
            row = await self.store.require(job_id)
            due = latest_fire(self.triggers[job_id], self._baseline(row), self.clock())
            if due is not None:
                await self.fire(job_id, due)
        except Exception:
            log.exception("periodic job failed to enqueue", extra={"action": "fire", "job": job_id})
            self._announce(job_id, ok=False)

    def _announce(self, job_id: str, ok: bool) -> None:
        self.service.bus.publish(FireEvent(EventKind.SCHEDULE_FIRED, job_id, ok))

    # ---- actions ----------------------------------------------------------------------------

    async def fire(self, job_id: str, scheduled: datetime) -> TaskRecord | None:
        """Enqueue the task of one scheduled fire; None when paused or already fired."""
        job = self._job(job_id)
        row = await self.store.require(job_id)
        if row.paused or (row.last_fire_at is not None and row.last_fire_at >= scheduled):
            return None
        stamp = scheduled.astimezone(UTC).isoformat().replace("+00:00", "Z")
        task, created = await self.service.create(
            TaskRequest(task_type=job.task_type, dedupe_key=f"{job_id}@{stamp}")
        )
        await self.store.record_fire(job_id, scheduled, task.id)
        self._announce(job_id, ok=True)
        log.info(
            "periodic job fired",
            extra={"action": "fire", "job": job_id, "task_id": task.id, "task_created": created},
        )
        return task

    async def run_now(self, job_id: str, *, role: Role | None = None) -> TaskRecord:
        """Enqueue the job's task now, by hand (the cron baseline is unchanged); `role` is the
        caller's, checked like a create (`ScheduleService`)."""
        job = self._job(job_id)
        await self.store.require(job_id)
        task, _ = await self.service.create(TaskRequest(task_type=job.task_type), role=role)
        await self.store.record_run(job_id, task.id)
        return task

    async def pause(self, job_id: str) -> ScheduleView:
        """Stop firing the job (on every daemon, across restarts)."""
        self._job(job_id)
        return self._view(await self.store.set_paused(job_id, True))

    async def resume(self, job_id: str) -> ScheduleView:
        """Fire the job again from its next scheduled time; paused fires are not caught up."""
        self._job(job_id)
        row = await self.store.require(job_id)
        skip = latest_fire(self.triggers[job_id], self._baseline(row), self.clock())
        return self._view(await self.store.set_paused(job_id, False, skip_until=skip))

    async def views(self) -> list[ScheduleView]:
        """Every job with its next and last run."""
        return [self._view(await self.store.require(job_id)) for job_id in self.jobs]

    async def view(self, job_id: str) -> ScheduleView:
        """One job."""
        self._job(job_id)
        return self._view(await self.store.require(job_id))

    def _job(self, job_id: str) -> PeriodicJob:
        try:
            return self.jobs[job_id]
        except KeyError:
            raise NotFound(f"no schedule {job_id!r}; known: {', '.join(self.jobs)}") from None

    def _view(self, row: ScheduleRow) -> ScheduleView:
        job = self.jobs[row.id]
        next_run = None
        if not row.paused:
            next_run = self.triggers[row.id].get_next_fire_time(None, self.clock())
        return ScheduleView(
            id=job.id,
            task_type=job.task_type,
            cron=job.cron,
            timezone=self.settings.timezone,
            next_run_at=next_run,
            last_run_at=row.last_run_at,
            last_task_id=row.last_task_id,
            paused=row.paused,
        )
