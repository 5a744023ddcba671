"""The task list's query plans on both dialects: every filter, on page 1, through the cursor
and back through `before` (the same index read the other way) walks an index in the list's
order (no sort of the matching rows, no table scan), and the capped count reads an index only.
The figures at scale are bench/api_reads.py's."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Connection, Select, create_engine, insert, select, text

from schedule.database import sync_url
from schedule.models import status_is, sync_tasks
from schedule.records import Keyset, Page, TaskFilter
from schedule.store.queries import CLAIM_ORDER
from schedule.store.shared import capped_count, list_query
from schedule.task import TaskStatus

STATUSES = ["completed"] * 18 + ["failed", "cancelled", "pending"]
TYPES = ["noop", "records_import", "stock_import", "full_sync"]
#: filter -> the index that serves it
FILTERS: dict[str, tuple[TaskFilter, str]] = {
    "none": (TaskFilter(), "ix_sync_tasks_created"),
    "status": (TaskFilter(status=TaskStatus.FAILED), "ix_sync_tasks_status_created"),
    "pending": (TaskFilter(status=TaskStatus.PENDING), "ix_sync_tasks_status_created"),
    "type": (TaskFilter(task_type="stock_import"), "ix_sync_tasks_type_created"),
    "status+type": (
        TaskFilter(status=TaskStatus.FAILED, task_type="noop"),
        "ix_sync_tasks_status_type_created",
    ),
    "source": (TaskFilter(data_source_id="crm"), "ix_sync_tasks_source_created"),
    "status+source": (
        TaskFilter(status=TaskStatus.FAILED, data_source_id="crm"),
        "ix_sync_tasks_status_source_created",
    ),
}


def _rows(count: int) -> list[dict[str, Any]]:
    rng = random.Random(15)
    start = datetime(2026, 1, 1)
    return [
        {
            "id": f"{i:08d}-0000-0000-0000-000000000000",
            "reference": f"R{i:010d}",
            "task_type": rng.choice(TYPES),
            "status": rng.choice(STATUSES),
            "data_source_id": rng.choice([None, None, "erp", "crm"]),
            "parameters": {},
            "message": "",
            "max_attempts": 3,
            "run_after": start,
            "created_at": start + timedelta(seconds=i),
            "updated_at": start,
        }
        for i in range(count)
    ]


def _plan(conn: Connection, query: Select[Any]) -> list[tuple[str, str]]:
    """(index or access, extra) of each step of the plan."""
    compiled = str(query.compile(conn.engine, compile_kwargs={"literal_binds": True}))
    if conn.dialect.name == "sqlite":
        rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + compiled).all()
        return [(str(r[3]), "") for r in rows]
    steps = conn.exec_driver_sql("EXPLAIN " + compiled).mappings().all()
    return [(f"{r['table']} {r['type']} {r['key']}", str(r["Extra"] or "")) for r in steps]


@pytest.mark.parametrize("name", list(FILTERS))
def test_every_filter_walks_an_index_in_the_list_order(database_url: str, name: str) -> None:
    flt, index = FILTERS[name]
    engine = create_engine(sync_url(database_url))
    try:
        with engine.begin() as conn:
            conn.execute(insert(sync_tasks), _rows(4000))
            conn.execute(
                text("ANALYZE" if conn.dialect.name == "sqlite" else "ANALYZE TABLE sync_tasks")
            )
        after = Keyset(datetime(2026, 1, 1, 0, 30, tzinfo=UTC), "00001800")
        with engine.connect() as conn:
            pages = (Page(1, 20), Page(1, 50, after), Page(1, 50, before=after))
            for query in (list_query(flt, page) for page in pages):
                steps = _plan(conn, query)
                shown = " | ".join(f"{a} {b}" for a, b in steps)
                assert any(index in access for access, _ in steps), shown
                assert not any("TEMP B-TREE" in a or "filesort" in b for a, b in steps), shown
                assert not any(
                    a.startswith("SCAN sync_tasks") and "INDEX" not in a for a, _ in steps
                ), shown
                assert not any(" ALL " in f"{a} " for a, _ in steps), shown
            counting = [s for s in _plan(conn, capped_count(flt, 10_000)) if "derived" not in s[0]]
            shown = " | ".join(f"{a} {b}" for a, b in counting)
            assert counting and all(
                "COVERING INDEX" in a or "Using index" in b
                for a, b in counting
                if "sync_tasks" in a
            ), shown
    finally:
        engine.dispose()


def test_the_claim_keeps_its_index_beside_the_list_indexes(database_url: str) -> None:
    """The list's status indexes must not draw the claim away from the claim index (which walks
    claim order: no sort, and on MariaDB no lock on rows it does not take)."""
    engine = create_engine(sync_url(database_url))
    now = datetime(2026, 1, 1, 1)
    try:
        with engine.begin() as conn:
            conn.execute(insert(sync_tasks), _rows(4000))
            conn.execute(
                text("ANALYZE" if conn.dialect.name == "sqlite" else "ANALYZE TABLE sync_tasks")
            )
        due = select(sync_tasks.c.id).where(
            status_is(TaskStatus.PENDING), sync_tasks.c.run_after <= now
        )
        due = due.where(sync_tasks.c.task_type.in_(TYPES)).order_by(*CLAIM_ORDER).limit(4)
        with engine.connect() as conn:
            steps = _plan(conn, due)
        shown = " | ".join(f"{a} {b}" for a, b in steps)
        assert any("ix_sync_tasks_claim" in access for access, _ in steps), shown
        assert not any("filesort" in extra for _, extra in steps), shown
    finally:
        engine.dispose()


def test_the_search_reads_the_reference_id_and_dedupe_key_indexes(database_url: str) -> None:
    """`q` reads three index ranges, never every task (it did, for want of an index on the
    dedupe key, taking most of a second at a million tasks)."""
    engine = create_engine(sync_url(database_url))
    rows = _rows(4000)
    for i, row in enumerate(rows):
        row["dedupe_key"] = f"key-{i:05d}" if i % 3 else None
    try:
        with engine.begin() as conn:
            conn.execute(insert(sync_tasks), rows)
            conn.execute(
                text("ANALYZE" if conn.dialect.name == "sqlite" else "ANALYZE TABLE sync_tasks")
            )
        with engine.connect() as conn:
            query = list_query(TaskFilter(search="KEY-0012"), Page(1, 20))
            steps = _plan(conn, query)
            shown = " | ".join(f"{a} {b}" for a, b in steps)
            if conn.dialect.name == "sqlite":
                used = {
                    a.split(" USING INDEX ")[-1].split(" ")[0] for a, _ in steps if "SEARCH" in a
                }
                assert used == {
                    "sqlite_autoindex_sync_tasks_1",  # the id
                    "sqlite_autoindex_sync_tasks_2",  # the reference
                    "ix_sync_tasks_dedupe_search",
                }, shown
                assert not any(a.startswith("SCAN sync_tasks") for a, _ in steps), shown
            else:
                # Which usable plan MariaDB takes depends on the table's size: a small one it
                # reads in list order; at a million tasks it merges the three indexes (3 ms,
                # bench/api_reads.py). The dedupe key's index is what makes the merge possible.
                compiled = query.compile(conn.engine, compile_kwargs={"literal_binds": True})
                (plan,) = conn.exec_driver_sql(f"EXPLAIN {compiled}").mappings().all()
                possible = set(str(plan["possible_keys"]).split(","))
                assert possible == {"PRIMARY", "reference", "ix_sync_tasks_dedupe_key"}, shown
            keys = sorted(r.dedupe_key for r in conn.execute(query))
            assert keys == [f"key-{i:05d}" for i in range(120, 130) if i % 3]  # case ignored
    finally:
        engine.dispose()
