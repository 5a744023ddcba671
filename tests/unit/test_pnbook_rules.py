"""Pure rules of partnumber-book snapshots: versions, ignore globs, blank lots."""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from datetime import date, datetime

import pytest

from schedule.pnbook_rules import (
    format_version,
    glob_matches,
    glob_to_like,
    is_blank_lot,
    next_version,
)

DAY = date(2026, 3, 1)

# --- versions -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("day", "seq", "version"),
    [
        (DAY, 1, "PNBOOK-2026-03-01-001"),
        (DAY, 42, "PNBOOK-2026-03-01-042"),
        (date(2026, 12, 31), 999, "PNBOOK-2026-12-31-999"),
        (date(999, 1, 2), 7, "PNBOOK-0999-01-02-007"),
    ],
)
def test_format_version(day: date, seq: int, version: str) -> None:
    assert format_version(day, seq) == version
    assert len(version) <= 30  # qt_partnumber_books.version is VARCHAR(30)


@pytest.mark.parametrize("seq", [0, -1, 1000])
def test_format_version_refuses_numbers_out_of_range(seq: int) -> None:
    with pytest.raises(ValueError, match=r"1\.\.999"):
        format_version(DAY, seq)


def test_format_version_refuses_a_datetime() -> None:
    with pytest.raises(TypeError, match="datetime"):
        format_version(datetime(2026, 3, 1, 23, 30), 1)


@pytest.mark.parametrize(
    ("existing", "expected"),
    [
        ([], "PNBOOK-2026-03-01-001"),
        (["PNBOOK-2026-03-01-001", "PNBOOK-2026-03-01-002"], "PNBOOK-2026-03-01-003"),
        (["PNBOOK-2026-03-01-005", "PNBOOK-2026-03-01-001"], "PNBOOK-2026-03-01-006"),
        (["PNBOOK-2026-02-28-007", "PNBOOK-2026-03-02-009"], "PNBOOK-2026-03-01-001"),
        (["PNBOOK-2026-03-01-998"], "PNBOOK-2026-03-01-999"),
    ],
)
def test_next_version(existing: list[str], expected: str) -> None:
    assert next_version(DAY, existing) == expected


def test_next_version_ignores_malformed_versions() -> None:
    malformed = [
        "PNBOOK-2026-03-01-1",
        "PNBOOK-2026-03-01-0042",
        "pnbook-2026-03-01-007",
        "PNBOOK-2026-03-01-٠٠٩",  # Arabic-Indic digits
        "x PNBOOK-2026-03-01-009",
        "PNBOOK-2026-03-01-009 ",
        "PNBOOK-20260301-009",
        "",
    ]
    assert next_version(DAY, malformed) == "PNBOOK-2026-03-01-001"


def test_next_version_accepts_any_iterable() -> None:
    def versions() -> Iterator[str]:
        yield "PNBOOK-2026-03-01-003"

    assert next_version(DAY, versions()) == "PNBOOK-2026-03-01-004"


def test_next_version_fails_when_the_day_is_full() -> None:
    with pytest.raises(ValueError, match="2026-03-01"):
        next_version(DAY, ["PNBOOK-2026-03-01-999"])


# --- globs ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("glob", "like"),
    [
        ("", ""),
        ("ABC-123", "ABC-123"),
        ("ABC*", "ABC%"),
        ("*X?Y*", "%X_Y%"),
        ("50%_off", r"50\%\_off"),
        ("back\\slash", r"back\\slash"),
        ("\\*", r"\\%"),
        ("[ab]", "[ab]"),
    ],
)
def test_glob_to_like(glob: str, like: str) -> None:
    assert glob_to_like(glob) == like


@pytest.mark.parametrize(
    ("pattern", "value", "matches"),
    [
        ("", "", True),
        ("", "a", False),
        ("*", "", True),
        ("**", "x", True),
        ("?", "", False),
        ("?", "x", True),
        ("abc*", "ABCdef", True),
        ("ABC*", "xabc", False),
        ("a?c", "AbC", True),
        ("a?c", "ac", False),
        ("a*b*c", "aXbYc", True),
        ("a*b*c", "aXbY", False),
        ("*-R", "SRV-100-r", True),
        ("[ab]", "a", False),  # no character classes
        ("[ab]", "[AB]", True),
        ("50%", "500", False),  # % and _ are literal in a glob
        ("a_b", "axb", False),
        ("a\\b", "A\\B", True),
        ("Ж*", "жесткий диск", True),
        ("a*" * 30 + "b", "a" * 200, False),  # many stars stay fast
    ],
)
def test_glob_matches(pattern: str, value: str, matches: bool) -> None:
    assert glob_matches(pattern, value) is matches


def test_glob_to_like_agrees_with_glob_matches_in_sqlite() -> None:
    """The LIKE translation, run by a real SQLite, matches exactly what the reference matches."""
    rng = random.Random(3)
    cases = [
        (
            "".join(rng.choices("aB%_\\*?x", k=rng.randint(0, 6))),
            "".join(rng.choices("abAB%_\\x", k=rng.randint(0, 6))),
        )
        for _ in range(3000)
    ]
    with closing(sqlite3.connect(":memory:")) as db:
        for pattern, value in cases:
            (matched,) = db.execute(
                "SELECT LOWER(?) LIKE LOWER(?) ESCAPE '\\'", (value, glob_to_like(pattern))
            ).fetchone()
            assert bool(matched) is glob_matches(pattern, value), (pattern, value)
    assert any(glob_matches(p, v) for p, v in cases)
    assert not all(glob_matches(p, v) for p, v in cases)


# --- lots -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "blank"),
    [(None, True), ("", True), ("   ", True), ("\t\n ", True), ("LOT-1", False), (" x ", False)],
)
def test_is_blank_lot(name: str | None, blank: bool) -> None:
    assert is_blank_lot(name) is blank
