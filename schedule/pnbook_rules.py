"""Pure rules of partnumber-book snapshots: version names, ignore globs and blank lots.

Kept apart from the snapshot SQL so they can be tested exhaustively without a database, and so
the SQL and the Python reference (:func:`glob_matches`) can be cross-checked against each other.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import date, datetime

__all__ = [
    "LIKE_ESCAPE",
    "MAX_SEQ",
    "format_version",
    "glob_matches",
    "glob_to_like",
    "is_blank_lot",
    "next_version",
]

MAX_SEQ = 999
"""Highest book number within one date (the NNN of ``PNBOOK-YYYY-MM-DD-NNN``)."""

LIKE_ESCAPE = "\\"
"""The escape character of the patterns :func:`glob_to_like` returns."""

_VERSION = re.compile(r"PNBOOK-([0-9]{4}-[0-9]{2}-[0-9]{2})-([0-9]{3})")
_GLOB_TO_LIKE = str.maketrans({"*": "%", "?": "_", "%": r"\%", "_": r"\_", "\\": "\\\\"})


def format_version(day: date, seq: int) -> str:
    """The version name of the ``seq``-th book of ``day``: ``PNBOOK-YYYY-MM-DD-NNN``.

    ``day`` must be a plain date already taken in the configured time zone; a datetime is
    refused so that a UTC timestamp cannot silently name the wrong day.
    """
    if isinstance(day, datetime):
        raise TypeError("day must be a date, not a datetime")
    if not 1 <= seq <= MAX_SEQ:
        raise ValueError(f"book number must be 1..{MAX_SEQ}, got {seq} for {_iso(day)}")
    return f"PNBOOK-{_iso(day)}-{seq:03d}"


def next_version(day: date, existing_versions: Iterable[str]) -> str:
    """The version for a new book of ``day``: one past the highest NNN already used that day.

    One past the highest, not the lowest gap, so versions of a day only grow and a deleted
    version is never reused for different content. Versions of other dates and malformed ones
    are ignored; ValueError when the day already has book number 999.
    """
    wanted = _iso(day)
    used = [int(m[2]) for v in existing_versions if (m := _VERSION.fullmatch(v)) and m[1] == wanted]
    return format_version(day, max(used, default=0) + 1)


def glob_to_like(pattern: str) -> str:
    """Translate an ignore glob (``*``, ``?``) into a LIKE pattern escaped with ``\\``.

    Literal ``%``, ``_`` and ``\\`` are escaped. Case is left alone: the query lowers both sides,
    ``LOWER(partnumber) LIKE LOWER(:p) ESCAPE '\\'``.
    """
    return pattern.translate(_GLOB_TO_LIKE)


def glob_matches(pattern: str, value: str) -> bool:
    """Whether ``value`` matches the glob ``pattern``, case-insensitively.

    Only ``*`` (any run, possibly empty) and ``?`` (exactly one character) are special; unlike
    :mod:`fnmatch` there are no character classes. This is the reference the SQL of
    :func:`glob_to_like` is tested against. It simulates the pattern as a set of positions,
    so its time is bounded by len(pattern) * len(value) whatever the stars.
    """
    pat, text = pattern.lower(), value.lower()
    states = _past_stars(pat, {0})
    for ch in text:
        moved = {i + 1 for i in states if i < len(pat) and pat[i] in ("?", ch)}
        stayed = {i for i in states if i < len(pat) and pat[i] == "*"}
        states = _past_stars(pat, moved | stayed)
    return len(pat) in states


def is_blank_lot(name: str | None) -> bool:
    """Whether a lot name is missing, empty or whitespace only (such items are dropped)."""
    return name is None or not name.strip()


def _past_stars(pat: str, states: set[int]) -> set[int]:
    """Add the positions reachable by letting stars match nothing."""
    reached = set(states)
    for i in states:
        while i < len(pat) and pat[i] == "*":
            i += 1
            reached.add(i)
    return reached


def _iso(day: date) -> str:
    """``YYYY-MM-DD`` with a four-digit year whatever the platform's strftime does."""
    return f"{day.year:04d}-{day.month:02d}-{day.day:02d}"
