"""Internals of the SQLite task store: its plain-SQL hot paths use the partial indexes, and the
rows they write are exactly what SQLAlchemy's types would write (the writer thread itself is
tested in test_sqlite_writer.py; the behaviour every backend shares in test_store.py)."""

from __future__ import annotations

import asyncio
import sqlite3
from contextlib import closing
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Select, func, insert, select
from sqlalchemy.dialects import sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from schedule.clock import naive
from schedule.columns import Kind
from schedule.models import status_is, sync_tasks
from schedule.records import Outcome
from schedule.store import Connector, make_store
from schedule.store.sqlite import (
    due_sql,
    finish_dedupe_sql,
    finish_plain_sql,
    owned_sql,
    take_sql,
)
from schedule.task import NEW_FIELDS, TASK_FIELDS, NewTask, TaskRecord, TaskStatus
from tests.helpers import Clock


def test_queue_queries_use_the_partial_indexes(sqlite_url: str) -> None:
    """Claims, rescues and queue counts read the partial index of their status, never the
    whole table (migration 0006; a bound `status = ?` would silently scan every row)."""

    def plan(sql: str, params: tuple[object, ...] = ()) -> str:
        with closing(sqlite3.connect(sqlite_url.removeprefix("sqlite:///"))) as conn:
            rows = conn.execute("EXPLAIN QUERY PLAN " + sql, params).fetchall()
        return " | ".join(r[3] for r in rows)

    def compiled(query: Select[Any]) -> str:
        return str(query.compile(dialect=sqlite.dialect(), compile_kwargs={"literal_binds": True}))

    # the status is in the SQL text itself, not a bound parameter
    assert "'pending'" in str(status_is(TaskStatus.PENDING).compile(dialect=sqlite.dialect()))
    now = "2026-01-01 00:00:00.000000"
    claim = plan(due_sql(1), (now, "noop", 10))
    assert "ix_sync_tasks_claim" in claim, claim
    for by_id in (
        plan(take_sql(2), ("n", now, now, now, "a", "b")),
        plan(owned_sql(2), ("a", "b", "n", "running")),
        plan(finish_plain_sql(1), tuple(range(11))),
        plan(finish_dedupe_sql(1), tuple(range(12))),
    ):
        assert "sqlite_autoindex_sync_tasks_1" in by_id, by_id  # the primary key
    pending = compiled(select(func.count()).where(status_is(TaskStatus.PENDING)))
    assert "ix_sync_tasks_claim" in plan(pending)
    expired = compiled(
        select(sync_tasks.c.id).where(
            status_is(TaskStatus.RUNNING), sync_tasks.c.lease_expires_at < now
        )
    )
    assert "ix_sync_tasks_lease" in plan(expired)
    external = compiled(
        select(sync_tasks.c.id).where(sync_tasks.c.service == "svc", status_is(TaskStatus.PENDING))
    )
    assert "ix_sync_tasks_service_claim" in plan(external)
    for text_ in (claim, plan(pending), plan(expired), plan(external), by_id):
        assert "SCAN sync_tasks" not in text_, text_


def test_the_claim_walks_its_index_whatever_the_statistics_say(sqlite_url: str) -> None:
    """After an `ANALYZE` of a queue whose pending tasks share priority and due time (a burst,
    or a bench's build), the planner skipped through the claim index by run_after and sorted
    every due pending task on each claim (2.8 ms instead of 0.03 ms with 20,000 pending). The
    claim names its index."""
    path = sqlite_url.removeprefix("sqlite:///")
    with closing(sqlite3.connect(path)) as conn:
        due = "2026-01-01 00:00:00.000000"
        conn.executemany(
            "INSERT INTO sync_tasks (id, reference, task_type, status, parameters, message, "
            "max_attempts, run_after, created_at, updated_at) "
            "VALUES (?, ?, 'noop', ?, '{}', '', 3, ?, ?, ?)",
            [
                (f"t{i:07d}", f"R{i:09d}", "pending" if i % 10 else "completed", due, due, due)
                for i in range(5000)
            ],
        )
        conn.commit()
        conn.execute("ANALYZE")
        conn.commit()
    with closing(sqlite3.connect(path)) as conn:
        for types in (None, 1):
            rows = conn.execute(
                "EXPLAIN QUERY PLAN " + due_sql(types), (due, *["noop"][: types or 0], 10)
            )
            plan = " | ".join(r[3] for r in rows)
            assert "ix_sync_tasks_claim (status=?)" in plan, plan
            assert "TEMP B-TREE" not in plan, plan


def test_a_new_task_names_only_the_columns_its_defaults_do_not_fill() -> None:
    """The INSERT of a new task (from the field definition) leaves out the columns whose first
    value is their default, and writes JSON columns always (as SQLAlchemy writes None)."""
    names = [f.name for f in NEW_FIELDS]
    left_out = [f.name for f in TASK_FIELDS if f not in NEW_FIELDS]
    assert {"progress", "attempt", "cancel_requested", "lease_owner", "finished_at"} <= set(
        left_out
    )
    assert {"id", "reference", "status", "message", "run_after", "dedupe_active"} <= set(names)
    assert {"parameters", "result", "temp"} <= set(names)  # JSON: `null` text, like SQLAlchemy


async def test_new_rows_are_stored_as_sqlalchemy_writes_them(
    connector: Connector, db: AsyncEngine
) -> None:
    """A task created by the plain-SQL path and the same record inserted through SQLAlchemy's
    own types (under another id) are stored with the same text, column by column."""
    clock = Clock(datetime(2026, 11, 23, 12, 0, 0, 123456, tzinfo=UTC))
    store = make_store(connector, clock)
    full = NewTask(
        task_type="noop",
        parameters={"steps": 2, "nested": {"a": [1, "x", None]}, "f": 1.5},
        max_attempts=4,
        priority=-7,
        data_source_id="src",
        interface_id="if",
        run_after=clock.now + timedelta(seconds=90),
        timeout_s=12.5,
        dedupe_key="same-thing",
        callback_url="http://127.0.0.1:9/hook",
        retry_of="00000000-0000-4000-8000-000000000000",
        service="svc",
        service_group="grp",
    )
    for new in (full, NewTask("noop", {}, 3)):
        record, created = await store.create(new)
        assert created
        twin = {
            f.name: naive(v) if f.kind is Kind.TIME and v is not None else v
            for f, v in zip(TASK_FIELDS, record.__dict__.values(), strict=True)
        }
        twin.update(id="twin", reference="TWIN0000000", dedupe_key=None, dedupe_active=None)
        async with db.begin() as conn:
            await conn.execute(insert(sync_tasks).values(twin))
        ours, theirs = await _raw_row(db, record.id), await _raw_row(db, "twin")
        names = [f.name for f in TASK_FIELDS]
        differ = {name for name, a, b in zip(names, ours, theirs, strict=True) if a != b}
        assert differ <= {"id", "reference", "dedupe_key", "dedupe_active"}, differ
        async with db.begin() as conn:
            await conn.execute(sync_tasks.delete().where(sync_tasks.c.id == "twin"))
        assert record == await store.get(record.id)
        assert isinstance(record, TaskRecord)


async def test_a_detail_reads_what_sqlalchemy_reads(connector: Connector) -> None:
    """`detail`'s one JSON text (`details_sql`) decodes to the record SQLAlchemy's types read:
    nested and float parameters, a result with an integer beyond 64 bits, quotes and
    non-ASCII text, and the attempts in the order recorded."""
    clock = Clock(datetime(2026, 11, 23, 12, 0, 0, 123456, tzinfo=UTC))
    store = make_store(connector, clock)
    params = {"steps": 2, "nested": {"a": [1, "x", None]}, "f": 1.5, "s": 'q"uo\\te ü'}
    task, _ = await store.create(NewTask("noop", params, 3, dedupe_key="k", timeout_s=2.5))
    for attempt in (1, 2):
        await store.claim(f"n{attempt}", 1, lease_s=10)
        clock.advance(3)
        status = TaskStatus.PENDING if attempt == 1 else TaskStatus.COMPLETED
        result = {"big": 2**70, "f": 0.1, "text": '\u00e9\n"x"'} if attempt == 2 else None
        error = 'bad "thing"\nline two' if attempt == 1 else None
        name = "failed" if error else "completed"
        await store.finish(f"n{attempt}", [Outcome(task.id, attempt, status, name, result, error)])
        clock.advance(1)
    task_read, attempts = await store.detail(task.reference)
    assert task_read == await store.get(task.id)
    assert task_read.result == {"big": 2**70, "f": 0.1, "text": '\u00e9\n"x"'}
    assert attempts == await store.attempts(task.id)
    assert [(a.attempt, a.node_id, a.outcome) for a in attempts] == [
        (1, "n1", "failed"),
        (2, "n2", "completed"),
    ]


async def test_details_asked_together_share_one_read(
    connector: Connector, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = make_store(connector, Clock())
    made = [t for t, _ in await store.create_many([NewTask("noop", {}, 3) for _ in range(40)])]
    reads: list[object] = []
    read_plain = connector.read_plain  # type: ignore[attr-defined]

    async def counted(work: Any) -> Any:
        reads.append(work)
        return await read_plain(work)

    monkeypatch.setattr(connector, "read_plain", counted)
    found = await asyncio.gather(*(store.detail(t.reference) for t in made))
    assert [task.id for task, _ in found] == [t.id for t in made]
    assert 1 <= len(reads) <= 2  # the first alone, then the rest together


async def _raw_row(db: AsyncEngine, task_id: str) -> tuple[Any, ...]:
    """The stored row as SQLite holds it (text, not SQLAlchemy's conversions)."""
    columns = ", ".join(f"quote({f.name})" for f in TASK_FIELDS)
    async with db.connect() as conn:
        found = await conn.exec_driver_sql(
            f"SELECT {columns} FROM sync_tasks WHERE id = ?", (task_id,)
        )
        return tuple(found.one())
