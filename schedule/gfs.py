"""Grandfather-father-son retention of partnumber books.

The rules are those of ``restic forget --keep-daily D --keep-weekly W --keep-monthly M
--keep-yearly Y`` (restic ``internal/restic/snapshot_policy.go``): books are walked newest first
and, for each tier independently, a book is kept when its bucket differs from the last bucket that
tier kept, until the tier has kept its count. The kept set is the union of the tiers, plus the
active book and any book stamped in the future (clock skew between nodes).

Unlike restic 0.17+, a tier with counts left over does not also keep the oldest book: the design
says "the newest book in each of the N most recent buckets that hold a book", nothing more.

Everything here is pure: the caller reads the books, decides with :func:`select_books` and
deletes in its own transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo
from types import MappingProxyType

__all__ = ["TIERS", "BookStamp", "GfsDecision", "KeepPolicy", "select_books"]

Bucket = tuple[int, ...]

_BUCKETS: Mapping[str, Callable[[datetime], Bucket]] = {
    "daily": lambda t: (t.year, t.month, t.day),
    "weekly": lambda t: tuple(t.isocalendar()[:2]),
    "monthly": lambda t: (t.year, t.month),
    "yearly": lambda t: (t.year,),
}

TIERS: tuple[str, ...] = tuple(_BUCKETS)
"""Tier names, in the order their reasons are reported."""


@dataclass(frozen=True)
class KeepPolicy:
    """How many daily/weekly/monthly/yearly buckets to keep a book from; 0 disables a tier.

    Negative counts are refused: restic reads -1 as "keep all", which is never what a typo in a
    config file means.
    """

    daily: int = 7
    weekly: int = 5
    monthly: int = 12
    yearly: int = 10

    def __post_init__(self) -> None:
        for tier in TIERS:
            count = getattr(self, tier)
            if isinstance(count, bool) or not isinstance(count, int):
                raise TypeError(f"keep {tier} must be an int, got {count!r}")
            if count < 0:
                raise ValueError(f"keep {tier} must be >= 0, got {count}")

    def counts(self) -> tuple[tuple[str, int], ...]:
        """(tier, count) pairs in :data:`TIERS` order."""
        return tuple((tier, getattr(self, tier)) for tier in TIERS)


@dataclass(frozen=True)
class BookStamp:
    """What retention needs to know about one book; ``created_at`` must be time-zone aware."""

    book_id: int
    version: str
    created_at: datetime
    is_active: bool

    def __post_init__(self) -> None:
        if self.created_at.utcoffset() is None:
            raise ValueError(f"book {self.book_id}: created_at must be time-zone aware")


@dataclass(frozen=True)
class GfsDecision:
    """The books to keep and to delete, each newest first, and why each kept book stays.

    ``reasons`` maps a kept book id to its reasons, in this order: "future", the tiers of
    :data:`TIERS` that kept it, "active".
    """

    keep: tuple[BookStamp, ...]
    delete: tuple[BookStamp, ...]
    reasons: Mapping[int, tuple[str, ...]]


def select_books(
    books: Sequence[BookStamp], policy: KeepPolicy, tz: tzinfo, now: datetime
) -> GfsDecision:
    """Decide which books GFS retention keeps; buckets are calendar units in ``tz``.

    Ties in ``created_at`` are broken by id (higher id = newer), so the result does not depend on
    the order of ``books``. Books created after ``now`` are kept and take no tier slot, so a node
    with a fast clock cannot push real history out.
    """
    if now.utcoffset() is None:
        raise ValueError("now must be time-zone aware")
    ordered = _newest_first(books)
    reasons: dict[int, list[str]] = {b.book_id: ["future"] for b in ordered if b.created_at > now}
    past = [b for b in ordered if b.created_at <= now]
    for tier, count in policy.counts():
        for book in _tier_keep(past, _BUCKETS[tier], count, tz):
            reasons.setdefault(book.book_id, []).append(tier)
    for book in ordered:
        if book.is_active:
            reasons.setdefault(book.book_id, []).append("active")
    return GfsDecision(
        keep=tuple(b for b in ordered if b.book_id in reasons),
        delete=tuple(b for b in ordered if b.book_id not in reasons),
        reasons=MappingProxyType({k: tuple(v) for k, v in reasons.items()}),
    )


def _newest_first(books: Sequence[BookStamp]) -> list[BookStamp]:
    """Sort newest first by (created_at, book_id); refuse duplicate ids."""
    ids = [b.book_id for b in books]
    if len(set(ids)) != len(ids):
        raise ValueError("duplicate book ids")
    return sorted(books, key=lambda b: (b.created_at, b.book_id), reverse=True)


def _tier_keep(
    newest_first: Sequence[BookStamp],
    bucket_of: Callable[[datetime], Bucket],
    count: int,
    tz: tzinfo,
) -> list[BookStamp]:
    """The books one tier keeps: the first book met in each new bucket, up to ``count``."""
    kept: list[BookStamp] = []
    last: Bucket | None = None
    for book in newest_first:
        if len(kept) >= count:
            break
        bucket = bucket_of(book.created_at.astimezone(tz))
        if bucket != last:
            kept.append(book)
            last = bucket
    return kept
