"""Fire times: cron on the zone's wall clock (daylight saving changes), intervals, one-offs,
bounds; the trigger in words; the catch-up rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from schedule.exceptions import InvalidInput
from schedule.triggers import Timing, Trigger, check_cron, check_interval, check_zone

ANCHOR = datetime(2026, 1, 1, tzinfo=UTC)


def fires(cron: str, zone: str, after: datetime, until: datetime) -> list[str]:
    timing = Timing(Trigger(cron=cron), zone, anchor=ANCHOR)
    return [f.isoformat() for f in timing.fires_between(after, until)]


def test_a_0230_job_fires_once_on_the_spring_forward_day() -> None:
    # Europe/Berlin, 2026-03-29: 02:00 CET becomes 03:00 CEST; 02:30 does not exist.
    got = fires(
        "30 2 * * *",
        "Europe/Berlin",
        datetime(2026, 3, 27, 12, tzinfo=UTC),
        datetime(2026, 3, 30, 12, tzinfo=UTC),
    )
    # 02:30 CET on the 28th, the gap's 02:30 at the old offset (03:30 CEST) on the 29th,
    # 02:30 CEST on the 30th.
    assert got == [
        "2026-03-28T01:30:00+00:00",
        "2026-03-29T01:30:00+00:00",
        "2026-03-30T00:30:00+00:00",
    ]


def test_a_0230_job_fires_once_on_the_fall_back_day() -> None:
    # Europe/Berlin, 2026-10-25: 03:00 CEST becomes 02:00 CET; 02:30 happens twice.
    got = fires(
        "30 2 * * *",
        "Europe/Berlin",
        datetime(2026, 10, 23, 12, tzinfo=UTC),
        datetime(2026, 10, 26, 12, tzinfo=UTC),
    )
    assert got == [
        "2026-10-24T00:30:00+00:00",
        "2026-10-25T00:30:00+00:00",  # the first 02:30 (CEST) only
        "2026-10-26T01:30:00+00:00",
    ]


def test_the_repeated_hour_does_not_repeat_fires_or_go_backwards() -> None:
    got = fires(
        "*/30 * * * *",
        "Europe/Berlin",
        datetime(2026, 10, 24, 23, 15, tzinfo=UTC),
        datetime(2026, 10, 25, 2, 15, tzinfo=UTC),
    )
    assert got == [
        "2026-10-24T23:30:00+00:00",  # 01:30 CEST
        "2026-10-25T00:00:00+00:00",  # 02:00 CEST
        "2026-10-25T00:30:00+00:00",  # 02:30 CEST; the CET 02:00 and 02:30 are not repeated
        "2026-10-25T02:00:00+00:00",  # 03:00 CET
    ]


def test_interval_one_off_and_bounds() -> None:
    start = datetime(2026, 5, 1, 10, 0, tzinfo=UTC)
    every = Timing(Trigger(every_s=900), "Europe/Moscow", anchor=start)
    assert every.upcoming(start + timedelta(minutes=1), 3) == [
        start + timedelta(minutes=m) for m in (15, 30, 45)
    ]
    once = Timing(Trigger(at=start), "UTC", anchor=ANCHOR)
    assert once.next_after(start - timedelta(seconds=1)) == start
    assert once.next_after(start) is None
    bounded = Timing(
        Trigger(cron="0 * * * *"),
        "UTC",
        anchor=ANCHOR,
        start_at=start + timedelta(minutes=30),
        end_at=start + timedelta(hours=2),
    )
    assert bounded.upcoming(start - timedelta(days=1), 5) == [
        start + timedelta(hours=1),
        start + timedelta(hours=2),
    ]


def test_triggers_in_words() -> None:
    assert Trigger(cron="*/15 * * * *").describe() == "Every 15 minutes"
    assert Trigger(every_s=3600).describe() == "Every hour"
    assert Trigger(every_s=90).describe() == "Every 90 seconds"
    assert Trigger(at=ANCHOR).describe() == "Once, at 2026-01-01T00:00:00Z"


@pytest.mark.parametrize(
    ("check", "value", "message"),
    [
        (check_cron, "61 * * * *", "trigger.cron: Error validating expression '61'"),
        (check_cron, "* * * *", "trigger.cron: expected 5 fields"),
        (check_zone, "Mars/Olympus", "timezone: unknown time zone 'Mars/Olympus'"),
        (check_interval, 0.5, "trigger.every_s: must be at least 1 second"),
    ],
)
def test_bad_triggers_name_the_field(check: object, value: object, message: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        check(value)  # type: ignore[operator]
    assert str(caught.value).startswith(message)
