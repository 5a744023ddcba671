"""SQL of data sources: their definitions, watermarks, and the writer of a sync's target table.

`TargetWriter` writes only to a declared sync target (`DOMAIN_TARGETS` and the tables the
operator lists in `SYNCD_SYNC_TARGET_TABLES`, never one of syncd's own), reflects it (an
existing table of our database), checks the key and mapped columns before the first row, and
upserts batches with the dialect's native upsert, one transaction per batch. For
`delete_missing` it records every key it wrote in a temporary table on its own connection, then
deletes the target rows whose key is not there.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Column, MetaData, Table, and_, delete, exists, inspect, select
from sqlalchemy.dialects import mysql, sqlite
from sqlalchemy.exc import NoSuchTableError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection

from config.settings import is_own_table
from schedule.clock import Clock, naive, utc, utcnow
from schedule.exceptions import InvalidState, NotFound
from schedule.models import sync_data_sources, sync_watermarks
from schedule.store import Connector
from schedule.upsert import upsert_rows

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


async def save_watermark(conn: AsyncConnection, mark: Watermark, now: datetime) -> None:
    """Upsert the watermark row in the caller's transaction."""
    row = {
        "data_source_id": mark.data_source_id,
        "interface_id": mark.interface_id or "",
        "value": mark.value,
        "task_id": mark.task_id,
        "updated_at": naive(now),
    }
    update = ("value", "task_id", "updated_at")
    if conn.dialect.name == "sqlite":
        stmt = sqlite.insert(WM)
        stmt = stmt.on_conflict_do_update(
            index_elements=["data_source_id", "interface_id"],
            set_={c: stmt.excluded[c] for c in update},
        )
        await conn.execute(stmt, row)
        return
    my = mysql.insert(WM)
    await conn.execute(my.on_duplicate_key_update({c: my.inserted[c] for c in update}), row)


class TargetWriter:
    """Upserts batches into one target table, on one connection held for the whole sync
    (`Connector.hold`; its transactions are bulk writes through `Connector.write_on`)."""

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
        self.keys_tracked = 0
        self._conn: AsyncConnection | None = None
        self._held = contextlib.AsyncExitStack()

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
                    self.seen = await conn.run_sync(self._create_seen)
        except BaseException:
            await self._held.aclose()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._conn is not None
        conn, seen = self._conn, self.seen
        try:
            if seen is not None:
                with contextlib.suppress(SQLAlchemyError):
                    await conn.rollback()
                    async with self.db.write_on(conn, bulk=True):
                        await conn.run_sync(lambda c: seen.drop(c, checkfirst=True))
        finally:
            await self._held.aclose()

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

    def _create_seen(self, conn: Any) -> Table:
        assert self.table is not None
        name = f"syncd_seen_{secrets.token_hex(6)}"
        columns = [Column(k, self.table.c[k].type, primary_key=True) for k in self.keys]
        seen = Table(name, MetaData(), *columns, prefixes=["TEMPORARY"])
        seen.create(conn)
        return seen

    @property
    def columns(self) -> set[str]:
        """The target table's column names."""
        assert self.table is not None
        return set(self.table.c.keys())

    def column(self, name: str) -> Any:
        """A reflected column of the target."""
        assert self.table is not None
        return self.table.c[name]

    async def write(
        self, rows: Sequence[dict[str, Any]], mark: Watermark | None = None
    ) -> tuple[int, int]:
        """Upsert a batch (and store `mark`) in one transaction: `(inserted, updated)`."""
        assert self._conn is not None and self.table is not None
        conn = self._conn
        async with self.db.write_on(conn, bulk=True):
            inserted, updated = await upsert_rows(conn, self.table, self.keys, rows)
            if self.seen is not None and rows:
                await self._track(conn, rows)
            if mark is not None:
                await save_watermark(conn, mark, self.clock())
        return inserted, updated

    async def track_only(self, keys: Sequence[dict[str, Any]]) -> None:
        """Note keys of rows that failed, so that `delete_missing` keeps their target rows."""
        if self.seen is None or not keys or self._conn is None:
            return
        async with self.db.write_on(self._conn, bulk=True):
            await self._track(self._conn, keys)

    async def _track(self, conn: AsyncConnection, rows: Sequence[dict[str, Any]]) -> None:
        assert self.seen is not None
        keyed = {tuple(r[k] for k in self.keys): r for r in rows}
        values = [dict(zip(self.keys, key, strict=True)) for key in keyed]
        if conn.dialect.name == "sqlite":
            stmt: Any = sqlite.insert(self.seen).on_conflict_do_nothing()
        else:
            stmt = mysql.insert(self.seen).prefix_with("IGNORE")
        await conn.execute(stmt, values)
        self.keys_tracked += len(values)

    async def delete_missing(self) -> int:
        """Delete the target rows whose key no written row had; how many went."""
        assert self._conn is not None and self.table is not None and self.seen is not None
        target, seen = self.table, self.seen
        match = and_(*(seen.c[k] == target.c[k] for k in self.keys))
        statement = delete(target).where(~exists(select(1).select_from(seen).where(match)))
        async with self.db.write_on(self._conn, bulk=True):
            result = await self._conn.execute(statement)
        return int(result.rowcount or 0)
