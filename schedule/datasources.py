"""SQL of data sources: their definitions, watermarks, and the writer of a sync's target table.

`TargetWriter` writes only to a declared sync target (`DOMAIN_TARGETS` and the tables the
operator lists in `SYNCD_SYNC_TARGET_TABLES`, never one of syncd's own), reflects it (an
existing table of our database), checks the key and mapped columns before the first row, and
upserts batches with the dialect's native upsert, one transaction per batch (on SQLite on the
connector's writer thread). For `delete_missing` it records every key it wrote in a temporary
table of the connection that writes, then deletes the target rows whose key is not there.
"""

from __future__ import annotations

import contextlib
import functools
import secrets
import sqlite3
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import chain
from operator import itemgetter
from typing import Any

from sqlalchemy import Column, MetaData, Table, and_, delete, exists, inspect, select, text
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import NoSuchTableError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.schema import CreateTable, DropTable

from config.settings import is_own_table
from schedule.clock import Clock, naive, utc, utcnow
from schedule.exceptions import InvalidState, NotFound
from schedule.models import sync_data_sources, sync_watermarks
from schedule.store import Connector, SqliteConnector
from schedule.upsert import (
    KEY_CHUNK,
    SQLITE_MAX_PARAMETERS,
    PreparedInsert,
    execute_rows,
    prepare_insert,
    upsert_statement,
)

DS = sync_data_sources
WM = sync_watermarks
FIELDS = (
    "name",
    "kind",
    "connection",
    "target_table",
    "key_columns",
    "column_mapping",
    "watermark_column",
    "delete_missing",
    "interfaces",
    "batch_size",
)
DOMAIN_TARGETS = frozenset(
    {
        "lot",
        "lot_partnumbers",
        "qt_lot_bundles",
        "qt_lot_bundle_items",
        "qt_vendor_partnumber_seen",
        "tools",
    }
)
"""The domain tables data sources may fill: the partnumber book sources and record imports'
`tools` (the books themselves, `stock_log` and every `sync_*` table are syncd's own)."""


def sync_targets(extra: Iterable[str]) -> frozenset[str]:
    """The tables data sources may write to, lower case: the domain tables and `extra` (the
    operator's list), never one of syncd's own tables."""
    names = DOMAIN_TARGETS | {name.lower() for name in extra}
    return frozenset(name for name in names if not is_own_table(name))


class TargetError(Exception):
    """The target table cannot take the rows (missing table, columns or unique key)."""


@dataclass(frozen=True)
class DataSourceRecord:
    """One stored data source definition (with its secrets: mask before showing)."""

    id: str
    name: str
    kind: str
    connection: dict[str, Any]
    target_table: str
    key_columns: list[str]
    column_mapping: dict[str, str]
    watermark_column: str | None
    delete_missing: bool
    interfaces: dict[str, dict[str, Any]]
    batch_size: int
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: Any) -> DataSourceRecord:
        m = row._mapping
        values = {f: m[f] for f in FIELDS}
        values["delete_missing"] = bool(values["delete_missing"])
        return cls(
            id=m["id"],
            created_at=utc(m["created_at"]),  # type: ignore[arg-type]
            updated_at=utc(m["updated_at"]),  # type: ignore[arg-type]
            **values,
        )


class DataSourceStore:
    """CRUD of `sync_data_sources` and the watermarks of incremental syncs."""

    def __init__(self, db: Connector, clock: Clock = utcnow) -> None:
        self.db = db
        self.clock = clock

    async def create(self, source_id: str, values: dict[str, Any]) -> DataSourceRecord:
        """Store a new definition; `InvalidState` (409) when the id is taken."""
        now = naive(self.clock())
        async with self.db.write() as conn:
            taken = await conn.scalar(select(DS.c.id).where(DS.c.id == source_id))
            if taken is not None:
                raise InvalidState(f"data source {source_id!r} already exists")
            await conn.execute(
                DS.insert().values(id=source_id, created_at=now, updated_at=now, **values)
            )
        return await self.require(source_id)

    async def get(self, source_id: str) -> DataSourceRecord | None:
        """One definition, or None."""
        async with self.db.read() as conn:
            row = (await conn.execute(DS.select().where(DS.c.id == source_id))).first()
        return DataSourceRecord.from_row(row) if row is not None else None

    async def require(self, source_id: str) -> DataSourceRecord:
        """One definition, or `NotFound`."""
        found = await self.get(source_id)
        if found is None:
            raise NotFound(f"no data source {source_id!r}")
        return found

    async def list(self) -> list[DataSourceRecord]:
        """Every definition, by id."""
        async with self.db.read() as conn:
            rows = await conn.execute(DS.select().order_by(DS.c.id))
            return [DataSourceRecord.from_row(r) for r in rows]

    async def replace(self, source_id: str, values: dict[str, Any]) -> DataSourceRecord:
        """Replace a definition's fields; `NotFound` when there is none."""
        async with self.db.write() as conn:
            result = await conn.execute(
                DS.update()
                .where(DS.c.id == source_id)
                .values(updated_at=naive(self.clock()), **values)
            )
            if result.rowcount == 0:
                raise NotFound(f"no data source {source_id!r}")
        return await self.require(source_id)

    async def delete(self, source_id: str) -> None:
        """Delete a definition and its watermarks; `NotFound` when there is none."""
        async with self.db.write() as conn:
            result = await conn.execute(DS.delete().where(DS.c.id == source_id))
            if result.rowcount == 0:
                raise NotFound(f"no data source {source_id!r}")
            await conn.execute(WM.delete().where(WM.c.data_source_id == source_id))

    async def watermark(self, source_id: str, interface_id: str | None) -> Any:
        """The stored watermark of a source (and interface), or None."""
        query = select(WM.c.value).where(
            WM.c.data_source_id == source_id, WM.c.interface_id == (interface_id or "")
        )
        async with self.db.read() as conn:
            return await conn.scalar(query)

    def target_writer(
        self, table: str, keys: Sequence[str], *, targets: Collection[str], track_keys: bool
    ) -> TargetWriter:
        """A writer of one sync's target table on this store's database and clock (enter it
        with `async with` to hold its connection for the sync)."""
        return TargetWriter(
            self.db, table, keys, targets=targets, track_keys=track_keys, clock=self.clock
        )


@dataclass(frozen=True)
class Watermark:
    """A watermark to store with a batch."""

    data_source_id: str
    interface_id: str | None
    value: Any
    task_id: str


class TargetWriter:
    """Upserts batches into one target table, one transaction per batch (with the watermark
    and the keys `delete_missing` keeps, when there are any).

    A batch comes column by column (`{column: values in row order}`, the same columns every
    batch) and is written through one statement compiled for the sync (`PreparedInsert`),
    whose driver parameters are made for whole columns at once. On SQLite the batch's
    transaction runs whole on the connector's writer thread, in one hand-off, as the imports'
    batches do: through aiosqlite every statement took several hand-offs between the event
    loop and the driver's thread, which was most of a sync's time. On MySQL/MariaDB it runs on
    the connection held for the sync (`Connector.hold`, each transaction through
    `Connector.write_on`), the upsert one `executemany` that the driver sends as a multi-row
    statement.

    `delete_missing` keeps every key written (and the keys of rejected rows) in a temporary
    table of the connection that writes: the writer thread's on SQLite, the held one on MySQL.
    """

    def __init__(
        self,
        db: Connector,
        table: str,
        keys: Sequence[str],
        *,
        targets: Collection[str],
        track_keys: bool,
        clock: Clock = utcnow,
    ) -> None:
        self.db = db
        self.targets = frozenset(t.lower() for t in targets)
        self.table_name = table
        self.keys = list(keys)
        self.track_keys = track_keys
        self.clock = clock
        self.table: Table | None = None
        self.seen: Table | None = None
        self._conn: AsyncConnection | None = None
        self._held = contextlib.AsyncExitStack()
        self._plan: _WritePlan | None = None
        self._plan_columns: tuple[str, ...] = ()
        self._marks: PreparedInsert | None = None

    @property
    def _sqlite(self) -> SqliteConnector | None:
        """The connector when the batches run on SQLite's writer thread."""
        return self.db if isinstance(self.db, SqliteConnector) else None

    async def __aenter__(self) -> TargetWriter:
        if is_own_table(self.table_name) or self.table_name.lower() not in self.targets:
            raise TargetError(
                f"target table {self.table_name!r} is not a sync target: data sources write only"
                " to the domain tables and those listed in SYNCD_SYNC_TARGET_TABLES, never to"
                " syncd's own tables"
            )
        conn = self._conn = await self._held.enter_async_context(self.db.hold())
        try:
            async with self.db.write_on(conn, bulk=True):
                self.table = await conn.run_sync(self._reflect)
            if self.track_keys:
                self.seen = self._seen_table()
                create = str(CreateTable(self.seen).compile(dialect=self.db.engine.dialect))
                await self._run_plain(
                    lambda c: c.execute(create), lambda c: c.execute(text(create))
                )
        except BaseException:
            await self._held.aclose()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._conn is not None
        conn, seen = self._conn, self.seen
        try:
            if seen is not None:
                drop = str(DropTable(seen).compile(dialect=self.db.engine.dialect))
                with contextlib.suppress(SQLAlchemyError):
                    await conn.rollback()
                    await self._run_plain(
                        lambda c: c.execute(drop), lambda c: c.execute(text(drop))
                    )
        finally:
            await self._held.aclose()

    async def _run_plain(
        self, on_sqlite: Callable[[sqlite3.Connection], Any], on_held: Callable[[Any], Any]
    ) -> None:
        """One write transaction: on SQLite's writer thread, else on the held connection."""
        sqlite_db = self._sqlite
        if sqlite_db is not None:
            await sqlite_db.run(on_sqlite, bulk=True)
            return
        assert self._conn is not None
        async with self.db.write_on(self._conn, bulk=True) as conn:
            await on_held(conn)

    def _reflect(self, conn: Any) -> Table:
        try:
            table = Table(self.table_name, MetaData(), autoload_with=conn)
        except NoSuchTableError:
            raise TargetError(f"target table {self.table_name!r} does not exist") from None
        missing = [k for k in self.keys if k not in table.c]
        if missing:
            raise TargetError(f"target table {self.table_name!r} has no column(s) {missing}")
        unique = {tuple(sorted(c.name for c in table.primary_key.columns))}
        inspector = inspect(conn)
        for uc in inspector.get_unique_constraints(self.table_name):
            unique.add(tuple(sorted(uc["column_names"])))
        for ix in inspector.get_indexes(self.table_name):
            if ix.get("unique"):
                unique.add(tuple(sorted(c for c in ix["column_names"] if c is not None)))
        if tuple(sorted(self.keys)) not in unique:
            raise TargetError(
                f"key columns {self.keys} are not the primary key or a unique index of"
                f" {self.table_name!r}; an upsert needs one"
            )
        return table

    def _seen_table(self) -> Table:
        """The temporary table of the keys written, with the key columns' types."""
        assert self.table is not None
        name = f"syncd_seen_{secrets.token_hex(6)}"
        columns = [Column(k, self.table.c[k].type, primary_key=True) for k in self.keys]
        return Table(name, MetaData(), *columns, prefixes=["TEMPORARY"])

    @property
    def columns(self) -> set[str]:
        """The target table's column names."""
        assert self.table is not None
        return set(self.table.c.keys())

    def column(self, name: str) -> Any:
        """A reflected column of the target."""
        assert self.table is not None
        return self.table.c[name]

    def _plan_for(self, names: Sequence[str]) -> _WritePlan:
        """The statements of batches with these columns, compiled once for the sync (the
        batches' columns as given: the compiled statement has them in the table's order)."""
        if self._plan is None or self._plan_columns != tuple(names):
            assert self.table is not None
            self._plan = _WritePlan.make(
                self.db.engine.dialect, self.table, self.keys, names, self.seen
            )
            self._plan_columns = tuple(names)
        return self._plan

    async def write(
        self, columns: Mapping[str, Sequence[Any]], mark: Watermark | None = None
    ) -> tuple[int, int]:
        """Upsert a batch given column by column (every column as long, holding the key
        columns), and store `mark`, in one transaction: `(inserted, updated)`.

        A key repeated within the batch is written once (its last row) and counted once.
        `updated` counts the batch's keys that were in the table before it, as the database
        compares keys; `inserted` the others.
        """
        if not columns or not len(next(iter(columns.values()))):
            if mark is not None:
                await self._save_mark(mark)
            return 0, 0
        plan = self._plan_for(list(columns))
        params, keys = plan.distinct(plan.prepared.column_parameters(columns))
        marks = self._mark_parameters(mark)
        sqlite_db = self._sqlite
        if sqlite_db is not None:
            existing = await sqlite_db.run(
                lambda conn: plan.write_plain(conn, params, keys, marks), bulk=True
            )
        else:
            assert self._conn is not None
            async with self.db.write_on(self._conn, bulk=True) as conn:
                existing = await plan.write_held(conn, params, keys, marks)
        return len(params) - existing, existing

    def _mark_parameters(self, mark: Watermark | None) -> tuple[str, tuple[Any, ...]] | None:
        """The watermark upsert's SQL and driver parameters."""
        if mark is None:
            return None
        if self._marks is None:
            dialect = self.db.engine.dialect
            statement = upsert_statement(
                dialect.name, WM, ["data_source_id", "interface_id"], MARK_UPDATE
            )
            self._marks = prepare_insert(dialect, statement, MARK_COLUMNS)
            if self._marks is None:
                raise TargetError("the database driver must take positional parameters")
        row = {
            "data_source_id": mark.data_source_id,
            "interface_id": mark.interface_id or "",
            "value": mark.value,
            "task_id": mark.task_id,
            "updated_at": naive(self.clock()),
        }
        return self._marks.sql, self._marks.parameters([row])[0]

    async def _save_mark(self, mark: Watermark) -> None:
        sql, params = self._mark_parameters(mark) or ("", ())
        await self._run_plain(
            lambda c: c.execute(sql, params), lambda c: c.exec_driver_sql(sql, params)
        )

    async def track_only(self, keys: Sequence[dict[str, Any]]) -> None:
        """Note keys of rows that failed, so that `delete_missing` keeps their target rows."""
        if self.seen is None or not keys:
            return
        plan = _WritePlan.make(self.db.engine.dialect, self.seen, self.keys, self.keys, self.seen)
        params = plan.prepared.parameters(keys)
        await self._run_plain(
            lambda c: plan.track_plain(c, params), lambda c: plan.track_held(c, params)
        )

    async def delete_missing(self) -> int:
        """Delete the target rows whose key no written row had; how many went."""
        assert self._conn is not None and self.table is not None and self.seen is not None
        target, seen = self.table, self.seen
        match = and_(*(seen.c[k] == target.c[k] for k in self.keys))
        statement = delete(target).where(~exists(select(1).select_from(seen).where(match)))
        compiled = statement.compile(dialect=self.db.engine.dialect)
        sql = str(compiled)
        gone: list[int] = []

        def plain(conn: sqlite3.Connection) -> None:
            gone.append(conn.execute(sql).rowcount)

        async def held(conn: AsyncConnection) -> None:
            gone.append((await conn.execute(statement)).rowcount)

        await self._run_plain(plain, held)
        return int(gone[0] or 0)


def _count_sql(table: str, keys: Sequence[str], qmark: bool, n: int) -> str:
    """How many of `n` keys (bound in order) `table` holds.

    Several key columns: the keys are a `VALUES` list joined to the table, which looks each
    one up in the key's index. SQLite answers `(a, b) IN (VALUES ...)` by scanning the whole
    table (the index as a covering index), a cost that grew with the table, batch after batch;
    MariaDB answers `(a, b) IN ((...), ...)` with an index range per key, about three times as
    long as the join. One key column is a plain `IN` list.
    """
    mark = "?" if qmark else "%s"
    if len(keys) == 1:
        return f"SELECT COUNT(*) FROM {table} WHERE {keys[0]} IN ({', '.join([mark] * n)})"
    rows = ", ".join(["(" + ", ".join([mark] * len(keys)) + ")"] * n)
    names = [f"k{i}" for i in range(len(keys))]
    match = " AND ".join(f"t.{key} = k.{name}" for key, name in zip(keys, names, strict=True))
    return (
        f"WITH k ({', '.join(names)}) AS (VALUES {rows})"
        f" SELECT COUNT(*) FROM k JOIN {table} AS t ON {match}"
    )


MARK_COLUMNS = ("data_source_id", "interface_id", "value", "task_id", "updated_at")
MARK_UPDATE = ("value", "task_id", "updated_at")


@dataclass(frozen=True)
class _WritePlan:
    """The statements of one sync's batches: the upsert, the count of keys already present,
    and the insert of keys into the `delete_missing` table, for one list of columns."""

    prepared: PreparedInsert
    key_of: Callable[[tuple[Any, ...]], Any]
    count: Callable[[int], str]
    width: int
    track: Callable[[int], str] | None
    paramstyle_qmark: bool

    @classmethod
    def make(
        cls,
        dialect: Dialect,
        table: Table,
        keys: Sequence[str],
        names: Sequence[str],
        seen: Table | None,
    ) -> _WritePlan:
        update = [c for c in names if c not in keys]
        prepared = prepare_insert(
            dialect, upsert_statement(dialect.name, table, keys, update), names
        )
        if prepared is None:
            raise TargetError("the database driver must take positional parameters")
        positions = [prepared.columns.index(k) for k in keys]
        quote = dialect.identifier_preparer.quote
        qmark = dialect.paramstyle == "qmark"
        mark = "?" if qmark else "%s"
        key_list = ", ".join(quote(k) for k in keys)
        one = "(" + ", ".join([mark] * len(keys)) + ")"
        count = functools.cache(
            functools.partial(_count_sql, quote(table.name), [quote(k) for k in keys], qmark)
        )

        track = None
        if seen is not None:
            verb = "INSERT OR IGNORE INTO" if qmark else "INSERT IGNORE INTO"
            into = f"{verb} {quote(seen.name)} ({key_list}) "

            @functools.cache
            def track_sql(n: int) -> str:
                return into + "VALUES " + ", ".join([one] * n)

            track = track_sql
        return cls(prepared, itemgetter(*positions), count, len(keys), track, qmark)

    def distinct(self, params: list[tuple[Any, ...]]) -> tuple[list[tuple[Any, ...]], list[Any]]:
        """`params` with each key once (its last row, in the order of those last rows), and
        their keys."""
        keys = list(map(self.key_of, params))
        if len(set(keys)) == len(keys):
            return params, keys
        last = sorted({key: i for i, key in enumerate(keys)}.values())
        return [params[i] for i in last], [keys[i] for i in last]

    def _flat_keys(self, keys: Sequence[Any]) -> list[Any]:
        return list(chain.from_iterable(keys)) if self.width > 1 else list(keys)

    def _key_chunks(self, keys: Sequence[Any]) -> Iterator[tuple[str, list[Any]]]:
        per = max(1, min(KEY_CHUNK, SQLITE_MAX_PARAMETERS // self.width))
        for start in range(0, len(keys), per):
            chunk = keys[start : start + per]
            yield self.count(len(chunk)), self._flat_keys(chunk)

    def write_plain(
        self,
        conn: sqlite3.Connection,
        params: Sequence[tuple[Any, ...]],
        keys: Sequence[Any],
        mark: tuple[str, tuple[Any, ...]] | None,
    ) -> int:
        """The batch's transaction on a plain `sqlite3` connection; the keys found present."""
        existing = 0
        for sql, flat in self._key_chunks(keys):
            existing += int(conn.execute(sql, flat).fetchone()[0])
        assert self.prepared.multi_row is not None
        execute_rows(conn, self.prepared.multi_row, params)
        if self.track is not None:
            self.track_plain(conn, [k if self.width > 1 else (k,) for k in keys])
        if mark is not None:
            conn.execute(*mark)
        return existing

    def track_plain(self, conn: sqlite3.Connection, keys: Sequence[tuple[Any, ...]]) -> None:
        assert self.track is not None
        execute_rows(conn, self.track, keys)

    async def write_held(
        self,
        conn: AsyncConnection,
        params: Sequence[tuple[Any, ...]],
        keys: Sequence[Any],
        mark: tuple[str, tuple[Any, ...]] | None,
    ) -> int:
        """The batch's statements in the caller's transaction (MySQL); the keys found present."""
        existing = 0
        for sql, flat in self._key_chunks(keys):
            existing += int((await conn.exec_driver_sql(sql, tuple(flat))).scalar_one())
        await conn.exec_driver_sql(self.prepared.sql, list(params))
        if self.track is not None:
            await self.track_held(conn, [k if self.width > 1 else (k,) for k in keys])
        if mark is not None:
            await conn.exec_driver_sql(*mark)
        return existing

    async def track_held(self, conn: AsyncConnection, keys: Sequence[tuple[Any, ...]]) -> None:
        assert self.track is not None
        if keys:
            await conn.exec_driver_sql(self.track(1), list(keys))
