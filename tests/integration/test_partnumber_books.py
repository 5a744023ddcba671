"""The partnumber-book store on every dialect: snapshot SQL, atomic activation, retention."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Select, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine

from config.settings import Settings
from schedule.books import BookStore
from schedule.database import READONLY, create_engine
from schedule.exceptions import SnapshotError
from schedule.gfs import BookStamp, GfsDecision, KeepPolicy, select_books
from schedule.models import qt_partnumber_book_items as ITEMS
from schedule.models import qt_partnumber_books as BOOKS
from schedule.pnbook_rules import glob_matches, is_blank_lot
from schedule.records import Page
from schedule.store import Connector, connect
from tests.helpers import Clock
from tests.integration.pnbooks import load, mapping, seen

UTC_TZ = ZoneInfo("UTC")
ACTIVE = select(BOOKS.c.id, BOOKS.c.item_count).where(BOOKS.c.is_active.is_(True))


def count_items(book_id: int) -> Select[int]:
    return select(func.count()).where(ITEMS.c.book_id == book_id)


@pytest.fixture
def clock() -> Clock:
    return Clock(datetime(2026, 3, 10, 12, 0, tzinfo=UTC))


@pytest.fixture
def books(dialect_connector: Connector, clock: Clock) -> BookStore:
    return BookStore(dialect_connector, clock)


async def all_items(db: AsyncEngine, book_id: int) -> set[tuple[object, ...]]:
    async with db.connect() as conn:
        rows = await conn.execute(
            select(
                ITEMS.c.partnumber,
                ITEMS.c.vendor,
                ITEMS.c.lot_name,
                ITEMS.c.qty,
                ITEMS.c.is_primary_pn,
                ITEMS.c.description,
            ).where(ITEMS.c.book_id == book_id)
        )
        return {(r[0], r[1], r[2], r[3], bool(r[4]), r[5]) for r in rows}


async def active_versions(db: AsyncEngine) -> list[str]:
    async with db.connect() as conn:
        rows = await conn.execute(select(BOOKS.c.version).where(BOOKS.c.is_active.is_(True)))
        return list(rows.scalars())


async def test_snapshot_applies_every_rule(ddb: AsyncEngine, books: BookStore) -> None:
    await load(
        ddb,
        [
            mapping("PN-A", "LOT-A", vendor="HP", description="disk a", primary=True),
            mapping("PN-B", "BUNDLE-1", description="a bundle", primary=False),
            mapping("PN-IGN", "LOT-X"),
            mapping("ABC-123", "LOT-Y"),
            mapping("abc-", "LOT-Y"),
            mapping("ab-123", "LOT-Y"),
            mapping("X%Y", "LOT-Z"),
            mapping("XAAY", "LOT-Z"),
            mapping("Q_1", "LOT-Q"),
            mapping("QA1", "LOT-Q"),
            mapping("Q_12", "LOT-Q"),
            mapping("PN-BLANK", "   "),
            mapping("PN-EMPTY", ""),
            mapping("PN-NULL", None),
            mapping("PN-TAB", "\t \r\n"),
            mapping("PN-NB", "NOT-A-BUNDLE"),
            mapping("PN-OFF", "LOT-OFF"),
            mapping("PN-EMPTY-BUNDLE", "BUNDLE-EMPTY"),
        ],
        bundles={
            "BUNDLE-1": [("LOT-C1", 2), ("LOT-C2", 1), (" ", 5)],
            "BUNDLE-EMPTY": [],
        },
        loose_bundle_items=[("NOT-A-BUNDLE", "LOT-LOOSE", 4)],
        seen_rows=[
            seen("PN-IGN"),
            seen("abc-*", pattern=True),
            seen("x%y", pattern=True),
            seen("q_?", pattern=True),
            seen("PN-A", ignored=False),
            seen("PN-OFF*", ignored=False, pattern=True),
        ],
    )
    progress: list[tuple[str, int, int]] = []
    result = await books.snapshot(
        UTC_TZ, "task-1", "node", lambda m, n, p: progress.append((m, n, p))
    )
    expected = {
        ("PN-A", "HP", "LOT-A", 1, True, "disk a"),
        ("PN-B", "", "LOT-C1", 2, False, "a bundle"),
        ("PN-B", "", "LOT-C2", 1, False, "a bundle"),
        ("ab-123", "", "LOT-Y", 1, True, None),
        ("XAAY", "", "LOT-Z", 1, True, None),
        ("QA1", "", "LOT-Q", 1, True, None),
        ("Q_12", "", "LOT-Q", 1, True, None),
        ("PN-NB", "", "NOT-A-BUNDLE", 1, True, None),
        ("PN-OFF", "", "LOT-OFF", 1, True, None),
    }
    assert await all_items(ddb, result.book.id) == expected
    assert result.book.item_count == len(expected)
    assert result.ignore_patterns == 3
    assert result.book.version == "PNBOOK-2026-03-10-001"
    assert result.book.task_id == "task-1"
    assert [p for _, _, p in progress] == sorted(p for _, _, p in progress)
    assert progress[-1][1] == len(expected)
    assert await active_versions(ddb) == [result.book.version]


async def test_glob_sql_agrees_with_python_reference(ddb: AsyncEngine, books: BookStore) -> None:
    rng = random.Random(7)
    alphabet = "aB%_\\*?x"
    partnumbers = sorted({"".join(rng.choices(alphabet, k=rng.randint(1, 5))) for _ in range(300)})
    patterns = sorted({"".join(rng.choices(alphabet, k=rng.randint(1, 4))) for _ in range(25)})
    patterns = [p for p in patterns if p not in partnumbers]
    await load(
        ddb,
        [mapping(p, "LOT") for p in partnumbers],
        seen_rows=[seen(p, pattern=True) for p in patterns],
    )
    result = await books.snapshot(UTC_TZ, None, "node")
    kept = {row[0] for row in await all_items(ddb, result.book.id)}
    want = {p for p in partnumbers if not any(glob_matches(g, p) for g in patterns)}
    assert kept == want
    assert 0 < len(want) < len(partnumbers)


async def test_versions_count_up_per_day_in_the_time_zone(
    ddb: AsyncEngine, books: BookStore, clock: Clock
) -> None:
    await load(ddb, [mapping("PN-1", "LOT-1")])
    moscow = ZoneInfo("Europe/Moscow")
    clock.now = datetime(2026, 3, 1, 20, 30, tzinfo=UTC)  # 23:30 in Moscow
    first = await books.snapshot(moscow, None, "node")
    second = await books.snapshot(moscow, None, "node")
    clock.now = datetime(2026, 3, 1, 21, 30, tzinfo=UTC)  # 00:30 next day in Moscow
    third = await books.snapshot(moscow, None, "node")
    fourth = await books.snapshot(UTC_TZ, None, "node")
    assert [b.book.version for b in (first, second, third, fourth)] == [
        "PNBOOK-2026-03-01-001",
        "PNBOOK-2026-03-01-002",
        "PNBOOK-2026-03-02-001",
        "PNBOOK-2026-03-01-003",
    ]
    assert await active_versions(ddb) == ["PNBOOK-2026-03-01-003"]
    listed = await books.list_books()
    assert [b.version for b in listed] == [
        "PNBOOK-2026-03-01-003",
        "PNBOOK-2026-03-02-001",
        "PNBOOK-2026-03-01-002",
        "PNBOOK-2026-03-01-001",
    ]
    assert [b.is_active for b in listed] == [True, False, False, False]


async def test_empty_snapshot_fails_and_writes_nothing(ddb: AsyncEngine, books: BookStore) -> None:
    await load(ddb, [mapping("PN-1", "LOT-1")])
    kept = await books.snapshot(UTC_TZ, None, "node")
    await load(ddb, [mapping("PN-1", "LOT-1"), mapping("PN-2", " ")], seen_rows=[seen("PN-1")])
    with pytest.raises(SnapshotError, match="empty"):
        await books.snapshot(UTC_TZ, None, "node")
    assert [b.version for b in await books.list_books()] == [kept.book.version]
    assert await active_versions(ddb) == [kept.book.version]
    async with ddb.connect() as conn:
        count = (await conn.execute(select(func.count()).select_from(ITEMS))).scalar_one()
    assert count == 1


async def test_missing_source_table_is_named(ddb: AsyncEngine, books: BookStore) -> None:
    async with ddb.begin() as conn:
        await conn.execute(text("DROP TABLE qt_lot_bundle_items"))
    with pytest.raises(SnapshotError, match="qt_lot_bundle_items"):
        await books.snapshot(UTC_TZ, None, "node")
    assert await books.list_books() == []


async def test_reader_never_sees_zero_or_two_active_books(
    ddb: AsyncEngine, books: BookStore
) -> None:
    await load(
        ddb,
        [mapping(f"PN-{i:04d}", "BUNDLE" if i % 10 == 0 else f"LOT-{i}") for i in range(1500)],
        bundles={"BUNDLE": [("C1", 1), ("C2", 3)]},
    )
    first = await books.snapshot(UTC_TZ, None, "node")
    expected_items = first.book.item_count
    done = asyncio.Event()
    seen_states: list[tuple[int, int]] = []

    async def reader() -> None:
        while not done.is_set():
            async with ddb.connect() as conn:
                conn = await conn.execution_options(**READONLY)  # a deferred, snapshot read
                async with conn.begin():
                    active = (await conn.execute(ACTIVE)).all()
                    counts = [
                        (await conn.execute(count_items(book_id))).scalar_one()
                        for book_id, _ in active
                    ]
            seen_states.append((len(active), min(counts, default=-1)))
            await asyncio.sleep(0)

    async def writer() -> None:
        try:
            for _ in range(4):
                await books.snapshot(UTC_TZ, None, "node")
        finally:
            done.set()

    async with asyncio.timeout(60):
        await asyncio.gather(reader(), writer())
    assert len(seen_states) > 3
    assert all(state == (1, expected_items) for state in seen_states), set(seen_states)
    assert len(await active_versions(ddb)) == 1


async def test_items_paging_and_partnumber_filter(ddb: AsyncEngine, books: BookStore) -> None:
    await load(
        ddb,
        [mapping(f"PN-{i}", "LOT") for i in range(5)] + [mapping("PN-B", "B")],
        bundles={"B": [("C1", 1), ("C2", 2)]},
    )
    made = await books.snapshot(UTC_TZ, None, "node")
    book = await books.get_book(made.book.version)
    page1, total = await books.items(book.id, Page(1, 4))
    page2, _ = await books.items(book.id, Page(2, 4))
    assert total == 7 and len(page1) == 4 and len(page2) == 3
    only, count = await books.items(book.id, Page(1, 10), partnumber="PN-B")
    assert count == 2 and {(i.lot_name, i.qty) for i in only} == {("C1", 1), ("C2", 2)}


# ---- retention ----------------------------------------------------------------------------


def gfs(policy: KeepPolicy, now: datetime) -> object:
    def decide(stamps: Sequence[BookStamp]) -> GfsDecision:
        return select_books(stamps, policy, UTC_TZ, now)

    return decide


async def test_retention_keeps_gfs_and_active_and_deletes_items_first(
    ddb: AsyncEngine, books: BookStore, clock: Clock
) -> None:
    await load(ddb, [mapping("PN-1", "LOT-1"), mapping("PN-2", "LOT-2")])
    made = []
    for _day in range(5):
        made.append((await books.snapshot(UTC_TZ, None, "node")).book)
        made.append((await books.snapshot(UTC_TZ, None, "node")).book)
        clock.advance(days=1)
    # Make an old book the active one: retention must keep it whatever the policy says.
    async with ddb.begin() as conn:
        await conn.execute(update(BOOKS).values(is_active=False))
        await conn.execute(update(BOOKS).where(BOOKS.c.id == made[0].id).values(is_active=True))
    policy = KeepPolicy(daily=2, weekly=0, monthly=0, yearly=0)
    result = await books.retain(gfs(policy, clock.now), "node")  # type: ignore[arg-type]
    newest_two_days = [made[9].version, made[7].version]
    assert result.kept == [*newest_two_days, made[0].version]
    assert result.reasons[made[0].version] == ["active"]
    assert len(result.deleted) == 7
    assert sorted(result.deleted) == sorted(b.version for b in made if b.version not in result.kept)
    assert result.deleted_items == 2 * len(result.deleted)
    assert {b.version for b in await books.list_books()} == set(result.kept)
    async with ddb.connect() as conn:
        orphans = (
            await conn.execute(
                select(func.count()).where(ITEMS.c.book_id.not_in(select(BOOKS.c.id)))
            )
        ).scalar_one()
    assert orphans == 0
    again = await books.retain(gfs(policy, clock.now), "node")  # type: ignore[arg-type]
    assert again.deleted == [] and again.kept == result.kept


def test_blank_rule_matches_the_sql_rule() -> None:
    # The SQL drops NULL and strings of spaces/tabs/CR/LF; the Python rule agrees on those.
    for name in (None, "", " ", "\t", "\r\n", " \t "):
        assert is_blank_lot(name)
    assert not is_blank_lot(" x ")


async def test_two_nodes_snapshotting_at_once_get_distinct_versions(
    ddb: AsyncEngine, dialect_settings: Settings, clock: Clock
) -> None:
    await load(ddb, [mapping(f"PN-{i}", "LOT") for i in range(2000)])
    other_engine = await asyncio.to_thread(create_engine, dialect_settings)
    try:
        node_a, node_b = BookStore(connect(ddb), clock), BookStore(connect(other_engine), clock)
        async with asyncio.timeout(60):
            made = await asyncio.gather(
                node_a.snapshot(UTC_TZ, None, "a"), node_b.snapshot(UTC_TZ, None, "b")
            )
    finally:
        await other_engine.dispose()
    assert sorted(m.book.version for m in made) == [
        "PNBOOK-2026-03-10-001",
        "PNBOOK-2026-03-10-002",
    ]
    assert await active_versions(ddb) == ["PNBOOK-2026-03-10-002"]
    assert all(m.book.item_count == 2000 for m in made)
