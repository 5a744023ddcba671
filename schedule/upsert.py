"""Dialect-native upserts and the "which of these keys exist" query they are counted with.

SQLite: `INSERT ... ON CONFLICT (keys) DO UPDATE SET col = excluded.col`; MySQL/MariaDB:
`INSERT ... ON DUPLICATE KEY UPDATE col = VALUES(col)`. Both need the key columns to be the
primary key or a unique index of the table (checked by `check_target` before the first row).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from operator import itemgetter
from typing import Any

from sqlalchemy import Table, tuple_
from sqlalchemy.dialects import mysql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.dml import Insert

Row = Mapping[str, Any]
KEY_CHUNK = 2000
"""Keys per `IN (...)` lookup: under SQLite's bound-parameter limit (32766 since 3.32) even for
two lists of a few key columns."""


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


async def execute_many(conn: AsyncConnection, stmt: Insert, rows: Sequence[Row]) -> None:
    """Execute an INSERT for many rows (all with the same keys) straight through the driver.

    The statement is compiled once and every value goes through the same bind processor
    SQLAlchemy would apply (JSON, dates, decimals), but without its per-row bookkeeping, which
    costs several times the driver's own `executemany` on large batches.
    """
    if not rows:
        return
    dialect = conn.dialect
    table = stmt.table
    compiled = stmt.compile(dialect=dialect, column_keys=list(rows[0]))
    names = compiled.positiontup
    if names is None or not isinstance(table, Table):  # a named paramstyle: the general path
        await conn.execute(stmt, list(rows))
        return
    processors = [table.c[n].type.dialect_impl(dialect).bind_processor(dialect) for n in names]
    convert = [(i, _repeating(p)) for i, p in enumerate(processors) if p is not None]
    getter = itemgetter(*names)
    params: list[Any] = []
    for row in rows:
        values = getter(row)
        if len(names) == 1:
            values = (values,)
        if convert:
            values = list(values)
            for index, process in convert:
                values[index] = process(values[index])
        params.append(tuple(values))
    await conn.exec_driver_sql(compiled.string, params)


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


async def existing_keys(
    conn: AsyncConnection, table: Table, keys: Sequence[str], rows: Sequence[Row]
) -> set[tuple[Any, ...]]:
    """The key tuples of `rows` that are already in `table` (read in this transaction)."""
    wanted = list(dict.fromkeys(tuple(r[k] for k in keys) for r in rows))
    found: set[tuple[Any, ...]] = set()
    columns = [table.c[k] for k in keys]
    for start in range(0, len(wanted), KEY_CHUNK):
        chunk = wanted[start : start + KEY_CHUNK]
        if len(columns) == 1:
            clause = columns[0].in_([k[0] for k in chunk])
        else:
            clause = tuple_(*columns).in_(chunk)
        result = await conn.execute(table.select().with_only_columns(*columns).where(clause))
        found.update(tuple(r) for r in result)
    return found


async def upsert_rows(
    conn: AsyncConnection,
    table: Table,
    keys: Sequence[str],
    rows: Sequence[Row],
    *,
    count: bool = True,
) -> tuple[int, int]:
    """Upsert `rows` (all with the same columns) by `keys`: `(inserted, updated)`.

    A key repeated within `rows` counts once (the last row wins). With `count=False` the
    existing-keys query is skipped and every distinct key counts as inserted.
    """
    if not rows:
        return 0, 0
    distinct = {tuple(r[k] for k in keys): r for r in rows}
    present = await existing_keys(conn, table, keys, rows) if count else set()
    update = [c for c in rows[0] if c not in keys]
    stmt = upsert_statement(conn.dialect.name, table, keys, update)
    await execute_many(conn, stmt, list(distinct.values()))
    updated = len(present)
    return len(distinct) - updated, updated
