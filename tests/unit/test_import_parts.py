"""Pure parts of imports and syncs: secret masking, watermark comparison, coercion, the
threaded iterator, the declared row count of a workbook."""

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

from engine.datasources import above, highest, mask, positions_above, unmask, watermark_json
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


@pytest.mark.parametrize("mark", [None, 2, "2", 2.5, "10", True, Decimal("2"), "abc", "2024-01-31"])
@pytest.mark.parametrize(
    "values",
    [
        [1, 2, 3, 10],  # a sheet's or a JSON page's numbers
        ["1", "2", "3", "10", " 7 "],  # a CSV file's text
        [1.5, "2.5", 3, "9"],
        ["1", None, "3"],  # an empty cell
        ["1", "x", "3", "10"],  # text that is not a number compares as text
        [True, 3, "4"],
        [datetime(2024, 2, 1), "2024-01-30", None],
        [],
    ],
)
def test_positions_above_agrees_with_above(values: list[object], mark: object) -> None:
    assert positions_above(values, mark) == [i for i, v in enumerate(values) if above(v, mark)]


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


# --- records_import fast path: same decisions, same rows, same errors as the model ----------

PLAIN_TOOL = {
    "tool_name": "University Scraper",
    "tool_id": "V001",
    "category": "Education",
    "description": "Scrapes university data.",
    "features": ["Data extraction", "Export"],
    "url": "https://example.com/university-scraper",
}
TRICKY_VALUES: dict[str, list[object]] = {
    "tool_id": [
        *("V1", " V1", "V1 ", "\tV1", "\x1cV1", "V1\x1f", "", "   ", "x" * 64, "x" * 65),
        *("Инструмент", "V\ud800", "V\x00", 5, True, None, ["V1"]),
    ],
    "tool_name": ["n", " n ", "n" * 255, "n" * 256, "\u3000n", "é", "\u2028", 1.5, None, ""],
    "category": [None, "", " ", "c", "c" * 255, "c" * 256, " c", "ç", 0, False],
    "description": [None, "", " d ", "d" * 65535, "d" * 65536, "ü", "\ud83d", 7, ["d"]],
    "features": [
        *([], ["a"], [""], [" a "], ["a"] * 1000, ["a"] * 1001, ["a" * 1000], ["a" * 1001]),
        *(["ü"], ["\udc00"], ["a", 1], [None], "a", None, {"a": 1}, [["a"]], ("a",)),
    ],
    "url": [
        *(None, "", "https://example.com", "http://a", "https://EXAMPLE.com/P?q=1#f"),
        *("HTTPS://example.com", "Http://example.com", "https://ex.com:8080/x"),
        *("https://ex.com:99999", "https://ex.com:x", "https://u:p@ex.com", "http://[::1]/"),
        *("http://[::1", "http://::1]/", "ftp://example.com", "https://", "https:///path"),
        *("https://ex.com/ a", "https://ex.com/\ta", " https://ex.com", "https://ex.com "),
        *("https://-/", "https://./", "https://ex.com?", "https://ex.com#", "https:ex.com"),
        *("https://ex_ample.com", "https://exämple.com", "https://ex.com/ä", "//ex.com"),
        *("https://ex.com/" + "p" * 2040, "https://ex.com/" + "p" * 2033, 42, ["https://a"]),
        *("https://ex.com\\x", "https://ex.com/%zz", "https://ex.com/\x7f", "https://%41.com"),
    ],
}


def tricky_records() -> list[object]:
    """Each tricky value in an otherwise plain record, absent fields, extra keys, non-objects."""
    out: list[object] = [PLAIN_TOOL]
    for field, values in TRICKY_VALUES.items():
        out += [{**PLAIN_TOOL, field: value} for value in values]
        out.append({k: v for k, v in PLAIN_TOOL.items() if k != field})
    empty: dict[str, object] = {}
    out += [{"tool_id": "V9", "tool_name": "n"}, {**PLAIN_TOOL, "extra": 1}, empty, "x", 5, None]
    odd_key: dict[object, object] = {1: "non-string key", **dict(PLAIN_TOOL.items())}
    out += [[], odd_key]
    return out


def _model_row(record: object) -> dict[str, object] | None:
    from pydantic import ValidationError

    from engine.targets import ToolRecord

    try:
        return ToolRecord.model_validate(record).to_row()
    except ValidationError:
        return None


def _rows(columns: dict[str, list[object]]) -> list[dict[str, object]]:
    return [
        dict(zip(columns, values, strict=True)) for values in zip(*columns.values(), strict=True)
    ]


def test_fast_columns_give_the_models_rows_or_defer_to_it() -> None:
    from engine.targets import tool_columns_fast

    accepted = []
    for record in tricky_records():
        columns = tool_columns_fast([record])
        if columns is None:
            continue
        accepted.append(record)
        expected = _model_row(record)
        assert expected is not None, f"fast path accepted {record!r}; the model refuses it"
        assert _rows(columns) == [expected], record
    assert len(accepted) > 30  # the plain variants do take the fast path
    # a run of them at once gives the same rows; one odd record refuses the run
    columns = tool_columns_fast(accepted)
    assert columns is not None
    assert _rows(columns) == [_model_row(r) for r in accepted]
    assert tool_columns_fast([*accepted, {**PLAIN_TOOL, "tool_id": " V1"}]) is None
    assert tool_columns_fast([]) is None


def test_fast_columns_urls_agree_with_the_model_on_generated_urls() -> None:
    import itertools

    from engine.targets import tool_columns_fast

    schemes = ["http://", "https://", "HTTP://", "https:/", "https:", "htps://", ""]
    hosts = ["example.com", "a", "-", ".", "", "ex.com:80", "[::1]", "u@h", "ex ample", "é.com"]
    tails = ["", "/", "/a/b", "?q=1", "#f", "/ä", "/ x", "/\n", ":", "/[x]", "@", "\\"]
    for scheme, host, tail in itertools.product(schemes, hosts, tails):
        record = {"tool_id": "V1", "tool_name": "n", "url": scheme + host + tail}
        columns = tool_columns_fast([record])
        assert columns is None or _rows(columns) == [_model_row(record)], record


def _mixed_records() -> list[object]:
    """6,000 plain records with the tricky ones and repeated keys strewn among them."""
    import random

    shuffle = random.Random(4).shuffle
    out: list[object] = [{**PLAIN_TOOL, "tool_id": f"P{i}"} for i in range(6000)]
    odd = [*tricky_records(), {**PLAIN_TOOL, "tool_name": "dup"}]
    odd += [{**PLAIN_TOOL, "tool_id": " V001 "}, {**PLAIN_TOOL, "tool_id": "P7"}]
    shuffle(odd)
    for step, record in enumerate(odd):
        out.insert(step * 40 + 100, record)
    return out


@pytest.mark.parametrize(
    ("records", "fast_at_least"),
    [(tricky_records(), 0), (_mixed_records(), 4000)],
    ids=["tricky", "mixed"],
)
def test_validate_batch_is_the_same_with_and_without_the_fast_path(
    records: list[object], fast_at_least: int
) -> None:
    from dataclasses import replace

    from engine.handlers.records_import import validate_batch
    from engine.targets import TARGETS

    tools = TARGETS["tools"]
    assert tools.fast_columns is not None
    spans: list[int] = []

    def counted(chunk: list[object]) -> dict[str, list[object]] | None:
        assert tools.fast_columns is not None
        columns = tool_columns(chunk)
        spans.append(len(chunk) if columns is not None and len(chunk) > 1 else 0)  # not probes
        return columns

    tool_columns = tools.fast_columns
    seen_fast: set[object] = set()
    seen_model: set[object] = set()
    with_fast = validate_batch(replace(tools, fast_columns=counted), records, 10, seen_fast)
    without = validate_batch(replace(tools, fast_columns=None), records, 10, seen_model)
    assert with_fast == without
    assert seen_fast == seen_model
    columns, errors = with_fast
    assert _rows(columns)[0] == {**PLAIN_TOOL, "tool_id": _rows(columns)[0]["tool_id"]}
    assert errors and [e[0] for e in errors] == sorted(e[0] for e in errors)
    assert any("duplicate key tool_id='V001'" in reason for _, reason, _ in errors)
    assert sum(spans) >= fast_at_least  # the plain runs among odd records go the fast way


def test_a_batch_of_odd_records_goes_to_the_model_after_a_few_tries() -> None:
    from dataclasses import replace

    from engine.handlers.records_import import PROBES, validate_batch
    from engine.targets import TARGETS

    tools = TARGETS["tools"]
    tool_columns = tools.fast_columns
    assert tool_columns is not None
    calls: list[int] = []

    def counted(chunk: list[object]) -> dict[str, list[object]] | None:
        assert tool_columns is not None
        calls.append(len(chunk))
        return tool_columns(chunk)

    records: list[object] = [
        {**PLAIN_TOOL, "tool_id": f"R{i}", "tool_name": f"Инструмент {i}"} for i in range(3000)
    ]
    records[1500] = {**PLAIN_TOOL, "tool_id": "plain"}  # a plain one among them
    with_fast = validate_batch(replace(tools, fast_columns=counted), records, 0, set())
    assert with_fast == validate_batch(replace(tools, fast_columns=None), records, 0, set())
    assert len(_rows(with_fast[0])) == 3000 and not with_fast[1]
    assert calls[0] == 3000 and len(calls) <= 1 + PROBES  # no halving down to 16 records


def test_dump_string_lists_is_json_dumps_or_defers() -> None:
    import json

    from schedule.upsert import dump_string_lists

    plain = [["a", "b c"], [], ["x" * 1000], ["", " "], ["~!#$%&'()*+,-./:;<=>?@[]^_`{|}"]]
    assert dump_string_lists(plain) == [json.dumps(v) for v in plain]
    assert dump_string_lists([[], []]) == ["[]", "[]"]
    for odd in (['say "hi"'], ["a\\b"], ["é"], ["\x7f"], ["\t"], ["a", 1], [None]):
        assert dump_string_lists([*plain, odd]) is None, odd
    assert dump_string_lists([["a"], ("a",)]) is None
    assert dump_string_lists([["a"], None]) is None
    assert dump_string_lists([]) is None


@pytest.mark.parametrize(
    "values",
    [[], ["a"], [""], ["é", "\u2028", '"q"', "\\", "\x00\x1f\x7f", "\ud800", "😀", "a, b"]],
)
def test_dump_strings_is_json_dumps(values: list[str]) -> None:
    import json

    from schedule.upsert import dump_strings

    assert dump_strings(values) == json.dumps(values)


def test_dump_strings_refuses_other_items() -> None:
    from schedule.upsert import dump_strings

    with pytest.raises(TypeError):
        dump_strings(["a", 1])  # type: ignore[list-item]


def test_parsed_payloads_are_taken_once_and_bounded() -> None:
    from engine.uploads import ParsedPayloads

    held = ParsedPayloads(limit_bytes=100)
    held.keep("a", [1], 40)
    held.keep("b", [2], 40)
    held.keep("too-big", [3], 101)  # never held: its task reads the file
    assert held.take("too-big") is None
    held.keep("c", [4], 40)  # over the limit: the oldest goes
    assert held.take("a") is None
    assert held.take("b") == [2] and held.take("b") is None
    held.drop("c")
    assert held.take("c") is None
    held.keep("d", [5], 100)
    assert held.take("d") == [5]
