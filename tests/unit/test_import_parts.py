"""Issue 4 pure parts: secret masking, watermark comparison, coercion, the threaded iterator,
the declared row count of a workbook."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import pytest
from openpyxl import Workbook
from sqlalchemy import Boolean, Column, DateTime, Integer, MetaData, Numeric, String, Table

from engine.datasources import above, highest, mask, unmask, watermark_json
from engine.sources.dimension import declared_rows
from engine.sources.streaming import ThreadedIterator
from engine.sync import coerce

TABLE = Table(
    "t",
    MetaData(),
    Column("flag", Boolean),
    Column("n", Integer),
    Column("price", Numeric(10, 2)),
    Column("at", DateTime),
    Column("name", String(20)),
)


def test_mask_hides_secrets_at_any_depth() -> None:
    config = {
        "url": "https://user:pw@api.example/items?api_key=k1&page=2",
        "headers": {"Authorization": "Bearer t", "Accept": "application/json"},
        "password": "p",
        "nested": {"client_secret": "s", "token": 5, "size": 3},
        "dsn": "mysql+pymysql://u:dbpw@h/db",
    }
    shown = mask(config)
    text = str(shown)
    for secret in ("pw@", "k1", "Bearer t", "'p'", "'s'", "dbpw"):
        assert secret not in text
    assert shown["headers"]["Accept"] == "application/json"
    assert shown["nested"]["size"] == 3
    assert shown["dsn"] == "mysql+pymysql://u:***@h/db"
    assert unmask(shown, config) == config


def test_watermark_comparison() -> None:
    assert above(10, 9) and not above(9, 10)
    assert above("10", 9)  # numeric text compares as a number, not as text
    assert above("2024-02-01 00:00:00", "2024-01-31 23:59:59")
    assert above(1, None) and not above(None, 1)
    assert highest([None, 3, "7", 5]) == "7"
    assert watermark_json(datetime(2024, 1, 2, 3, 4, 5)) == "2024-01-02 03:04:05"
    assert watermark_json(Decimal("1.50")) == "1.50"


@pytest.mark.parametrize(
    ("column", "value", "expected"),
    [
        ("flag", "yes", True),
        ("flag", "0", False),
        ("n", "42", 42),
        ("n", 7.0, 7),
        ("n", "", None),
        ("price", "12.50", Decimal("12.50")),
        ("at", "2024-01-02T03:04:05", datetime(2024, 1, 2, 3, 4, 5)),
        ("name", 123.0, "123"),
        ("name", "", ""),
    ],
)
def test_coerce(column: str, value: object, expected: object) -> None:
    assert coerce(value, TABLE.c[column], column) == expected


@pytest.mark.parametrize(("column", "value"), [("flag", "maybe"), ("n", "x"), ("n", 1.5)])
def test_coerce_refuses(column: str, value: object) -> None:
    with pytest.raises(ValueError, match=column):
        coerce(value, TABLE.c[column], column)


async def test_threaded_iterator_is_bounded_and_stops_early() -> None:
    produced: list[int] = []
    closed = threading.Event()

    def numbers() -> Iterator[int]:
        try:
            for i in range(1000):
                produced.append(i)
                yield i
        finally:
            closed.set()

    got = []
    async with ThreadedIterator(numbers, prefetch=2) as items:
        async for item in items:
            got.append(item)
            if item == 4:
                break
    assert got == [0, 1, 2, 3, 4]
    assert closed.is_set()
    assert len(produced) <= 5 + 3  # never more than `prefetch` ahead (plus the one in hand)


async def test_threaded_iterator_reraises_after_items() -> None:
    def failing() -> Iterator[int]:
        yield 1
        raise RuntimeError("boom")

    got = []
    with pytest.raises(RuntimeError, match="boom"):
        async with ThreadedIterator(failing) as items:
            async for item in items:
                got.append(item)
    assert got == [1]
    await asyncio.sleep(0)


def test_declared_rows(tmp_path: Path) -> None:
    wb = Workbook()
    ws = wb.active
    assert ws is not None
    for i in range(30):
        ws.append([i, "x"])
    wb.save(tmp_path / "a.xlsx")
    assert declared_rows(tmp_path / "a.xlsx") == 30
    (tmp_path / "b.xlsx").write_bytes(b"not a zip")
    assert declared_rows(tmp_path / "b.xlsx") is None
