"""Time: the clock every store and scheduler is given, and the UTC forms the database stores.

Everything syncd handles in Python is an aware UTC `datetime`; the database holds naive UTC
(`naive` on the way in, `utc` on the way out). A test passes its own `Clock` to move time by hand.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]
"""Returns now, as an aware UTC `datetime`."""


def utcnow() -> datetime:
    """The default clock: aware UTC now."""
    return datetime.now(UTC)


def utc(value: datetime | None) -> datetime | None:
    """A database time (naive UTC) as an aware UTC datetime."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def naive(value: datetime) -> datetime:
    """An aware time as the naive UTC value the database stores."""
    return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value
