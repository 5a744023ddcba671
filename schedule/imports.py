"""SQL of the import handlers: stock-log batches, "seen" partnumbers, record-import targets.

Each method that writes a batch does it in one transaction, so a batch is written whole or not
at all; what earlier batches committed stays (the handlers report how many rows that was).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Table, select, true, union_all
from sqlalchemy.dialects import mysql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from schedule.clock import Clock, naive, utcnow
from schedule.models import (
    lot_partnumbers,
    qt_vendor_partnumber_seen,
    stock_log,
    sync_tasks,
)
from schedule.pnbook_rules import glob_matches
from schedule.store import Connector
from schedule.task import TaskStatus
from schedule.upsert import (
    KEY_CHUNK,
    PreparedInsert,
    execute_many,
    prepare_insert,
    upsert_rows,
    upsert_statement,
)

SEEN = qt_vendor_partnumber_seen
STOCK_SOURCE = "stock"


@dataclass(frozen=True, slots=True)
class StockEntry:
    """A valid stock row with its sheet row number (what `stock_log` stores)."""

    row_number: int
    partnumber: str
    vendor: str
    description: str | None
    qty: Any
    price: Any
    warehouse: str | None


@dataclass(frozen=True)
class StockBatchResult:
    """What one stock batch wrote."""

    written: int
    unmapped_seen: int


class ImportStore:
    """Writes of `stock_import` and `records_import`, one transaction per batch."""

    def __init__(self, db: Connector, clock: Clock = utcnow) -> None:
        self.db = db
        self.clock = clock

    async def ignore_globs(self) -> list[str]:
        """The `is_pattern` ignore globs of `qt_vendor_partnumber_seen` (read once per import)."""
        query = select(SEEN.c.partnumber).where(
            SEEN.c.is_ignored == true(), SEEN.c.is_pattern == true()
        )
        async with self.db.read() as conn:
            return [r[0] for r in await conn.execute(query)]

    async def write_stock_batch(
        self, task_id: str, entries: Sequence[StockEntry], globs: Sequence[str]
    ) -> StockBatchResult:
        """Log the rows and note their unmapped, not ignored partnumbers, in one transaction."""
        if not entries:
            return StockBatchResult(0, 0)
        now = naive(self.clock())
        rows = [
            {
                "task_id": task_id,
                "sheet_row": e.row_number,
                "partnumber": e.partnumber,
                "vendor": e.vendor,
                "description": e.description,
                "qty": e.qty,
                "price": e.price,
                "warehouse": e.warehouse,
                "imported_at": now,
            }
            for e in entries
        ]
        async with self.db.write(bulk=True) as conn:
            await execute_many(conn, stock_log.insert(), rows)
            seen = await self._note_unmapped(conn, entries, globs, now)
        return StockBatchResult(len(rows), seen)

    async def _note_unmapped(
        self,
        conn: AsyncConnection,
        entries: Sequence[StockEntry],
        globs: Sequence[str],
        now: datetime,
    ) -> int:
        vendors: dict[str, str] = {}
        for e in entries:
            vendors.setdefault(e.partnumber, e.vendor)
        skip = await _mapped_or_ignored(conn, list(vendors))
        fresh = [
            {
                "partnumber": pn,
                "vendor": vendor or None,
                "is_ignored": False,
                "is_pattern": False,
                "source_type": STOCK_SOURCE,
                "first_seen_at": now,
                "last_seen_at": now,
            }
            for pn, vendor in vendors.items()
            if pn not in skip and not any(glob_matches(g, pn) for g in globs)
        ]
        if fresh:
            await execute_many(conn, _seen_upsert(conn.dialect.name), fresh)
        return len(fresh)

    async def upsert_records(
        self, table: Table, keys: Sequence[str], rows: Sequence[dict[str, Any]]
    ) -> int:
        """Upsert one batch of validated records into a record-import target."""
        async with self.db.write(bulk=True) as conn:
            return await upsert_rows(conn, table, keys, rows)

    def prepare_upsert(
        self, table: Table, keys: Sequence[str], columns: Sequence[str]
    ) -> PreparedInsert | None:
        """The upsert of rows with `columns` by `keys`, compiled once for a whole import (None
        for a driver with named parameters: use `upsert_records`)."""
        dialect = self.db.engine.dialect
        update = [c for c in columns if c not in keys]
        return prepare_insert(dialect, upsert_statement(dialect.name, table, keys, update), columns)

    async def upsert_prepared(
        self, prepared: PreparedInsert, params: Sequence[tuple[Any, ...]]
    ) -> int:
        """Upsert one batch of distinct-keyed records, as driver parameters made by
        `prepared.parameters` or `prepared.column_parameters`, in one transaction.

        On SQLite the transaction runs on the connector's writer thread, whole, in one
        hand-off (`Connector.write_rows`): through aiosqlite each of its statements took
        several hand-offs between the event loop and the driver's thread, each waiting for the
        GIL the import's validating thread holds, and the writes took two to three times as
        long as the statements did. It also queues the batch behind the task store's own
        writes instead of leaving the two to meet in SQLite's busy handler. If the task stops
        waiting (cancelled) before the commit, the batch is rolled back.
        """
        if not params:
            return 0
        await self.db.write_rows(prepared, params)
        return len(params)


def _seen_upsert(dialect: str) -> Any:
    """Insert a seen partnumber; a known one only gets `last_seen_at` (and `source_type`)
    refreshed, so `first_seen_at` and an operator's `is_ignored` flag are kept."""
    if dialect == "sqlite":
        stmt = sqlite.insert(SEEN)
        return stmt.on_conflict_do_update(
            index_elements=["partnumber"],
            set_={"last_seen_at": stmt.excluded.last_seen_at},
        )
    my = mysql.insert(SEEN)
    return my.on_duplicate_key_update({"last_seen_at": my.inserted.last_seen_at})


async def _mapped_or_ignored(conn: AsyncConnection, values: Sequence[str]) -> set[str]:
    """The partnumbers among `values` that have a mapping or an exact `is_ignored` row (one
    query per chunk for both)."""
    found: set[str] = set()
    for start in range(0, len(values), KEY_CHUNK):
        chunk = values[start : start + KEY_CHUNK]
        mapped = select(lot_partnumbers.c.partnumber).where(lot_partnumbers.c.partnumber.in_(chunk))
        ignored = select(SEEN.c.partnumber).where(
            SEEN.c.partnumber.in_(chunk), SEEN.c.is_ignored == true()
        )
        found.update(r[0] for r in await conn.execute(union_all(mapped, ignored)))
    return found


async def live_import_files(db: Connector, task_types: frozenset[str]) -> set[str]:
    """The `file` parameters of pending and running import tasks (kept by the start-up sweep)."""
    query = select(sync_tasks.c.parameters).where(
        sync_tasks.c.task_type.in_(sorted(task_types)),
        sync_tasks.c.status.in_([TaskStatus.PENDING.value, TaskStatus.RUNNING.value]),
    )
    async with db.read() as conn:
        rows = await conn.execute(query)
        params = [p for (p,) in rows if isinstance(p, dict)]
    return {str(p["file"]) for p in params if isinstance(p.get("file"), str)}
