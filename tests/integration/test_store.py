"""Contract tests of the task store, run on every dialect (SQLite file and MariaDB)."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections import Counter
from contextlib import closing
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Select, func, select
from sqlalchemy.dialects import sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from schedule.exceptions import InvalidState, NotFound
from schedule.models import TaskStatus, status_is, sync_tasks
from schedule.records import NewTask, Outcome, Page, RecordError, TaskFilter
from schedule.store import (
    REFERENCE_ALPHABET,
    TaskStore,
    _sqlite_due_sql,
    _sqlite_finish_dedupe,
    _sqlite_finish_plain,
    _sqlite_owned_sql,
    _sqlite_take_sql,
    make_store,
    new_ids,
    new_reference,
)
from tests.helpers import Clock


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def st(ddb: AsyncEngine, clock: Clock) -> TaskStore:
    return make_store(ddb, clock)


def noop(**kw: object) -> NewTask:
    return NewTask(task_type="noop", parameters={}, max_attempts=3, **kw)  # type: ignore[arg-type]


async def test_claim_order_is_priority_then_run_after_then_created(
    st: TaskStore, clock: Clock
) -> None:
    low, _ = await st.create(noop(priority=-5))
    clock.advance(1)
    high_late, _ = await st.create(noop(priority=10))
    clock.advance(1)
    early = clock.now - timedelta(seconds=30)
    high_early, _ = await st.create(noop(priority=10, run_after=early))
    clock.advance(1)
    mid, _ = await st.create(noop(priority=0))
    future, _ = await st.create(noop(priority=100, run_after=clock.now + timedelta(hours=1)))
    claimed = await st.claim("n1", 10, lease_s=30)
    assert [t.id for t in claimed] == [high_early.id, high_late.id, mid.id, low.id]
    assert future.id not in {t.id for t in claimed}
    assert all(t.status is TaskStatus.RUNNING and t.attempt == 1 for t in claimed)
    assert await st.claim("n1", 10, lease_s=30) == []


async def test_claim_respects_limit_and_types(st: TaskStore) -> None:
    for _ in range(5):
        await st.create(noop())
    await st.create(NewTask(task_type="other", parameters={}, max_attempts=1))
    first = await st.claim("n1", 2, lease_s=30, types=["noop"])
    second = await st.claim("n2", 10, lease_s=30, types=["noop"])
    assert len(first) == 2 and len(second) == 3
    assert {t.id for t in first}.isdisjoint({t.id for t in second})
    assert all(t.task_type == "noop" for t in first + second)
    assert await st.claim("n1", 10, lease_s=30, types=[]) == []


async def test_concurrent_claims_never_share_a_task(st: TaskStore) -> None:
    await st.create_many([noop() for _ in range(60)])
    ids: list[str] = []
    for _ in range(30):
        batches = await asyncio.gather(*(st.claim(f"n{i}", 7, lease_s=30) for i in range(12)))
        ids += [t.id for batch in batches for t in batch]
        if len(ids) >= 60:
            break
    assert len(ids) == len(set(ids)) == 60


async def test_dedupe_while_unfinished_only(st: TaskStore) -> None:
    first, created = await st.create(noop(dedupe_key="k"))
    again, created_again = await st.create(noop(dedupe_key="k"))
    assert created and not created_again and again.id == first.id
    (claimed,) = await st.claim("n1", 1, lease_s=30)
    retry = Outcome(claimed.id, 1, TaskStatus.PENDING, "retry", error="x")
    assert await st.finish("n1", [retry]) == {claimed.id}
    _, created_during_retry = await st.create(noop(dedupe_key="k"))
    assert not created_during_retry
    (claimed,) = await st.claim("n1", 1, lease_s=30)
    await st.finish("n1", [Outcome(claimed.id, 2, TaskStatus.COMPLETED, "completed")])
    fresh, created_after = await st.create(noop(dedupe_key="k"))
    assert created_after and fresh.id != first.id
    pairs = await st.create_many([noop(dedupe_key="b"), noop(dedupe_key="b")])
    assert [c for _, c in pairs] == [True, False] and pairs[0][0].id == pairs[1][0].id


async def test_finish_is_fenced_by_owner_and_attempt(st: TaskStore, clock: Clock) -> None:
    task, _ = await st.create(noop())
    (claimed,) = await st.claim("n1", 1, lease_s=10)
    assert await st.finish("n2", [Outcome(task.id, 1, TaskStatus.COMPLETED, "completed")]) == set()
    clock.advance(11)
    rescued = await st.rescue()
    assert [t.id for t in rescued] == [task.id]
    (again,) = await st.claim("n2", 1, lease_s=10)
    assert again.attempt == 2
    late = Outcome(task.id, claimed.attempt, TaskStatus.COMPLETED, "completed")
    assert await st.finish("n1", [late]) == set()
    assert await st.finish("n2", [Outcome(task.id, 2, TaskStatus.COMPLETED, "completed")]) == {
        task.id
    }
    done = await st.require(task.id)
    assert done.status is TaskStatus.COMPLETED and done.progress == 100
    outcomes = [a.outcome for a in await st.attempts(task.id)]
    assert outcomes == ["lost", "completed"]


async def test_heartbeat_extends_and_reports_cancel(st: TaskStore, clock: Clock) -> None:
    task, _ = await st.create(noop())
    await st.claim("n1", 1, lease_s=10)
    clock.advance(8)
    reply = await st.heartbeat("n1", {task.id: 1}, lease_s=10)
    assert reply.held == {task.id} and not reply.cancel_requested
    clock.advance(8)
    assert await st.rescue() == []
    await st.cancel(task.id)
    reply = await st.heartbeat("n1", {task.id: 1}, lease_s=10)
    assert reply.cancel_requested == {task.id}
    assert (await st.heartbeat("n2", {task.id: 1}, lease_s=10)).held == frozenset()


async def test_rescue_fails_when_attempts_are_used_up(st: TaskStore, clock: Clock) -> None:
    task, _ = await st.create(NewTask(task_type="noop", parameters={}, max_attempts=1))
    await st.claim("n1", 1, lease_s=5)
    clock.advance(6)
    await st.rescue()
    failed = await st.require(task.id)
    assert failed.status is TaskStatus.FAILED and "lease expired" in (failed.error or "")
    assert failed.finished_at is not None


async def test_release_does_not_count_the_attempt(st: TaskStore) -> None:
    task, _ = await st.create(noop())
    await st.claim("n1", 1, lease_s=30)
    assert await st.release("n1", {task.id: 1}) == {task.id}
    back = await st.require(task.id)
    assert back.status is TaskStatus.PENDING and back.attempt == 0
    (again,) = await st.claim("n1", 1, lease_s=30)
    assert again.attempt == 1


async def test_cancel_update_delete_transitions(st: TaskStore) -> None:
    pending, _ = await st.create(noop())
    updated = await st.update_pending(pending.reference, {"priority": 7})
    assert updated.priority == 7
    cancelled = await st.cancel(pending.id)
    assert cancelled.status is TaskStatus.CANCELLED
    with pytest.raises(InvalidState, match="cancelled"):
        await st.cancel(pending.id)
    with pytest.raises(InvalidState, match="only pending"):
        await st.update_pending(pending.id, {"priority": 1})
    running, _ = await st.create(noop())
    await st.claim("n1", 1, lease_s=30)
    asked = await st.cancel(running.id)
    assert asked.status is TaskStatus.RUNNING and asked.cancel_requested
    with pytest.raises(InvalidState, match="running"):
        await st.delete(running.id)
    await st.delete(pending.id)
    with pytest.raises(NotFound):
        await st.require(pending.id)


async def test_record_errors_and_paging(st: TaskStore) -> None:
    task, _ = await st.create(noop())
    await st.claim("n1", 1, lease_s=30)
    errors = [RecordError(f"bad {i}", {"row": i}, i) for i in range(25)]
    assert await st.record_errors("n1", task.id, 1, errors)
    assert not await st.record_errors("n2", task.id, 1, errors)
    page, total = await st.errors(task.id, Page(2, 10))
    assert total == 25 and [e.position for e in page] == list(range(10, 20))
    assert page[0].record == {"row": 10}
    assert (await st.require(task.id)).error_count == 25


async def test_list_filters_and_statistics(st: TaskStore, clock: Clock) -> None:
    for i in range(5):
        await st.create(noop(data_source_id="ds1" if i % 2 else None))
        clock.advance(1)
    tasks, total = await st.list_tasks(TaskFilter(data_source_id="ds1"), Page(1, 10))
    assert total == 2 and all(t.data_source_id == "ds1" for t in tasks)
    everything, _ = await st.list_tasks(TaskFilter(), Page(1, 3))
    assert [t.created_at for t in everything] == sorted(
        (t.created_at for t in everything), reverse=True
    )
    (claimed,) = await st.claim("n1", 1, lease_s=30)
    clock.advance(2)
    await st.finish("n1", [Outcome(claimed.id, 1, TaskStatus.COMPLETED, "completed")])
    stats = await st.statistics(clock.now - timedelta(days=1))
    assert stats.total == 5 and stats.by_status["completed"] == 1
    assert stats.by_status["pending"] == 4 and stats.success_rate == 1.0
    assert stats.avg_duration_s == pytest.approx(2.0, abs=0.01)
    assert stats.queue_length == 4


async def test_delete_finished_before_in_batches(st: TaskStore, clock: Clock) -> None:
    ids = []
    for _ in range(5):
        task, _ = await st.create(noop())
        ids.append(task.id)
    claimed = await st.claim("n1", 3, lease_s=30)
    await st.finish("n1", [Outcome(t.id, 1, TaskStatus.FAILED, "failed") for t in claimed])
    clock.advance(3600)
    assert await st.delete_finished_before(clock.now, batch=2) == 2
    assert await st.delete_finished_before(clock.now, batch=2) == 1
    assert await st.delete_finished_before(clock.now, batch=2) == 0
    _, total = await st.list_tasks(TaskFilter(), Page(1, 10))
    assert total == 2


def test_sqlite_queue_queries_use_the_partial_indexes(sqlite_url: str) -> None:
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
    claim = plan(_sqlite_due_sql(1), (now, "noop", 10))
    assert "ix_sync_tasks_claim" in claim, claim
    for by_id in (
        plan(_sqlite_take_sql(2), ("n", now, now, now, "a", "b")),
        plan(_sqlite_owned_sql(2), ("a", "b", "n", "running")),
        plan(_sqlite_finish_plain(1), tuple(range(11))),
        plan(_sqlite_finish_dedupe(1), tuple(range(12))),
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


async def test_created_record_is_the_row_as_stored(st: TaskStore, clock: Clock) -> None:
    """What create returns (built without reading the row back) equals a fresh read, with
    every optional field set and with none."""
    full = NewTask(
        task_type="noop",
        parameters={"steps": 2, "nested": {"a": [1, "x"]}},
        max_attempts=4,
        priority=7,
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
    for new in (full, noop()):
        created, was_created = await st.create(new)
        assert was_created
        assert created == await st.get(created.id)
        assert created == await st.get(created.reference)
        assert len(created.reference) == 11 and created.reference.isalnum()
        assert created.reference == created.reference.upper()


def test_new_ids_are_random_uuid4_and_references() -> None:
    pairs = new_ids(2000)
    ids = [uuid.UUID(i) for i, _ in pairs]
    assert all(u.version == 4 and u.variant == uuid.RFC_4122 for u in ids)
    assert [str(u) for u in ids] == [i for i, _ in pairs]  # canonical lower-case form
    assert len(set(ids)) == 2000 and len({r for _, r in pairs}) == 2000
    assert all(len(r) == 11 and set(r) <= set(REFERENCE_ALPHABET) for _, r in pairs)


def test_references_use_the_whole_alphabet_evenly() -> None:
    draws = "".join(r for _, r in new_ids(2000)) + "".join(new_reference() for _ in range(2000))
    counts = Counter(draws)
    assert set(counts) == set(REFERENCE_ALPHABET)
    expected = len(draws) / len(REFERENCE_ALPHABET)
    # each count is binomial (n=44000, p=1/36): sd ~ 34.5, so 6 sd never fails by chance
    assert all(abs(n - expected) < 6 * 34.5 for n in counts.values()), counts


async def test_finish_and_claim_writes_outcomes_then_takes_the_next_tasks(
    st: TaskStore, clock: Clock
) -> None:
    """The engine's round: fenced outcomes written and the freed slots refilled, in claim
    order; a limit of 0 claims nothing, and a fenced-off outcome is not written."""
    first, _ = await st.create(noop(priority=5))
    (running,) = await st.claim("n1", 1, lease_s=30)
    assert running.id == first.id
    low, _ = await st.create(noop(priority=0))
    high, _ = await st.create(noop(priority=9))
    done = Outcome(first.id, 1, TaskStatus.COMPLETED, "completed", result={"ok": True})
    stale = Outcome(low.id, 1, TaskStatus.COMPLETED, "completed")  # never claimed by n1
    written, claimed = await st.finish_and_claim("n1", [done, stale], 1, 30, ["noop"])
    assert written == {first.id}
    assert [t.id for t in claimed] == [high.id]
    assert claimed[0].status is TaskStatus.RUNNING and claimed[0].lease_owner == "n1"
    stored = await st.require(first.id)
    assert stored.status is TaskStatus.COMPLETED and stored.result == {"ok": True}
    assert [a.outcome for a in await st.attempts(first.id)] == ["completed"]
    written, claimed = await st.finish_and_claim("n1", [], 0, 30, ["noop"])
    assert written == set() and claimed == []
    assert (await st.require(low.id)).status is TaskStatus.PENDING


def test_sqlite_new_task_agrees_with_the_generic_row() -> None:
    """The SQLite enqueue path builds its record without `TaskStore._row_for`; both must give
    a new task the same values (ids aside), or the two dialects would drift apart."""
    from datetime import UTC, datetime

    from schedule.records import TaskRecord
    from schedule.store import _sqlite_new_task, _sqlite_time

    now = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    for new in (
        noop(),
        NewTask(
            task_type="noop",
            parameters={"steps": 1},
            max_attempts=2,
            priority=3,
            data_source_id="s",
            interface_id="i",
            run_after=now,
            timeout_s=1.5,
            dedupe_key="k",
            callback_url="http://127.0.0.1/x",
            retry_of="r",
            service="svc",
            service_group="g",
        ),
    ):
        generic = TaskRecord.from_row(TaskStore._row_for(new, now.replace(tzinfo=None)))
        ours, _ = _sqlite_new_task(new, now, _sqlite_time(now.replace(tzinfo=None)), ("a", "b"))
        left = {k: v for k, v in vars(generic).items() if k not in ("id", "reference")}
        right = {k: v for k, v in vars(ours).items() if k not in ("id", "reference")}
        assert left == right
