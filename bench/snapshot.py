"""Benchmark: a partnumber-book snapshot against a bare `INSERT INTO ... SELECT` copy.

Builds a SQLite file with `--rows` lot_partnumbers rows (10% pointing at bundles of 3
components, 1% ignored: most by exact partnumber, some by a glob), then, in the same database
and the same run, times

* the baseline: one bare `INSERT INTO qt_partnumber_book_items ... SELECT ... FROM
  lot_partnumbers` copying every mapping row (no filters, no joins), and
* the snapshot: `BookStore.snapshot` (ignore rules, bundle expansion, blank lots, activation),

and prints both times and their ratio. Target: the snapshot takes at most 2x the bare copy.

    python -m bench.snapshot                 # 1,000,000 rows
    python -m bench.snapshot --rows 20000    # a quick smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from zoneinfo import ZoneInfo

from alembic import command
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy import text

from config.settings import Settings
from schedule.books import BookStore
from schedule.database import alembic_config, create_engine, sync_url
from schedule.store import connect

BASELINE_BOOK_ID = -1
BUNDLES = 1000
PATTERN_PREFIXES = ("IGNPAT-A-", "IGNPAT-B-", "IGNPAT-C-", "IGNPAT-D-", "IGNPAT-E-")


def build(url: str, rows: int) -> None:
    """Migrate and fill the source tables with generated rows (set-based, fast)."""
    cfg = alembic_config(url)
    engine = create_sync_engine(sync_url(url))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
    with engine.begin() as conn:
        conn.execute(
            text(
                "WITH RECURSIVE seq(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM seq WHERE i < :n)"
                " INSERT INTO lot_partnumbers"
                " (vendor, partnumber, lot_name, description, is_primary_pn)"
                " SELECT 'VENDOR-' || (i % 7),"
                # 0.2% of the rows carry a prefix that one of the ignore globs matches
                "  CASE WHEN i % 500 = 3 THEN"
                "   'IGNPAT-' || char(65 + (i / 500) % 5) || '-' || i ELSE 'PN-' || i END,"
                "  CASE WHEN i % 10 = 0 THEN 'BUNDLE-' || (i % :bundles) ELSE 'LOT-' || (i % 5000)"
                "  END,"
                "  'description of partnumber ' || i, i % 3 <> 0"
                " FROM seq"
            ),
            {"n": rows - 1, "bundles": BUNDLES},
        )
        conn.execute(
            text(
                "WITH RECURSIVE seq(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM seq WHERE i < :n)"
                " INSERT INTO qt_lot_bundles (bundle_lot_name)"
                " SELECT 'BUNDLE-' || (i * 10) FROM seq"
            ),
            {"n": BUNDLES // 10 - 1},
        )
        conn.execute(
            text(
                "INSERT INTO qt_lot_bundle_items (bundle_lot_name, lot_name, qty)"
                " SELECT b.bundle_lot_name, 'COMPONENT-' || k.k, k.k"
                " FROM qt_lot_bundles b, (SELECT 1 AS k UNION ALL SELECT 2 UNION ALL SELECT 3) k"
            )
        )
        # 1% ignored: 0.8% by exact partnumber, 0.2% by the globs of PATTERN_PREFIXES.
        conn.execute(
            text(
                "INSERT INTO qt_vendor_partnumber_seen (partnumber, vendor, is_ignored, is_pattern)"
                " SELECT partnumber, vendor, 1, 0 FROM lot_partnumbers"
                " WHERE partnumber LIKE 'PN-%' AND CAST(substr(partnumber, 4) AS INTEGER) % 125 = 7"
            )
        )
        for prefix in PATTERN_PREFIXES:
            conn.execute(
                text(
                    "INSERT INTO qt_vendor_partnumber_seen"
                    " (partnumber, vendor, is_ignored, is_pattern) VALUES (:p, '', 1, 1)"
                ),
                {"p": prefix.lower() + "*"},
            )
        conn.execute(text("ANALYZE"))
    engine.dispose()


async def measure(settings: Settings) -> tuple[float, float, int, int]:
    """(baseline seconds, snapshot seconds, rows copied, items written)."""
    db = create_engine(settings)
    try:
        async with db.begin() as conn:  # warm the page cache for both runs alike
            await conn.execute(text("SELECT count(*), max(description) FROM lot_partnumbers"))
        started = time.perf_counter()
        async with db.begin() as conn:
            copied = (
                await conn.execute(
                    text(
                        "INSERT INTO qt_partnumber_book_items"
                        " (book_id, partnumber, vendor, lot_name, qty, is_primary_pn, description)"
                        " SELECT :book, partnumber, vendor, lot_name, 1, is_primary_pn,"
                        " description FROM lot_partnumbers"
                    ),
                    {"book": BASELINE_BOOK_ID},
                )
            ).rowcount
        baseline = time.perf_counter() - started
        async with db.begin() as conn:
            await conn.execute(
                text("DELETE FROM qt_partnumber_book_items WHERE book_id = :book"),
                {"book": BASELINE_BOOK_ID},
            )
        started = time.perf_counter()
        result = await BookStore(connect(db)).snapshot(ZoneInfo("UTC"), None, "bench")
        snapshot = time.perf_counter() - started
    finally:
        await db.dispose()
    return baseline, snapshot, copied, result.book.item_count


def main() -> None:
    """Build the data, time both, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="lot_partnumbers rows")
    parser.add_argument("--dir", type=Path, default=None, help="where to put the SQLite file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = Path(tmp) / "bench.db"
        url = f"sqlite:///{path}"
        started = time.perf_counter()
        build(url, args.rows)
        print(f"built {args.rows:,} mappings in {time.perf_counter() - started:.1f} s ({path})")
        settings = Settings(database_url=url, state_dir=Path(tmp), db_timeout_s=60)
        baseline, snapshot, copied, items = asyncio.run(measure(settings))
    print(f"bare INSERT ... SELECT: {baseline:8.3f} s  ({copied:,} rows)")
    print(f"snapshot:               {snapshot:8.3f} s  ({items:,} items)")
    print(f"ratio snapshot / bare:  {snapshot / baseline:8.2f}x  (target <= 2x)")


if __name__ == "__main__":
    main()
