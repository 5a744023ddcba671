"""A batch mapped column by column gives the rows and record errors of mapping it row by row.

The target is a real table of every column kind, reflected by the sync's `TargetWriter` on
SQLite and MariaDB (where `BOOLEAN` is `TINYINT(1)`). The reference maps each row on its own
with `coerce`, the documented rule, checking the columns in the mapping's order and stopping at
the first that fails, as the sync did before it worked column by column.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    Date,
    DateTime,
    Float,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
)

from engine.datasources import SourceBatch
from engine.sync import RowMapper, coerce
from schedule.datasources import TargetWriter
from schedule.store import Connector

TABLE = "mapping_kinds"
MAPPING = {
    "id": "id",
    "name": "name",
    "count": "count",
    "flag": "flag",
    "price": "price",
    "ratio": "ratio",
    "stamp": "stamp",
    "day": "day",
    "label": "label",
}
# Each source field's values, cycled over the rows: already of the target's type, text to
# convert, blanks, values of the wrong type, None.
VALUES: dict[str, list[Any]] = {
    "id": ["A1", "A2", 17, 3.0, None, "", "部品", "A1"],
    "name": ["x", "", None, 5, 2.5, "Ünï", True, "y"],
    "count": [1, "2", " 3 ", 4.0, 4.5, "x", True, None, ""],
    "flag": [True, False, "yes", "0", 1, "maybe", None, "", 2],
    "price": [Decimal("1.50"), "2.25", 3, "x", None, " "],
    "ratio": [0.5, 1, "1e3", "x", None, Decimal("2")],
    "stamp": [datetime(2026, 1, 2, 3, 4, 5), "2026-05-06 07:08:09", "nope", None, 5],
    "day": [date(2026, 1, 2), "2026-03-04", datetime(2026, 5, 6, 7, 8), "x", None],
    "label": ["must", None, "", 3],
}
KEYS = ["id"]
JSON_TYPES = (type(None), str, int, float, bool)


async def make_target(db: Connector) -> None:
    table = Table(
        TABLE,
        MetaData(),
        Column("id", String(64), primary_key=True),
        Column("name", String(255)),
        Column("count", Integer),
        Column("flag", Boolean),
        Column("price", Numeric(10, 2)),
        Column("ratio", Float),
        Column("stamp", DateTime),
        Column("day", Date),
        Column("label", String(32), nullable=False),
    )
    async with db.write() as conn:
        await conn.run_sync(table.create)


def by_row(
    mapper: RowMapper, records: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[tuple[int, str]]]:
    """The reference: each row on its own, the first failing column's reason."""
    rows, rejects = [], []
    for position, record in enumerate(records):
        row: dict[str, Any] = {}
        try:
            for source, target in MAPPING.items():
                column = mapper.writer.column(target)
                value = coerce(record.get(source), column, target)
                if value is None and target in KEYS:
                    raise ValueError(f"key column {target!r} is empty")
                if value is None and not column.nullable and column.server_default is None:
                    raise ValueError(f"{target!r} must not be empty")
                row[target] = value
        except ValueError as exc:
            rejects.append((position, str(exc)))
            continue
        rows.append(row)
    return rows, rejects


async def test_column_by_column_equals_row_by_row(dialect_connector: Connector) -> None:
    await make_target(dialect_connector)
    count = 72  # every combination of the cycles above occurs
    records = [{k: v[i % len(v)] for k, v in VALUES.items()} for i in range(count)]
    names = list(VALUES)
    batch = SourceBatch(names, [tuple(r[n] for n in names) for r in records])
    writer = TargetWriter(dialect_connector, TABLE, KEYS, targets={TABLE}, track_keys=False)
    async with writer:
        mapper = RowMapper(dict(MAPPING), KEYS, writer)
        columns, rejects = mapper.map(batch, 10)
        rows, expected = by_row(mapper, records)
    assert [(p - 10, reason) for p, reason, _ in rejects] == expected
    # A rejected row's error holds the source row as JSON: other values as text.
    assert [record for _, _, record in rejects] == [
        {k: v if isinstance(v, JSON_TYPES) else str(v) for k, v in records[p].items()}
        for p, _ in expected
    ]
    kept = len(rows)
    assert {name: len(values) for name, values in columns.items()} == {n: kept for n in MAPPING}
    assert [{n: columns[n][i] for n in MAPPING} for i in range(kept)] == rows
    assert 0 < kept < count and rejects  # both paths were taken


async def test_plain_columns_are_taken_as_they_are(dialect_connector: Connector) -> None:
    await make_target(dialect_connector)
    names = ["id", "name", "count", "label"]
    rows: list[tuple[Any, ...]] = [(f"K{i}", f"n{i}", i, "l") for i in range(50)]
    writer = TargetWriter(dialect_connector, TABLE, KEYS, targets={TABLE}, track_keys=False)
    async with writer:
        mapper = RowMapper({n: n for n in names}, KEYS, writer)
        columns, rejects = mapper.map(SourceBatch(names, rows), 0)
    assert rejects == []
    assert columns == {n: [r[i] for r in rows] for i, n in enumerate(names)}
    assert all(a is b for a, b in zip(columns["name"], [r[1] for r in rows], strict=True))


async def test_statements_are_compiled_once_per_sync(dialect_connector: Connector) -> None:
    """Batches whose columns come in another order than the table's (a mapping's order) are
    written through the statements compiled for the first batch, not compiled anew."""
    await make_target(dialect_connector)
    writer = TargetWriter(dialect_connector, TABLE, KEYS, targets={TABLE}, track_keys=False)
    plans = []
    async with writer:
        for start, counts in ((0, (10, 0)), (10, (10, 0)), (5, (0, 10))):
            ids = [f"K{i}" for i in range(start, start + 10)]
            assert await writer.write({"label": ["l"] * 10, "id": ids}) == counts
            plans.append(writer._plan)
    assert plans[0] is not None and plans[0] is plans[1] is plans[2]
