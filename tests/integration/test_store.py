"""The task store's contract suite: every test here runs unchanged against every backend's
implementation (`make_store` on a connector to a SQLite file and to the suite's MariaDB; the
`database_url` fixture is parametrised over the backends). A new backend joins by adding its
parameter there. Backend internals have their own tests: test_store_sqlite.py,
test_store_mysql.py and test_sqlite_writer.py.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from schedule.exceptions import InvalidState, NotFound
from schedule.records import ExternalReport, Keyset, Outcome, Page, RecordError, TaskFilter
from schedule.store import Connector, TaskStore, make_store
from schedule.task import NewTask, TaskStatus
from tests.helpers import Clock


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def st(dialect_connector: Connector, clock: Clock) -> TaskStore:
    """The implementation under test: the one for this connector's backend."""
    return make_store(dialect_connector, clock)


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


async def test_detail_is_the_task_and_its_attempts_by_id_or_reference(
    st: TaskStore, clock: Clock
) -> None:
    task, _ = await st.create(noop())
    await st.claim("n1", 1, lease_s=10)
    clock.advance(11)
    await st.rescue()
    await st.claim("n2", 1, lease_s=10)
    clock.advance(2)
    await st.finish("n2", [Outcome(task.id, 2, TaskStatus.COMPLETED, "completed")])
    stored = await st.require(task.id)
    attempts = await st.attempts(task.id)
    assert [a.outcome for a in attempts] == ["lost", "completed"]
    assert await st.detail(task.id) == (stored, attempts)
    assert await st.detail(task.reference) == (stored, attempts)
    fresh, _ = await st.create(noop())
    assert await st.detail(fresh.reference) == (await st.require(fresh.id), [])
    with pytest.raises(NotFound):
        await st.detail("NOSUCHTASK0")


async def test_details_asked_together_each_get_their_own_task(st: TaskStore) -> None:
    """Lookups that arrive together share statements (`SqlTaskStore.detail`): each still gets
    its own task and attempts, a missing key its own NotFound, a key asked twice both answers."""
    made = [t for t, _ in await st.create_many([noop(priority=i) for i in range(12)])]
    claimed = await st.claim("n1", 3, lease_s=30)
    done = [Outcome(t.id, 1, TaskStatus.COMPLETED, "completed") for t in claimed]
    assert await st.finish("n1", done) == {t.id for t in claimed}
    keys = [t.id for t in made[:6]] + [t.reference for t in made[6:]] + [made[0].id]
    alone = [await st.detail(k) for k in keys]
    together = await asyncio.gather(
        *(st.detail(k) for k in [*keys, "NOSUCHTASK0"]), return_exceptions=True
    )
    assert together[:-1] == alone
    assert isinstance(together[-1], NotFound)
    assert [task.id for task, _ in alone] == [t.id for t in made] + [made[0].id]
    finished = [task.id for task, attempts in alone if attempts]
    assert sorted(finished) == sorted(t.id for t in claimed)


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
    page, total, exact, *_ = await st.errors(task.id, Page(2, 10))
    assert total == 25 and exact and [e.position for e in page] == list(range(10, 20))
    assert page[0].record == {"row": 10}
    assert (await st.require(task.id)).error_count == 25


async def test_record_errors_walk_by_place_both_ways(st: TaskStore) -> None:
    """A task's record errors, forward from page 1 by `next` and back from the last page by
    `previous`: every error once, in the order recorded; the ends have no place beyond; the
    total is the task's count, capped as the task list's is."""
    task, _ = await st.create(noop())
    await st.claim("n1", 1, lease_s=30)
    assert await st.record_errors(
        "n1", task.id, 1, [RecordError(f"r{i}", None, i) for i in range(11)]
    )
    forward: list[list[int | None]] = []
    found = await st.errors(task.id, Page(1, 4))
    assert found.previous is None
    while True:
        forward.append([e.position for e in found.errors])
        if found.next is None:
            break
        assert found.next == found.errors[-1].id
        found = await st.errors(task.id, Page(1, 4), after=found.next)
        assert found.previous == found.errors[0].id
    assert forward == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10]]
    backward = []
    while found.previous is not None:
        found = await st.errors(task.id, Page(1, 4), before=found.previous)
        assert found.next == found.errors[-1].id
        backward.append([e.position for e in found.errors])
    assert backward == [[4, 5, 6, 7], [0, 1, 2, 3]]
    third = await st.errors(task.id, Page(3, 4))
    assert [e.position for e in third.errors] == [8, 9, 10] and third.next is None
    st.count_cap = 10
    assert (await st.errors(task.id, Page(1, 4)))[1:3] == (10, False)


async def test_list_filters_and_statistics(st: TaskStore, clock: Clock) -> None:
    for i in range(5):
        await st.create(noop(data_source_id="ds1" if i % 2 else None))
        clock.advance(1)
    tasks, total, exact, *_ = await st.list_tasks(TaskFilter(data_source_id="ds1"), Page(1, 10))
    assert total == 2 and exact and all(t.data_source_id == "ds1" for t in tasks)
    everything, *_ = await st.list_tasks(TaskFilter(), Page(1, 3))
    assert [t.created_at for t in everything] == sorted(
        (t.created_at for t in everything), reverse=True
    )
    (claimed,) = await st.claim("n1", 1, lease_s=30)
    clock.advance(2)
    await st.finish("n1", [Outcome(claimed.id, 1, TaskStatus.COMPLETED, "completed")])
    stats = await st.stats.summary(clock.now - timedelta(days=1))
    assert stats.total == 5 and stats.by_status["completed"] == 1
    assert stats.by_status["pending"] == 4 and stats.success_rate == 1.0
    assert stats.avg_duration_s == pytest.approx(2.0, abs=0.01)
    assert stats.queue_length == 4


async def test_the_cursors_walk_the_list_once_in_order_both_ways(
    st: TaskStore, clock: Clock
) -> None:
    """Forward by `next` from page 1 and back by `previous` (`Page.before`) from the last page
    each visit every task once, in the list's order; batches share `created_at` (ties broken by
    id). Page 1 has no previous place, the last page no next one; the backward walk meets the
    forward walk's pages exactly."""
    made = []
    for i in range(23):
        batch = await st.create_many([noop(data_source_id="ds" if i % 3 else None)] * (1 + i % 2))
        made += [t for t, _ in batch]  # tasks of one batch share created_at: `id` breaks ties
        clock.advance(1)
    assert len({t.created_at for t in made}) < len(made)
    newest_first = sorted(made, key=lambda t: (t.created_at, t.id), reverse=True)
    for flt in (TaskFilter(), TaskFilter(data_source_id="ds")):
        expected = [t.id for t in newest_first if flt.data_source_id in (None, t.data_source_id)]
        forward: list[list[str]] = []
        page = Page(1, 4)
        while True:
            found = await st.list_tasks(flt, page)
            assert found.total == len(expected) and found.exact
            assert (found.previous is None) == (not forward)  # page 1 alone has none
            forward.append([t.id for t in found.tasks])
            if found.next is None:
                break
            assert len(found.tasks) == 4
            assert (found.next.created_at, found.next.id) == (
                found.tasks[-1].created_at,
                found.tasks[-1].id,
            )
            page = Page(1, 4, after=found.next)
        assert [i for ids in forward for i in ids] == expected
        assert len(forward[-1]) == (len(expected) % 4 or 4)
        backward: list[list[str]] = []
        while found.previous is not None:
            assert (found.previous.created_at, found.previous.id) == (
                found.tasks[0].created_at,
                found.tasks[0].id,
            )
            found = await st.list_tasks(flt, Page(1, 4, before=found.previous))
            assert found.total == len(expected) and found.exact
            assert found.next is not None  # the page we came from follows
            backward.append([t.id for t in found.tasks])
        assert backward == forward[-2::-1]  # the same pages, newest last
        by_number = await st.list_tasks(flt, Page(3, 4))
        assert [t.id for t in by_number.tasks] == expected[8:12]
        assert by_number.previous is not None and by_number.previous.id == expected[8]
        assert by_number.next is not None and by_number.next.id == expected[11]


async def test_before_the_newest_task_and_past_the_ends(st: TaskStore, clock: Clock) -> None:
    """`before` the newest task is an empty page with neither place; a page by number past the
    end has neither place; `before` a place with fewer newer tasks than the page's size gives
    those tasks, newest first, with no previous place and the next one at its last task."""
    made = []
    for _ in range(5):
        made.append((await st.create(noop()))[0])
        clock.advance(1)
    newest, *_, oldest = sorted(made, key=lambda t: (t.created_at, t.id), reverse=True)
    top = await st.list_tasks(TaskFilter(), Page(1, 2, before=Keyset(newest.created_at, newest.id)))
    assert top.tasks == [] and top.previous is None and top.next is None
    past = await st.list_tasks(TaskFilter(), Page(9, 2))
    assert past.tasks == [] and past.previous is None and past.next is None
    near = await st.list_tasks(
        TaskFilter(), Page(1, 9, before=Keyset(oldest.created_at, oldest.id))
    )
    assert [t.id for t in near.tasks] == [t.id for t in reversed(made[1:])]
    assert near.previous is None and near.next == Keyset(made[1].created_at, made[1].id)


async def test_the_total_is_exact_up_to_the_cap(st: TaskStore) -> None:
    await st.create_many([noop() for _ in range(5)])
    st.count_cap = 5
    assert (await st.list_tasks(TaskFilter(), Page(1, 2)))[1:3] == (5, True)
    st.count_cap = 4
    assert (await st.list_tasks(TaskFilter(), Page(1, 2)))[1:3] == (4, False)
    st.count_cap = 2
    assert (await st.list_tasks(TaskFilter(status=TaskStatus.FAILED), Page()))[1:3] == (0, True)


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
    _, total, *_ = await st.list_tasks(TaskFilter(), Page(1, 10))
    assert total == 2


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


async def test_finish_writes_each_outcome_and_only_once(st: TaskStore) -> None:
    """Outcomes that set the same values and ones that differ, in one finish: each task gets
    its own; a second finish of the same attempts writes nothing."""
    pairs = await st.create_many([noop(), noop(), noop(), noop(dedupe_key="d"), noop()])
    claimed = await st.claim("n1", 5, lease_s=30)
    assert len(claimed) == 5
    done = {"ok": True}
    outcomes = [
        Outcome(t.id, t.attempt, TaskStatus.COMPLETED, "completed", result=done)
        for t in claimed[:3]
    ]
    outcomes.append(Outcome(claimed[3].id, 1, TaskStatus.COMPLETED, "completed", result={"n": 1}))
    outcomes.append(Outcome(claimed[4].id, 1, TaskStatus.FAILED, "failed", error="boom"))
    assert await st.finish("n1", outcomes) == {t.id for t, _ in pairs}
    for outcome in outcomes:
        task = await st.require(outcome.task_id)
        assert task.status is outcome.status
        assert task.result == outcome.result and task.error == outcome.error
        assert task.lease_owner is None and task.finished_at is not None
        assert task.dedupe_active is None  # an end frees the key
    assert await st.finish("n1", outcomes) == set()  # nothing owned any more


async def test_a_retry_keeps_the_dedupe_key_held(st: TaskStore, clock: Clock) -> None:
    task, _ = await st.create(noop(dedupe_key="k"))
    assert [t.id for t in await st.claim("n1", 1, lease_s=30)] == [task.id]
    later = clock.now + timedelta(minutes=5)
    retry = Outcome(task.id, 1, TaskStatus.PENDING, "retry", error="flaky", retry_at=later)
    assert await st.finish("n1", [retry]) == {task.id}
    back = await st.require(task.id)
    assert (back.status, back.run_after, back.dedupe_active) == (TaskStatus.PENDING, later, "k")
    assert await st.claim("n1", 1, lease_s=30) == []  # not due before `later`


# ---- the external-worker protocol --------------------------------------------------------


async def test_concurrent_external_claims_never_share(st: TaskStore) -> None:
    new = [NewTask("external", {"service": "s"}, 3, service="s") for _ in range(6)]
    new.append(
        NewTask("external", {"service": "s", "group": "g"}, 3, service="s", service_group="g")
    )
    new.append(NewTask("external", {"service": "other"}, 3, service="other"))
    await st.create_many(new)
    claims = await asyncio.gather(*(st.external.claim(f"w{i}", "s", None, 30) for i in range(10)))
    got = [c.id for c in claims if c is not None]
    assert len(got) == len(set(got)) == 7  # every task of service s once, "other" never
    assert await st.external.claim("w", "other", "g", 30) is None
    assert await st.external.claim("w", "other", None, 30) is not None


async def test_external_claims_take_claim_order_and_groups(st: TaskStore, clock: Clock) -> None:
    low, _ = await st.create(NewTask("external", {}, 3, priority=-1, service="s"))
    grouped, _ = await st.create(NewTask("external", {}, 3, service="s", service_group="g"))
    high, _ = await st.create(NewTask("external", {}, 3, priority=5, service="s"))
    later = clock.now + timedelta(hours=1)
    await st.create(NewTask("external", {}, 3, priority=9, service="s", run_after=later))
    first = await st.external.claim("w", "s", "g", 30)
    assert first is not None and first.id == grouped.id
    assert (first.status, first.attempt, first.lease_owner) == (TaskStatus.RUNNING, 1, "w")
    second = await st.external.claim("w", "s", None, 30)
    third = await st.external.claim("w", "s", None, 30)
    assert [second and second.id, third and third.id] == [high.id, low.id]
    assert await st.external.claim("w", "s", None, 30) is None  # the last one is not due


async def test_external_reports_are_fenced_and_end_the_task(st: TaskStore) -> None:
    task, _ = await st.create(NewTask("external", {"service": "s"}, 2, service="s"))
    with pytest.raises(InvalidState, match="claim it"):
        await st.external.report(task.id, ExternalReport(progress=5), 30)
    plain, _ = await st.create(noop())
    with pytest.raises(NotFound, match="not an external task"):
        await st.external.report(plain.id, ExternalReport(progress=5), 30)
    # A lease that is already over: the worker went silent right after claiming.
    claimed = await st.external.claim("external:s", "s", None, lease_s=-1)
    assert claimed is not None and claimed.id == task.id
    rescued: Any = await st.rescue()  # (the store's `list` method confuses mypy)
    assert [t.id for t in rescued] == [task.id]
    again = await st.external.claim("external:s", "s", None, lease_s=30)
    assert again is not None and again.attempt == 2
    with pytest.raises(InvalidState, match="attempt 2"):
        await st.external.report(task.id, ExternalReport(progress=5, attempt=1), 30)
    current, outcome = await st.external.report(
        task.id, ExternalReport(progress=40, temp={"page": 3}, has_temp=True), 30
    )
    assert outcome is None and (current.progress, current.temp) == (40, {"page": 3})
    current, outcome = await st.external.report(
        task.id, ExternalReport(status="completed", output=1, has_output=True), 30
    )
    assert outcome is not None and outcome.status is TaskStatus.COMPLETED
    assert (current.status, current.result, current.progress) == (
        TaskStatus.COMPLETED,
        {"output": 1},
        100,
    )
    assert [a.outcome for a in await st.attempts(task.id)] == ["lost", "completed"]
    with pytest.raises(InvalidState, match="already completed"):
        await st.external.report(task.id, ExternalReport(progress=5), 30)


# ---- the callback outbox -----------------------------------------------------------------


async def test_callback_deliveries(st: TaskStore, clock: Clock) -> None:
    hook = "http://127.0.0.1/hook"
    plain: Any
    task, _ = await st.create(NewTask("noop", {}, 1, callback_url=hook))
    plain, _ = await st.create(NewTask("noop", {}, 1))
    assert task.callback_status == "pending" and plain.callback_status is None
    assert await st.callbacks.claim(10, 30) == []  # not finished yet
    await st.cancel(task.id)
    await st.cancel(plain.id)

    first: Any = await st.callbacks.claim(10, 30)
    assert [(d.task.id, d.attempt) for d in first] == [(task.id, 1)]
    assert await st.callbacks.claim(10, 30) == []  # held while being sent
    retry_at = clock.now - timedelta(seconds=1)  # already due again
    await st.callbacks.settle(task.id, 1, "receiver answered HTTP 500", retry_at)
    second: Any = await st.callbacks.claim(10, 30)
    assert [(d.task.id, d.attempt) for d in second] == [(task.id, 2)]
    await st.callbacks.settle(task.id, 1, None, None)  # a stale attempt changes nothing
    assert (await st.require(task.id)).callback_status == "pending"
    await st.callbacks.settle(task.id, 2, None, None)
    done = await st.require(task.id)
    assert (done.callback_status, done.callback_attempts, done.callback_error) == (
        "delivered",
        2,
        None,
    )
    assert await st.callbacks.claim(10, 0) == []


async def test_a_callback_that_fails_for_good(st: TaskStore) -> None:
    task, _ = await st.create(NewTask("noop", {}, 1, callback_url="http://127.0.0.1/hook"))
    await st.cancel(task.id)
    (delivery,) = await st.callbacks.claim(10, 30)
    await st.callbacks.settle(task.id, delivery.attempt, "refused: host not allowed", None)
    failed = await st.require(task.id)
    assert (failed.callback_status, failed.callback_error) == (
        "failed",
        "refused: host not allowed",
    )
    assert await st.callbacks.claim(10, 30) == []


# ---- statistics --------------------------------------------------------------------------


async def finish_at(st: TaskStore, clock: Clock, at: datetime, status: TaskStatus) -> None:
    """Create, claim and end one task at the clock time `at`."""
    clock.now = at
    await st.create(NewTask(task_type="noop", parameters={}, max_attempts=1))
    (task,) = await st.claim("n1", 1, lease_s=60)
    outcome = status.value if status is not TaskStatus.PENDING else "retry"
    assert await st.finish("n1", [Outcome(task.id, task.attempt, status, outcome)]) == {task.id}


async def test_throughput_counts_per_hour_by_final_status(st: TaskStore, clock: Clock) -> None:
    base = datetime(2026, 3, 1, 6, 0, tzinfo=UTC)
    await finish_at(st, clock, base + timedelta(minutes=1), TaskStatus.COMPLETED)
    await finish_at(st, clock, base + timedelta(minutes=59, seconds=59), TaskStatus.COMPLETED)
    await finish_at(st, clock, base + timedelta(minutes=30), TaskStatus.FAILED)
    await finish_at(st, clock, base + timedelta(hours=2, minutes=5), TaskStatus.CANCELLED)
    await finish_at(st, clock, base + timedelta(hours=2, minutes=6), TaskStatus.PENDING)  # retry
    await finish_at(st, clock, base - timedelta(minutes=1), TaskStatus.COMPLETED)  # before
    await finish_at(st, clock, base + timedelta(hours=4), TaskStatus.COMPLETED)  # after

    hours = await st.stats.throughput(base + timedelta(minutes=20), 4)  # truncated to 06:00

    assert [h.hour for h in hours] == [base + timedelta(hours=i) for i in range(4)]
    assert [h.by_status for h in hours] == [
        {"completed": 2, "failed": 1, "cancelled": 0},
        {"completed": 0, "failed": 0, "cancelled": 0},
        {"completed": 0, "failed": 0, "cancelled": 1},
        {"completed": 0, "failed": 0, "cancelled": 0},
    ]
    assert await st.stats.queue_length() == 1  # the retried one


async def _table_summary(st: TaskStore, since: datetime) -> dict[str, Any]:
    """What the statistics must say, counted from the task table itself."""
    tasks = (await st.list_tasks(TaskFilter(), Page(1, 500))).tasks
    hour = since.replace(minute=0, second=0, microsecond=0)
    counted = [
        t
        for t in tasks
        if not t.status.finished or (t.finished_at is not None and t.finished_at >= hour)
    ]
    by_status = {s.value: sum(t.status is s for t in counted) for s in TaskStatus}
    by_type: dict[str, int] = {}
    for t in counted:
        by_type[t.task_type] = by_type.get(t.task_type, 0) + 1
    runs = [
        (t.finished_at - t.started_at).total_seconds()
        for t in counted
        if t.status is TaskStatus.COMPLETED and t.started_at and t.finished_at
    ]
    return {
        "total": len(counted),
        "by_status": by_status,
        "by_type": by_type,
        "avg_duration_s": round(sum(runs) / len(runs), 3) if runs else None,
    }


async def test_statistics_from_rollups_are_exact_and_outlive_retention(
    st: TaskStore, clock: Clock
) -> None:
    """Every way a task ends (finish, a retry that does not, cancel, rescue, an external
    report) lands in the rollups as the table says; deleting the tasks leaves the counts."""
    base = datetime(2026, 3, 1, 6, 0, tzinfo=UTC)
    clock.now = base
    for kind in ("noop", "noop", "records_import", "noop", "records_import"):
        await st.create(NewTask(task_type=kind, parameters={}, max_attempts=1))
    a, b, c = await st.claim("n1", 3, lease_s=60)
    clock.advance(7)
    await st.finish("n1", [Outcome(a.id, 1, TaskStatus.COMPLETED, "completed")])
    clock.advance(3600)  # the next hour
    await st.finish(
        "n1",
        [
            Outcome(b.id, 1, TaskStatus.COMPLETED, "completed"),
            Outcome(c.id, 1, TaskStatus.FAILED, "failed", error="x"),
        ],
    )
    (d,) = await st.claim("n1", 1, lease_s=60)
    await st.finish("n1", [Outcome(d.id, 1, TaskStatus.PENDING, "retry")])  # not an end
    pending = (await st.list_tasks(TaskFilter(status=TaskStatus.PENDING), Page(1, 9))).tasks
    await st.cancel(pending[0].id)
    (lost,) = await st.claim("n2", 1, lease_s=1)
    clock.advance(2)
    assert [t.id for t in await st.rescue()] == [lost.id]  # attempts used up: failed
    ext, _ = await st.create(NewTask("external", {"service": "s"}, 1, service="s"))
    assert await st.external.claim("external:s", "s", None, lease_s=30) is not None
    clock.advance(5)
    await st.external.report(ext.id, ExternalReport(status="completed"), 30)
    clock.advance(60)

    for since in (base, base + timedelta(minutes=30, hours=1), base + timedelta(hours=5)):
        expected = await _table_summary(st, since)
        stats = await st.stats.summary(since)
        got = {k: getattr(stats, k) for k in expected}
        assert got == expected, since
    before = await st.stats.summary(base)
    hours = await st.stats.throughput(base, 3)
    assert await st.delete_finished_before(clock.now + timedelta(days=1)) == 6
    after = await st.stats.summary(base)
    assert (after.by_status, after.avg_duration_s) == (before.by_status, before.avg_duration_s)
    assert after.by_status["completed"] == 3 and after.by_status["pending"] == 0
    assert await st.stats.throughput(base, 3) == hours
