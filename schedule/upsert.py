"""Dialect-native upserts, compiled once and fed driver parameters made column by column.

SQLite: `INSERT ... ON CONFLICT (keys) DO UPDATE SET col = excluded.col`; MySQL/MariaDB:
`INSERT ... ON DUPLICATE KEY UPDATE col = VALUES(col)`. Both need the key columns to be the
primary key or a unique index of the table (a sync's `TargetWriter` checks its target before
the first row).
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
from json.encoder import encode_basestring_ascii
from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects import mysql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import sqltypes
from sqlalchemy.sql.dml import Insert

Row = Mapping[str, Any]
ColumnConverter = Callable[[Sequence[Any]], Iterable[Any]]
"""Turns a column's values into the driver's, in order."""
ROWS_PER_STATEMENT = 500
SQLITE_MAX_PARAMETERS = 32766  # SQLite's default limit since 3.32
KEY_CHUNK = 2000
"""Keys per `IN (...)` or `VALUES` lookup: under SQLite's bound-parameter limit (32766 since
3.32) even for two lists of a few key columns."""


def upsert_statement(
    dialect: str, table: Table, keys: Sequence[str], update: Sequence[str]
) -> Insert:
    """An executemany-able INSERT that updates `update` columns of rows whose keys exist."""
    if dialect == "sqlite":
        stmt = sqlite.insert(table)
        if not update:
            return stmt.on_conflict_do_nothing(index_elements=list(keys))
        return stmt.on_conflict_do_update(
            index_elements=list(keys), set_={c: stmt.excluded[c] for c in update}
        )
    my = mysql.insert(table)
    # With nothing to update, "update" a key column to itself: a no-op that still upserts.
    columns = list(update) or [keys[0]]
    return my.on_duplicate_key_update({c: my.inserted[c] for c in columns})


@dataclass(frozen=True)
class PreparedInsert:
    """An INSERT (or upsert) compiled once for a fixed list of columns, with the conversion of
    each value the driver needs.

    `parameters` turns rows into the driver's tuples with the same bind processors SQLAlchemy
    would apply (JSON, dates, decimals), without its per-row bookkeeping, which costs several
    times the driver's own `executemany` on large batches. It is plain Python, so an import
    can build a batch's parameters in its worker thread while the previous batch is written.
    """

    sql: str
    columns: tuple[str, ...]
    converters: tuple[tuple[int, ColumnConverter], ...]
    # SQLite: the same statement for n rows in one `VALUES` list (see `execute`).
    multi_row: Callable[[int], str] | None = None

    async def execute(self, conn: AsyncConnection, params: Sequence[tuple[Any, ...]]) -> None:
        """Run the statement for `params` (tuples made by `parameters`).

        On SQLite, as statements of up to `ROWS_PER_STATEMENT` rows each instead of one
        `executemany`: the driver gives the GIL up and takes it back for every statement it
        steps, and an import's parsing thread, the event loop and the driver's thread then
        took turns row by row. One step per few hundred rows lets them run side by side.
        """
        if not params:
            return
        if self.multi_row is None:
            await conn.exec_driver_sql(self.sql, list(params))
            return
        for sql, flat in multi_row_statements(self.multi_row, params):
            await conn.exec_driver_sql(sql, flat)

    def parameters(self, rows: Sequence[Row]) -> list[tuple[Any, ...]]:
        """The driver parameters of `rows` (mappings holding at least `columns`)."""
        return self.column_parameters({name: [row[name] for row in rows] for name in self.columns})

    def column_parameters(self, columns: Mapping[str, Sequence[Any]]) -> list[tuple[Any, ...]]:
        """The driver parameters of rows given column by column (`{name: values in row order}`,
        holding at least `columns`)."""
        # Column by column: C-level `map`s over whole columns instead of a Python loop per
        # value, and one `zip` into rows at the end.
        given = [columns[name] for name in self.columns]
        values: list[Iterable[Any]] = list(given)
        for index, convert in self.converters:
            values[index] = convert(given[index])
        return list(zip(*values, strict=True))


def prepare_insert(dialect: Dialect, stmt: Insert, columns: Sequence[str]) -> PreparedInsert | None:
    """`stmt` compiled for `columns` with their converters; None for a driver with named
    parameters (the caller then executes the statement the general way)."""
    table = stmt.table
    compiled = stmt.compile(dialect=dialect, column_keys=list(columns))
    names = compiled.positiontup
    if names is None or not isinstance(table, Table):
        return None
    converters: list[tuple[int, ColumnConverter]] = []
    for index, name in enumerate(names):
        impl = table.c[name].type.dialect_impl(dialect)
        process = impl.bind_processor(dialect)
        if process is None:
            continue
        if _plain_json(impl, dialect):
            converters.append((index, _json_column(process)))
        else:
            converters.append((index, functools.partial(map, _repeating(process))))
    multi = _multi_row(compiled.string, len(names)) if dialect.name == "sqlite" else None
    return PreparedInsert(compiled.string, tuple(names), tuple(converters), multi)


@functools.cache
def values_list(rows: int, columns: int) -> str:
    """`VALUES (?, ...), (?, ...)` for `rows` rows of `columns` qmark parameters.

    Many rows go into one SQLite statement instead of through `executemany`: the driver gives
    the GIL up and takes it back for every statement it steps, and the thread stepping then
    waits for the others to hand it back. One step per statement (the queue and the imports).
    """
    row = "(" + ", ".join("?" * columns) + ")"
    return "VALUES " + ", ".join([row] * rows)


def row_chunks(rows: Sequence[Any], width: int) -> Iterator[Sequence[Any]]:
    """`rows` of `width` values in chunks for `values_list`: at most `ROWS_PER_STATEMENT` rows
    and under SQLite's parameter limit."""
    per = max(1, min(ROWS_PER_STATEMENT, SQLITE_MAX_PARAMETERS // width))
    for start in range(0, len(rows), per):
        yield rows[start : start + per]


def multi_row_statements(
    statement: Callable[[int], str], rows: Sequence[Sequence[Any]]
) -> Iterator[tuple[str, tuple[Any, ...]]]:
    """`statement(n)` (a statement over `values_list(n, ...)`) with its flat parameters, for
    each chunk of `rows` that `row_chunks` makes."""
    if rows:
        for chunk in row_chunks(rows, len(rows[0])):
            yield statement(len(chunk)), tuple(chain.from_iterable(chunk))


def execute_rows(
    conn: sqlite3.Connection, statement: Callable[[int], str], rows: Sequence[Sequence[Any]]
) -> None:
    """Run `statement(n)` for `rows` on a plain `sqlite3` connection (a `SqliteWriter`
    transaction), chunked by `row_chunks`: one step per chunk where `executemany` stepped once
    per row."""
    for sql, flat in multi_row_statements(statement, rows):
        conn.execute(sql, flat)


def _multi_row(sql: str, width: int) -> Callable[[int], str] | None:
    """`sql` (one row of `width` qmark parameters) made for n rows, or None when its `VALUES`
    clause is not the plain single one this expects."""
    single = values_list(1, width)
    if sql.count(single) != 1:
        return None
    head, tail = sql.split(single)

    @functools.cache
    def build(rows: int) -> str:
        return head + values_list(rows, width) + tail

    return build


async def execute_many(conn: AsyncConnection, stmt: Insert, rows: Sequence[Row]) -> None:
    """Execute an INSERT for many rows (all with the same keys) straight through the driver
    (see `PreparedInsert`)."""
    if not rows:
        return
    prepared = prepare_insert(conn.dialect, stmt, list(rows[0]))
    if prepared is None:  # a named paramstyle: the general path
        await conn.execute(stmt, list(rows))
        return
    await prepared.execute(conn, prepared.parameters(rows))


def _plain_json(impl: Any, dialect: Dialect) -> bool:
    """True when the dialect stores a JSON column's value as `json.dumps` text, unchanged."""
    if not isinstance(impl, sqltypes.JSON) or dialect._json_serializer is not None:
        return False
    return impl._str_impl.bind_processor(dialect) is None


def dump_strings(values: list[str]) -> str:
    """`json.dumps` of a list of strings, without the general encoder's set-up per call;
    TypeError when an item is not a string."""
    return "[" + ", ".join(map(encode_basestring_ascii, values)) + "]"


def dump_string_lists(values: Sequence[Any]) -> list[str] | None:
    """`json.dumps` of each value when every value is a list of strings that need no escapes
    (printable ASCII without quotes or backslashes): one join per list, checked once for the
    whole column. None for any other column."""
    if not values or set(map(type, values)) != {list}:
        return None
    items = list(chain.from_iterable(values))
    if items and set(map(type, items)) != {str}:
        return None
    text = "".join(items)
    if not (text.isascii() and text.isprintable()) or '"' in text or "\\" in text:
        return None
    dumped = list(map('["{}"]'.format, map('", "'.join, values)))
    if not all(values):  # an empty list: "[]", not '[""]'
        dumped = [d if v else "[]" for d, v in zip(dumped, values, strict=True)]
    return dumped


def _json_column(process: Callable[[Any], Any]) -> ColumnConverter:
    """The converter of a JSON column: `dump_string_lists` for a column of plain string lists
    (a `features` column), else each value encoded on its own, a list of strings directly and
    anything else by the bind processor `process`."""

    def one(value: Any) -> Any:
        if type(value) is list:
            try:
                return dump_strings(value)
            except TypeError:  # an item that is not a string
                pass
        return process(value)

    def column(values: Sequence[Any]) -> Iterable[Any]:
        dumped = dump_string_lists(values)
        return map(one, values) if dumped is None else dumped

    return column


def _repeating(process: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """A bind processor that reuses its last result for the same object: a batch stamps every
    row with one `now`, whose formatting would otherwise dominate the parameter building."""
    last_in: Any = object()
    last_out: Any = None

    def run(value: Any) -> Any:
        nonlocal last_in, last_out
        if value is not last_in:
            last_out = process(value)
            last_in = value
        return last_out

    return run


async def upsert_rows(
    conn: AsyncConnection, table: Table, keys: Sequence[str], rows: Sequence[Row]
) -> int:
    """Upsert `rows` (all with the same columns) by `keys`; how many distinct keys they had
    (a key repeated within `rows` is written once: its last row)."""
    if not rows:
        return 0
    distinct = {tuple(r[k] for k in keys): r for r in rows}
    update = [c for c in rows[0] if c not in keys]
    stmt = upsert_statement(conn.dialect.name, table, keys, update)
    await execute_many(conn, stmt, list(distinct.values()))
    return len(distinct)
