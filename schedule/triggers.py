"""When a schedule fires: its trigger (`cron`, `every_s` or a one-off `at`) as fire times.

Pure rules, no database. The fire times come from APScheduler's trigger classes:

* `cron` (five fields) is `CronTrigger` evaluated on the wall clock of the schedule's zone, and
  each wall time is then placed in the zone. Daylight saving time is handled the way cron does
  it: a wall time that does not exist on the spring-forward day (02:30 in Europe/Berlin) fires
  at the same offset as before the change (03:30 summer time), and a wall time that occurs
  twice on the fall-back day fires once, at its first occurrence. So a job at 02:30 fires once
  on both change days. (APScheduler's own zone-aware iteration yields both occurrences on the
  fall-back day, and can repeat an earlier time there.)
* `every_s` is `IntervalTrigger` in UTC from the schedule's anchor (its `start_at`, else the
  time it was created): plain elapsed seconds, untouched by the zone's clock changes.
* `at` is `DateTrigger`: one fire, then none.

`start_at` and `end_at` bound every trigger: no fire before the first nor after the second.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger
from cron_descriptor import Options, get_description  # type: ignore[import-untyped]

from schedule.exceptions import FieldProblem, InvalidInput

_TICK = timedelta(microseconds=1)
#: The longest run of fire times `fires_between` walks for one schedule in one call.
MAX_FIRES = 10_000


@dataclass(frozen=True)
class Trigger:
    """One schedule's trigger: exactly one of `cron`, `every_s`, `at` is set."""

    cron: str | None = None
    every_s: float | None = None
    at: datetime | None = None

    def describe(self) -> str:
        """The trigger in words ("Every 15 minutes"; cron-descriptor for a cron)."""
        if self.cron is not None:
            return describe_cron(self.cron)
        if self.every_s is not None:
            return "Every " + _duration(self.every_s)
        assert self.at is not None
        return "Once, at " + self.at.astimezone(UTC).isoformat().replace("+00:00", "Z")

    def spec(self) -> dict[str, object]:
        """The trigger as the API shows it."""
        if self.cron is not None:
            return {"cron": self.cron}
        if self.every_s is not None:
            return {"every_s": self.every_s}
        assert self.at is not None
        return {"at": self.at.astimezone(UTC).isoformat().replace("+00:00", "Z")}


@dataclass(frozen=True)
class Timing:
    """A trigger placed in time: the zone, the bounds and the interval's anchor."""

    trigger: Trigger
    timezone: str
    anchor: datetime
    start_at: datetime | None = None
    end_at: datetime | None = None

    @property
    def zone(self) -> ZoneInfo:
        return zone(self.timezone)

    def next_after(self, after: datetime) -> datetime | None:
        """The first fire time strictly after `after` (aware UTC), or None when there is no
        more (a one-off that fired, or past `end_at`)."""
        if self.start_at is not None and after < self.start_at:
            after = self.start_at - _TICK
        fire = self._next_raw(after)
        if fire is None or (self.end_at is not None and fire > self.end_at):
            return None
        return fire

    def _next_raw(self, after: datetime) -> datetime | None:
        t = self.trigger
        if t.cron is not None:
            return _next_cron(t.cron, self.zone, after)
        if t.every_s is not None:
            start = self.start_at or self.anchor
            interval = IntervalTrigger(seconds=t.every_s, start_date=start, timezone=UTC)
            return _aware(interval.get_next_fire_time(None, after + _TICK))
        assert t.at is not None
        once = _aware(DateTrigger(run_date=t.at, timezone=UTC).get_next_fire_time(None, after))
        return once if once is not None and once > after else None

    def fires_between(self, after: datetime, until: datetime) -> Iterator[datetime]:
        """Fire times in `(after, until]`, oldest first (at most `MAX_FIRES`)."""
        fire = self.next_after(after)
        count = 0
        while fire is not None and fire <= until and count < MAX_FIRES:
            yield fire
            count += 1
            fire = self.next_after(fire)

    def upcoming(self, after: datetime, count: int) -> list[datetime]:
        """The next `count` fire times after `after`."""
        out: list[datetime] = []
        fire = self.next_after(after)
        while fire is not None and len(out) < count:
            out.append(fire)
            fire = self.next_after(fire)
        return out


@functools.lru_cache(maxsize=4096)
def describe_cron(cron: str) -> str:
    """A cron in words, by cron-descriptor (which reads its translation file on each call:
    call it off the event loop; the result is kept)."""
    return str(get_description(cron, Options()))


def _duration(seconds: float) -> str:
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            n = int(seconds // size)
            return f"{n} {unit}s" if n != 1 else unit
    return f"{seconds:g} seconds" if seconds != 1 else "second"


def _aware(value: datetime | None) -> datetime | None:
    return None if value is None else value.astimezone(UTC)


def _next_cron(cron: str, zone: ZoneInfo, after: datetime) -> datetime | None:
    """The next wall time of `cron` in `zone` whose instant is after `after`."""
    trigger = _wall_trigger(cron)
    wall = after.astimezone(zone).replace(tzinfo=UTC)  # the wall clock, as if it were UTC
    for _ in range(3):  # a fall-back fold can put up to two wall times behind `after`
        nxt: datetime | None = trigger.get_next_fire_time(None, wall + _TICK)
        if nxt is None:
            return None
        fire: datetime = nxt.replace(tzinfo=zone, fold=0).astimezone(UTC)
        if fire > after:
            return fire
        wall = nxt
    return None


@functools.lru_cache(maxsize=4096)
def _wall_trigger(cron: str) -> CronTrigger:
    return CronTrigger.from_crontab(cron, timezone=UTC)


# ---- validation: each problem names its field ------------------------------------------------


def check_cron(cron: str, field: str = "trigger.cron") -> str:
    """`cron` when it is a valid five-field expression, else `InvalidInput` with the parser's
    own words."""
    fields = cron.split()
    if len(fields) != 5:
        raise InvalidInput(
            [
                FieldProblem(
                    field, f"expected 5 fields (minute hour day month weekday), got {len(fields)}"
                )
            ]
        )
    try:
        _wall_trigger(cron)
    except ValueError as exc:
        raise InvalidInput([FieldProblem(field, str(exc))]) from None
    return " ".join(fields)


@functools.lru_cache(maxsize=1024)
def zone(name: str) -> ZoneInfo:
    """The zone `name`, loaded once per process (its first load reads a file: schedulers load
    the zones of the schedules they see with `check_zone` off the event loop first)."""
    return ZoneInfo(name)


def check_zone(name: str, field: str = "timezone") -> str:
    """`name` when it is an IANA zone this machine knows, else `InvalidInput` (reads the
    zone's file the first time: call it off the event loop)."""
    try:
        zone(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidInput(
            [
                FieldProblem(
                    field, f"unknown time zone {name!r} (an IANA name such as Europe/Moscow)"
                )
            ]
        ) from None
    return name


def check_interval(every_s: float, field: str = "trigger.every_s") -> float:
    """`every_s` when it is at least one second."""
    if every_s < 1:
        raise InvalidInput([FieldProblem(field, f"must be at least 1 second, got {every_s:g}")])
    return every_s


def check_bounds(start_at: datetime | None, end_at: datetime | None) -> None:
    """`end_at`, when both are set, must come after `start_at`."""
    if start_at is not None and end_at is not None and end_at <= start_at:
        raise InvalidInput([FieldProblem("end_at", "must be after start_at")])
