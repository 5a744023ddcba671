"""What a schedule is: its row in `sync_schedules`, its policies and where it was declared.

`ScheduleRecord` is the one definition of a schedule's fields (a `TableRow`, as the task's
`TaskRecord` is): the table in `schedule.models` is built from it. A schedule is a task
template (`task_type`, `parameters`, `priority`, `data_source_id`, `interface_id`,
`max_attempts`, `timeout_s`), a trigger (`schedule.triggers`) in a time zone, bounds, jitter,
an overlap and a catch-up policy, and the state the scheduler keeps: the next fire to claim
(`next_fire_at`), the newest fire handled (`last_fire_at`), a fire waiting behind the previous
task (`queued_fire_at`, overlap `queue_one`) and the last failed fire.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, Float, Integer, String, Text

from schedule.columns import TableRow, Timestamp, column
from schedule.triggers import Timing, Trigger


class Overlap(enum.StrEnum):
    """What a fire does while the previous task of its schedule is unfinished."""

    SKIP = "skip"
    """No new task (the fire counts as `skipped_overlap`)."""
    QUEUE_ONE = "queue_one"
    """One fire waits and is enqueued once the previous task finished; more are skipped."""
    CANCEL_PREVIOUS = "cancel_previous"
    """The unfinished tasks are cancelled and the new one is enqueued."""
    ALLOW = "allow"
    """A new task regardless."""


class CatchUp(enum.StrEnum):
    """What fires missed while no daemon was running become."""

    NONE = "none"
    """None: the schedule goes on from its next fire time."""
    LATEST = "latest"
    """One task, for the newest missed fire."""
    ALL = "all"
    """One task per missed fire within `catch_up_window_s`."""


class Origin(enum.StrEnum):
    """Where a schedule is declared; only `api` schedules change over the API."""

    API = "api"
    FILE = "file"
    BUILTIN = "builtin"


class FireOutcome(enum.StrEnum):
    """What one fire of a schedule did (the metrics' `outcome` label)."""

    ENQUEUED = "enqueued"
    CAUGHT_UP = "caught_up"
    SKIPPED_OVERLAP = "skipped_overlap"
    QUEUED = "queued"
    MISSED = "missed"
    FAILED = "failed"


class ScheduleRecord(TableRow):
    """One schedule: one row of `sync_schedules` (times aware UTC)."""

    id: str = column(String(64), primary_key=True)
    task_type: str = column(String(64))
    paused: bool = column(Boolean, server_default=False)
    last_fire_at: datetime | None = column(Timestamp)
    last_run_at: datetime | None = column(Timestamp)
    last_task_id: str | None = column(String(36))
    created_at: datetime = column(Timestamp)
    updated_at: datetime = column(Timestamp)
    name: str | None = column(String(255))
    origin: str | None = column(String(16))
    trigger: Any = column(JSON)
    timezone: str | None = column(String(64))
    parameters: Any = column(JSON)
    priority: int | None = column(Integer)
    data_source_id: str | None = column(String(64))
    interface_id: str | None = column(String(64))
    max_attempts: int | None = column(Integer)
    timeout_s: float | None = column(Float)
    start_at: datetime | None = column(Timestamp)
    end_at: datetime | None = column(Timestamp)
    jitter_s: float | None = column(Float)
    overlap: str | None = column(String(16))
    catch_up: str | None = column(String(16))
    catch_up_window_s: float | None = column(Float)
    pause_note: str | None = column(Text)
    next_fire_at: datetime | None = column(Timestamp)
    queued_fire_at: datetime | None = column(Timestamp)
    last_error: str | None = column(Text)
    last_error_at: datetime | None = column(Timestamp)

    def timing(self, default_zone: str) -> Timing:
        """The trigger placed in time (the daemon's zone when the schedule names none)."""
        return Timing(
            trigger_of(self.trigger),
            self.timezone or default_zone,
            anchor=self.start_at or self.created_at,
            start_at=self.start_at,
            end_at=self.end_at,
        )

    @property
    def overlap_policy(self) -> Overlap:
        return Overlap(self.overlap or Overlap.SKIP)

    @property
    def catch_up_policy(self) -> CatchUp:
        return CatchUp(self.catch_up or CatchUp.LATEST)


def trigger_of(spec: Any) -> Trigger:
    """The stored trigger (`{"cron"}`, `{"every_s"}` or `{"at"}`) as a `Trigger`."""
    if "cron" in spec:
        return Trigger(cron=spec["cron"])
    if "every_s" in spec:
        return Trigger(every_s=float(spec["every_s"]))
    return Trigger(at=datetime.fromisoformat(spec["at"]))


@dataclass(frozen=True)
class ScheduleSpec:
    """A schedule as it is declared (API body, settings file, built-in): checked by the
    scheduler before it is stored."""

    id: str
    task_type: str
    trigger: Trigger
    name: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    priority: int | None = None
    data_source_id: str | None = None
    interface_id: str | None = None
    max_attempts: int | None = None
    timeout_s: float | None = None
    timezone: str | None = None
    start_at: datetime | None = None
    end_at: datetime | None = None
    jitter_s: float = 0.0
    overlap: Overlap = Overlap.SKIP
    catch_up: CatchUp = CatchUp.LATEST
    catch_up_window_s: float | None = None
    paused: bool = False
    pause_note: str | None = None
    origin: Origin = Origin.API
