"""GFS retention of partnumber books against hand-made calendars and a brute-force model."""

from __future__ import annotations

import random
from collections.abc import Callable, Hashable, Sequence
from datetime import UTC, date, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo

import pytest

from schedule.gfs import BookStamp, GfsDecision, KeepPolicy, select_books

MOSCOW = ZoneInfo("Europe/Moscow")
NEW_YORK = ZoneInfo("America/New_York")
NOW = datetime(2030, 1, 1, tzinfo=UTC)


def book(book_id: int, when: str, active: bool = False) -> BookStamp:
    """A book created at ``when`` (ISO text, UTC unless it carries an offset)."""
    created = datetime.fromisoformat(when)
    if created.tzinfo is None:
        created = created.replace(tzinfo=UTC)
    return BookStamp(book_id, f"v{book_id}", created, active)


def calendar(*whens: str) -> list[BookStamp]:
    """Books numbered 1, 2, ... in the order given (give them oldest first)."""
    return [book(i, when) for i, when in enumerate(whens, start=1)]


def only(**counts: int) -> KeepPolicy:
    """A policy with every tier disabled except the ones named."""
    return KeepPolicy(**({"daily": 0, "weekly": 0, "monthly": 0, "yearly": 0} | counts))


def kept(decision: GfsDecision) -> list[int]:
    return [b.book_id for b in decision.keep]


def kept_days(decision: GfsDecision) -> list[str]:
    return [b.created_at.date().isoformat() for b in decision.keep]


# --- policy ---------------------------------------------------------------------------------


def test_policy_defaults() -> None:
    assert KeepPolicy() == KeepPolicy(daily=7, weekly=5, monthly=12, yearly=10)


@pytest.mark.parametrize("tier", ["daily", "weekly", "monthly", "yearly"])
def test_negative_count_is_refused_naming_the_tier(tier: str) -> None:
    with pytest.raises(ValueError, match=tier):
        KeepPolicy(**{tier: -1})


def test_non_int_count_is_refused() -> None:
    with pytest.raises(TypeError, match="weekly"):
        KeepPolicy(weekly=True)


def test_naive_timestamps_are_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        BookStamp(1, "v1", datetime(2026, 1, 1), False)
    with pytest.raises(ValueError, match="aware"):
        select_books([], KeepPolicy(), UTC, datetime(2026, 1, 1))


def test_duplicate_ids_are_refused() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        select_books([book(1, "2026-01-01"), book(1, "2026-01-02")], KeepPolicy(), UTC, NOW)


# --- buckets --------------------------------------------------------------------------------


def test_no_books() -> None:
    decision = select_books([], KeepPolicy(), UTC, NOW)
    assert decision == GfsDecision((), (), {})


def test_several_books_a_day_only_the_newest_counts_for_daily() -> None:
    books = calendar(
        "2026-02-27T09:00",
        "2026-02-28T10:00",
        "2026-03-01T08:00",
        "2026-03-01T12:00",
        "2026-03-01T18:00",
    )
    decision = select_books(books, only(daily=2), UTC, NOW)
    assert kept(decision) == [5, 2]
    assert [b.book_id for b in decision.delete] == [4, 3, 1]
    assert decision.reasons == {5: ("daily",), 2: ("daily",)}


def test_iso_week_53_of_2020_spans_new_year() -> None:
    # 2020-12-31 (Thu) and 2021-01-03 (Sun) are both ISO 2020-W53; 2021-01-04 opens 2021-W01.
    assert date(2021, 1, 3).isocalendar()[:2] == (2020, 53)
    books = calendar("2020-12-24T02:00", "2020-12-31T02:00", "2021-01-03T02:00", "2021-01-04T02:00")
    assert kept_days(select_books(books, only(weekly=3), UTC, NOW)) == [
        "2021-01-04",
        "2021-01-03",
        "2020-12-24",
    ]


def test_iso_week_53_of_2026_holds_different_months_and_years() -> None:
    # 2026-12-31 is ISO 2026-W53, and so are 2027-01-01 and 2027-01-03; 2027-01-04 is 2027-W01.
    assert date(2026, 12, 31).isocalendar()[:2] == (2026, 53)
    assert date(2027, 1, 3).isocalendar()[:2] == (2026, 53)
    books = calendar("2026-12-28T02:00", "2026-12-31T02:00", "2027-01-01T02:00", "2027-01-04T02:00")
    assert kept_days(select_books(books, only(weekly=9), UTC, NOW)) == ["2027-01-04", "2027-01-01"]
    # The same week is two months and two years.
    assert kept_days(select_books(books, only(monthly=9), UTC, NOW)) == ["2027-01-04", "2026-12-31"]
    assert kept_days(select_books(books, only(yearly=9), UTC, NOW)) == ["2027-01-04", "2026-12-31"]


def test_buckets_without_books_are_not_counted() -> None:
    # Months and weeks with no book do not use up the tier: monthly=2 reaches back to June.
    books = calendar("2025-01-15", "2025-06-10", "2025-06-20", "2025-12-01", "2025-12-05")
    assert kept_days(select_books(books, only(monthly=2), UTC, NOW)) == ["2025-12-05", "2025-06-20"]
    assert kept_days(select_books(books, only(weekly=3), UTC, NOW)) == [
        "2025-12-05",
        "2025-06-20",
        "2025-06-10",
    ]
    assert kept_days(select_books(books, only(daily=10), UTC, NOW)) == [
        "2025-12-05",
        "2025-12-01",
        "2025-06-20",
        "2025-06-10",
        "2025-01-15",
    ]


def test_tiers_keep_fewer_when_history_is_short() -> None:
    books = calendar("2024-05-01", "2025-05-01")
    decision = select_books(books, KeepPolicy(), UTC, NOW)
    assert kept(decision) == [2, 1]
    assert decision.reasons[1] == ("daily", "weekly", "monthly", "yearly")


# --- time zones -----------------------------------------------------------------------------


def test_time_zone_moves_a_book_to_the_next_day() -> None:
    # 20:00 UTC is 23:00 in Moscow, 23:30 UTC is 02:30 the next day there.
    books = calendar("2026-03-01T20:00", "2026-03-01T23:30")
    assert kept(select_books(books, only(daily=5), UTC, NOW)) == [2]
    assert kept(select_books(books, only(daily=5), MOSCOW, NOW)) == [2, 1]


def test_time_zone_moves_a_book_to_the_previous_day() -> None:
    # 03:00 UTC on March 2 is 22:00 on March 1 in New York.
    books = calendar("2026-03-01T12:00", "2026-03-02T03:00")
    assert kept(select_books(books, only(daily=5), UTC, NOW)) == [2, 1]
    assert kept(select_books(books, only(daily=5), NEW_YORK, NOW)) == [2]


def test_time_zone_moves_a_book_across_a_month_and_year() -> None:
    # 2025-12-31 22:00 UTC is 2026-01-01 01:00 in Moscow.
    books = calendar("2025-12-31T10:00", "2025-12-31T22:00")
    assert kept(select_books(books, only(monthly=5), UTC, NOW)) == [2]
    assert kept(select_books(books, only(monthly=5), MOSCOW, NOW)) == [2, 1]
    assert kept(select_books(books, only(yearly=5), MOSCOW, NOW)) == [2, 1]


# --- disabled tiers, active and future books ------------------------------------------------


def test_all_tiers_disabled_keeps_only_the_active_book() -> None:
    books = calendar("2026-01-01", "2026-01-02", "2026-01-03")
    books[1] = book(2, "2026-01-02", active=True)
    decision = select_books(books, only(), UTC, NOW)
    assert kept(decision) == [2]
    assert decision.reasons == {2: ("active",)}


def test_disabled_tier_gives_no_reason() -> None:
    books = calendar("2026-01-01", "2026-01-02")
    decision = select_books(books, only(weekly=1, yearly=1), UTC, NOW)
    assert decision.reasons == {2: ("weekly", "yearly")}


def test_old_active_book_is_kept() -> None:
    nightly = [book(i, f"2026-01-{i:02d}T02:00") for i in range(1, 21)]
    nightly[0] = book(1, "2026-01-01T02:00", active=True)
    decision = select_books(nightly, only(daily=3), UTC, NOW)
    assert kept(decision) == [20, 19, 18, 1]
    assert decision.reasons[1] == ("active",)


def test_active_newest_book_reports_every_tier() -> None:
    books = calendar("2026-01-01", "2026-01-02")
    books[1] = book(2, "2026-01-02", active=True)
    decision = select_books(books, KeepPolicy(), UTC, NOW)
    assert decision.reasons[2] == ("daily", "weekly", "monthly", "yearly", "active")


def test_future_books_are_kept_and_take_no_slot() -> None:
    now = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
    books = calendar(
        "2026-03-08T02:00",
        "2026-03-09T02:00",
        "2026-03-10T02:00",
        "2026-03-10T12:00",  # exactly now: not in the future
        "2026-03-10T12:05",  # a node with a clock five minutes fast
        "2026-03-11T02:00",
    )
    books[5] = book(6, "2026-03-11T02:00", active=True)
    decision = select_books(books, only(daily=2), UTC, now)
    assert kept(decision) == [6, 5, 4, 2]
    assert decision.reasons == {
        6: ("future", "active"),
        5: ("future",),
        4: ("daily",),
        2: ("daily",),
    }


def test_ties_are_broken_by_id_whatever_the_input_order() -> None:
    books = [book(5, "2026-01-01T02:00"), book(6, "2026-01-01T02:00"), book(4, "2026-01-01T03:00")]
    for order in (books, books[::-1]):
        decision = select_books(order, only(daily=1), UTC, NOW)
        assert kept(decision) == [4]
        assert [b.book_id for b in decision.delete] == [6, 5]
    same_time = [book(7, "2026-01-02T02:00"), book(8, "2026-01-02T02:00")]
    assert kept(select_books(same_time, only(daily=1), UTC, NOW)) == [8]


# --- defaults over three years --------------------------------------------------------------


def test_defaults_over_three_years_of_nightly_books() -> None:
    # One book at 02:00 UTC every night from 2023-01-01 to 2025-12-31: 365 + 366 + 365 = 1096.
    # The newest (2025-12-31, a Wednesday) is active. With 7/5/12/10:
    # - daily 7: 12-25 .. 12-31.
    # - weekly 5: 2025-12-31 is in ISO 2026-W01 (Mon 12-29 .. Sun 2026-01-04), so the weeks are
    #   W01 -> 12-31, 2025-W52 -> 12-28, W51 -> 12-21, W50 -> 12-14, W49 -> 12-07:
    #   12-21, 12-14 and 12-07 are new.
    # - monthly 12: the last day of every month of 2025; only 12-31 was already kept: 11 new.
    # - yearly 10: only three years hold books: 2025-12-31, 2024-12-31, 2023-12-31: 2 new.
    # Kept: 7 + 3 + 11 + 2 = 23; deleted: 1096 - 23 = 1073.
    start = datetime(2023, 1, 1, 2, 0, tzinfo=UTC)
    books = [BookStamp(i, f"v{i}", start + timedelta(days=i), False) for i in range(1096)]
    books[-1] = BookStamp(1095, "v1095", books[-1].created_at, True)
    assert books[-1].created_at.date() == date(2025, 12, 31)

    decision = select_books(books, KeepPolicy(), UTC, datetime(2026, 1, 1, tzinfo=UTC))

    dailies = [f"2025-12-{d}" for d in range(31, 24, -1)]
    weeklies = ["2025-12-21", "2025-12-14", "2025-12-07"]
    monthlies = ["2025-11-30", "2025-10-31", "2025-09-30", "2025-08-31", "2025-07-31"]
    monthlies += ["2025-06-30", "2025-05-31", "2025-04-30", "2025-03-31", "2025-02-28"]
    monthlies += ["2025-01-31"]
    yearlies = ["2024-12-31", "2023-12-31"]
    expected = dailies + weeklies + monthlies + yearlies
    assert kept_days(decision) == expected
    assert len(decision.delete) == 1073
    assert decision.reasons[1095] == ("daily", "weekly", "monthly", "yearly", "active")
    assert decision.reasons[books[-4].book_id] == ("daily", "weekly")  # 2025-12-28, a Sunday
    assert decision.reasons[books[-32].book_id] == ("monthly",)  # 2025-11-30


# --- brute force ----------------------------------------------------------------------------

BUCKET_OF: dict[str, Callable[[datetime], Hashable]] = {
    "daily": lambda t: t.date(),
    "weekly": lambda t: t.isocalendar()[:2],
    "monthly": lambda t: (t.year, t.month),
    "yearly": lambda t: t.year,
}
ZONES: list[tzinfo] = [
    UTC,
    MOSCOW,
    NEW_YORK,
    ZoneInfo("Asia/Kolkata"),
    ZoneInfo("Pacific/Kiritimati"),
    ZoneInfo("Pacific/Pago_Pago"),
]


def brute_force(
    books: Sequence[BookStamp], policy: KeepPolicy, tz: tzinfo, now: datetime
) -> set[int]:
    """Per tier: group by bucket, take the newest of each, keep those of the N newest buckets."""
    keep = {b.book_id for b in books if b.is_active or b.created_at > now}
    for tier, count in policy.counts():
        newest: dict[Hashable, BookStamp] = {}
        for b in books:
            if b.created_at > now:
                continue
            key = BUCKET_OF[tier](b.created_at.astimezone(tz))
            if key not in newest or (b.created_at, b.book_id) > (
                newest[key].created_at,
                newest[key].book_id,
            ):
                newest[key] = b
        buckets = sorted(newest, key=lambda k: newest[k].created_at, reverse=True)
        keep |= {newest[k].book_id for k in buckets[:count]}
    return keep


def random_calendar(rng: random.Random) -> list[BookStamp]:
    """Up to 60 books over three years, clustered on a few days, some sharing a timestamp."""
    start = datetime(2024, 1, 1, tzinfo=UTC)
    days = rng.sample(range(3 * 366), rng.randint(1, 40))
    stamps = [
        start + timedelta(days=rng.choice(days), minutes=rng.randrange(24 * 60))
        for _ in range(rng.randint(0, 60))
    ]
    stamps += [rng.choice(stamps) for _ in range(rng.randint(0, 3))] if stamps else []
    ids = rng.sample(range(1, 10_000), len(stamps))
    active = rng.randrange(len(stamps) + 1)  # sometimes none
    return [
        BookStamp(i, f"v{i}", t, n == active)
        for n, (i, t) in enumerate(zip(ids, stamps, strict=True))
    ]


@pytest.mark.parametrize("seed", range(300))
def test_matches_brute_force_on_random_calendars(seed: int) -> None:
    rng = random.Random(seed)
    books = random_calendar(rng)
    policy = KeepPolicy(*(rng.randint(0, 6) for _ in range(4)))
    tz = rng.choice(ZONES)
    now = datetime(2024, 1, 1, tzinfo=UTC) + timedelta(days=rng.randint(300, 1200))

    decision = select_books(books, policy, tz, now)

    assert set(kept(decision)) == brute_force(books, policy, tz, now)
    assert set(decision.reasons) == set(kept(decision))
    assert {b.book_id for b in decision.keep + decision.delete} == {b.book_id for b in books}
    for part in (decision.keep, decision.delete):
        order = [(b.created_at, b.book_id) for b in part]
        assert order == sorted(order, reverse=True)
    # Retention is idempotent: running it again over what it kept deletes nothing.
    assert select_books(decision.keep, policy, tz, now).delete == ()
