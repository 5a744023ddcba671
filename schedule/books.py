"""The partnumber-book store: every SQL statement about books and their source tables.

A snapshot is set-based: one `INSERT ... SELECT` over a single scan of `lot_partnumbers` writes
the items (bundles expanded by a join), so a million mappings never travel through Python. The
book, its items and its activation are one transaction, taken under the `partnumber_books` row
of `sync_locks` so that two nodes never write books at the same time (on SQLite `BEGIN
IMMEDIATE` already serialises writers; on MySQL the row is locked with `SELECT ... FOR
UPDATE`). `UNIQUE(version)` is the last line of defence. Retention takes the same lock, so it
never races an activation.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, tzinfo
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Integer,
    and_,
    case,
    delete,
    exists,
    false,
    func,
    insert,
    inspect,
    literal,
    not_,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection

from schedule.clock import Clock, naive, utc, utcnow
from schedule.exceptions import LockBusy, NotFound, SnapshotError
from schedule.gfs import BookStamp, GfsDecision
from schedule.models import (
    lot_partnumbers,
    qt_lot_bundle_items,
    qt_lot_bundles,
    qt_partnumber_book_items,
    qt_partnumber_books,
    qt_vendor_partnumber_seen,
    sync_locks,
)
from schedule.pnbook_rules import LIKE_ESCAPE, glob_to_like, next_version
from schedule.records import Page
from schedule.store import Connector

log = logging.getLogger(__name__)

LP = lot_partnumbers
SEEN = qt_vendor_partnumber_seen
BUNDLES = qt_lot_bundles
BUNDLE_ITEMS = qt_lot_bundle_items
BOOKS = qt_partnumber_books
ITEMS = qt_partnumber_book_items
LOCK_NAME = "partnumber_books"
SOURCE_TABLES = (LP.name, BUNDLES.name, BUNDLE_ITEMS.name, SEEN.name)
ITEM_COLUMNS = (
    "book_id",
    "partnumber",
    "vendor",
    "lot_name",
    "qty",
    "is_primary_pn",
    "description",
)

Progress = Callable[[str, int, int], None]
"""Called as a snapshot advances with a message, the items written so far and a percentage."""

Decide = Callable[[Sequence[BookStamp]], GfsDecision]
"""Retention policy: which of these books to keep (see `schedule.gfs.select_books`)."""


@dataclass(frozen=True)
class BookRecord:
    """One row of `qt_partnumber_books`."""

    id: int
    version: str
    is_active: bool
    created_at: datetime
    item_count: int
    task_id: str | None


@dataclass(frozen=True)
class BookItem:
    """One row of `qt_partnumber_book_items`."""

    partnumber: str
    vendor: str
    lot_name: str
    qty: int
    is_primary_pn: bool
    description: str | None


@dataclass(frozen=True)
class SnapshotResult:
    """The book a snapshot created and how many ignore globs it applied."""

    book: BookRecord
    ignore_patterns: int


@dataclass(frozen=True)
class RetentionResult:
    """Versions kept and deleted (newest first), and the items deleted with them."""

    kept: list[str]
    deleted: list[str]
    deleted_items: int
    reasons: dict[str, list[str]]


class BookStore:
    """Reads and writes partnumber books.

    The snapshot and retention transactions are bulk writes (`Connector.write(bulk=True)`):
    a million mappings take seconds, longer than the timeout that bounds API requests."""

    def __init__(self, db: Connector, clock: Clock = utcnow) -> None:
        self.db = db
        self.clock = clock

    # ---- snapshot -----------------------------------------------------------------------

    async def missing_source_tables(self) -> list[str]:
        """Source tables of the snapshot that do not exist in the database."""
        async with self.db.read() as conn:
            return await conn.run_sync(
                lambda c: [t for t in SOURCE_TABLES if not inspect(c).has_table(t)]
            )

    async def snapshot(
        self, tz: tzinfo, task_id: str | None, holder: str, progress: Progress | None = None
    ) -> SnapshotResult:
        """Write a new book of every mapping that is not ignored and make it the active one.

        Raises `SnapshotError` (nothing written) when a source table is missing or the book
        would be empty, `LockBusy` when another node keeps the lock past the lock timeout.
        """
        missing = await self.missing_source_tables()
        if missing:
            raise SnapshotError(f"source table {', '.join(missing)} does not exist")
        report = progress or (lambda _message, _count, _percent: None)
        await self._ensure_lock_row()
        now = self.clock()
        async with self.db.write(bulk=True) as conn:
            await self._lock(conn, holder)
            version = await self._next_version(conn, now.astimezone(tz).date())
            book_id = await self._insert_book(conn, version, now, task_id)
            patterns = await self._ignore_patterns(conn)
            report(f"{version}: copying mappings and expanding bundles", 0, 10)
            dialect = self.db.name
            total = (await conn.execute(_items(book_id, patterns, dialect))).rowcount
            if total == 0:
                raise SnapshotError(
                    "the snapshot is empty: no partnumber maps to a lot once ignored "
                    "partnumbers and blank lot names are left out; nothing was written"
                )
            report(f"{version}: activating", total, 80)
            await conn.execute(
                update(BOOKS)
                .where(BOOKS.c.is_active == true(), BOOKS.c.id != book_id)
                .values(is_active=False)
            )
            await conn.execute(
                update(BOOKS).where(BOOKS.c.id == book_id).values(is_active=True, item_count=total)
            )
        book = BookRecord(book_id, version, True, now, total, task_id)
        log.info(
            "partnumber book created",
            extra={"action": "snapshot", "version": version, "items": total, "task_id": task_id},
        )
        return SnapshotResult(book, len(patterns))

    async def _next_version(self, conn: AsyncConnection, day: date) -> str:
        prefix = f"PNBOOK-{day.year:04d}-{day.month:02d}-{day.day:02d}-"
        rows = await conn.execute(select(BOOKS.c.version).where(BOOKS.c.version.like(prefix + "%")))
        try:
            return next_version(day, rows.scalars())
        except ValueError as exc:
            raise SnapshotError(str(exc)) from None

    async def _insert_book(
        self, conn: AsyncConnection, version: str, now: datetime, task_id: str | None
    ) -> int:
        try:
            result = await conn.execute(
                insert(BOOKS).values(
                    version=version,
                    is_active=False,
                    created_at=naive(now),
                    item_count=0,
                    task_id=task_id,
                )
            )
        except IntegrityError:
            raise LockBusy(f"book version {version} was taken concurrently; try again") from None
        key = result.inserted_primary_key
        assert key is not None
        return int(key[0])

    @staticmethod
    async def _ignore_patterns(conn: AsyncConnection) -> list[str]:
        """The LIKE patterns (lower case, `\\`-escaped) of the ignored glob rows."""
        rows = await conn.execute(
            select(SEEN.c.partnumber).where(
                SEEN.c.is_ignored == true(), SEEN.c.is_pattern == true()
            )
        )
        return sorted({glob_to_like(p).lower() for p in rows.scalars() if p})

    # ---- lock -----------------------------------------------------------------------------

    async def _ensure_lock_row(self) -> None:
        async with self.db.write() as conn:
            found = await conn.execute(
                select(sync_locks.c.name).where(sync_locks.c.name == LOCK_NAME)
            )
            if found.first() is not None:
                return
            try:
                async with conn.begin_nested():
                    await conn.execute(insert(sync_locks).values(name=LOCK_NAME))
            except IntegrityError:
                pass  # another node created it first

    async def _lock(self, conn: AsyncConnection, holder: str) -> None:
        """Take the book lock for the rest of the transaction (waits for the holder)."""
        row = select(sync_locks.c.name).where(sync_locks.c.name == LOCK_NAME)
        query = self.db.lock(row, skip_locked=False)
        try:
            await conn.execute(query)
        except OperationalError as exc:
            raise LockBusy(f"another node is writing partnumber books: {exc.orig}") from None
        await conn.execute(
            update(sync_locks)
            .where(sync_locks.c.name == LOCK_NAME)
            .values(locked_by=holder, locked_at=naive(self.clock()))
        )

    # ---- retention ------------------------------------------------------------------------

    async def retain(self, decide: Decide, holder: str) -> RetentionResult:
        """Delete the books `decide` does not keep (items first), never the active one."""
        await self._ensure_lock_row()
        async with self.db.write(bulk=True) as conn:
            await self._lock(conn, holder)
            rows = await conn.execute(
                select(BOOKS.c.id, BOOKS.c.version, BOOKS.c.created_at, BOOKS.c.is_active)
            )
            stamps = [
                BookStamp(r.id, r.version, utc(r.created_at) or self.clock(), bool(r.is_active))
                for r in rows
            ]
            decision = decide(stamps)
            doomed = [b.book_id for b in decision.delete if not b.is_active]
            deleted_items = 0
            if doomed:
                deleted_items = (
                    await conn.execute(delete(ITEMS).where(ITEMS.c.book_id.in_(doomed)))
                ).rowcount
                await conn.execute(
                    delete(BOOKS).where(BOOKS.c.id.in_(doomed), BOOKS.c.is_active == false())
                )
        by_id = {b.book_id: b.version for b in stamps}
        result = RetentionResult(
            kept=[b.version for b in decision.keep],
            deleted=[by_id[i] for i in doomed],
            deleted_items=deleted_items,
            reasons={by_id[k]: list(v) for k, v in decision.reasons.items()},
        )
        log.info(
            "partnumber book retention",
            extra={"action": "retention", "kept": len(result.kept), "deleted": result.deleted},
        )
        return result

    # ---- reads ----------------------------------------------------------------------------

    async def list_books(self) -> list[BookRecord]:
        """Every book, newest first."""
        query = select(BOOKS).order_by(BOOKS.c.created_at.desc(), BOOKS.c.id.desc())
        async with self.db.read() as conn:
            return [_book(r._mapping) for r in await conn.execute(query)]

    async def get_book(self, version: str) -> BookRecord:
        """A book by version, or `NotFound`."""
        async with self.db.read() as conn:
            row = (await conn.execute(select(BOOKS).where(BOOKS.c.version == version))).first()
        if row is None:
            raise NotFound(f"no partnumber book {version!r}")
        return _book(row._mapping)

    async def items(
        self, book_id: int, page: Page, partnumber: str | None = None
    ) -> tuple[list[BookItem], int]:
        """A page of a book's items in insertion order, optionally one partnumber's only."""
        where = ITEMS.c.book_id == book_id
        if partnumber is not None:
            where = and_(where, ITEMS.c.partnumber == partnumber)
        query = select(ITEMS).where(where).order_by(ITEMS.c.id).limit(page.size).offset(page.offset)
        async with self.db.read() as conn:
            total = (await conn.execute(select(func.count()).where(where))).scalar_one()
            rows = await conn.execute(query)
            items = [
                BookItem(
                    partnumber=r.partnumber,
                    vendor=r.vendor,
                    lot_name=r.lot_name,
                    qty=r.qty,
                    is_primary_pn=bool(r.is_primary_pn),
                    description=r.description,
                )
                for r in rows
            ]
        return items, int(total)


def _book(row: Any) -> BookRecord:
    return BookRecord(
        id=int(row["id"]),
        version=row["version"],
        is_active=bool(row["is_active"]),
        created_at=utc(row["created_at"]) or row["created_at"],
        item_count=int(row["item_count"]),
        task_id=row["task_id"],
    )


# ---- snapshot SQL ---------------------------------------------------------------------------


def _items(book_id: int, patterns: Sequence[str], dialect: str) -> Any:
    """The whole snapshot as one `INSERT ... SELECT` over one scan of `lot_partnumbers`.

    Each mapping is left-joined to `qt_lot_bundles` and, for a bundle, to its components: a
    plain lot gives one item (the lot, qty 1), a bundle one item per component (component lot,
    its qty). A bundle without components yields a NULL lot, dropped with the blank lots.
    """
    bundle = BUNDLES.c.bundle_lot_name
    is_plain = bundle.is_(None)
    lot_name = case((is_plain, LP.c.lot_name), else_=BUNDLE_ITEMS.c.lot_name)
    qty = case((is_plain, literal(1, Integer)), else_=BUNDLE_ITEMS.c.qty)
    joined = LP.outerjoin(BUNDLES, bundle == LP.c.lot_name).outerjoin(
        BUNDLE_ITEMS, BUNDLE_ITEMS.c.bundle_lot_name == bundle
    )
    source = (
        select(
            literal(book_id, BigInteger),
            LP.c.partnumber,
            LP.c.vendor,
            lot_name,
            qty,
            LP.c.is_primary_pn,
            LP.c.description,
        )
        .select_from(joined)
        .where(_not_blank(lot_name, dialect), _not_ignored(patterns, dialect))
    )
    return insert(ITEMS).from_select(list(ITEM_COLUMNS), source)


def _not_ignored(patterns: Sequence[str], dialect: str) -> ColumnElement[bool]:
    """Not an exact `is_ignored` partnumber, and matching no ignored glob (case-insensitive).

    The exact match uses the column's collation (case-insensitive on MariaDB's default
    collations, case-sensitive on SQLite) so that it can use the primary key of the seen table.
    SQLite's LIKE already ignores ASCII case (its LOWER knows no other letters either), so only
    MySQL lowers both sides, which also covers a binary collation.
    """
    exact = exists().where(
        SEEN.c.partnumber == LP.c.partnumber,
        SEEN.c.is_ignored == true(),
        SEEN.c.is_pattern == false(),
    )
    clauses: list[ColumnElement[bool]] = [not_(exact)]
    if patterns:
        subject = LP.c.partnumber if dialect == "sqlite" else func.lower(LP.c.partnumber)
        clauses.append(not_(or_(*(subject.like(p, escape=LIKE_ESCAPE) for p in patterns))))
    return and_(*clauses)


def _not_blank(column: Any, dialect: str) -> ColumnElement[bool]:
    """Not NULL, and not only spaces, tabs, carriage returns and line feeds."""
    if dialect == "sqlite":
        return func.trim(column, " \t\r\n") != ""
    spaced = func.replace(func.replace(func.replace(column, "\t", " "), "\n", " "), "\r", " ")
    return func.trim(spaced) != ""
