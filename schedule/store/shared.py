"""What every SQL backend of the task store shares: `SqlTaskStore`.

Reads, the transitions people ask for, and the engine's writes that happen once per lease
period or on shutdown (heartbeat, progress, record errors, release, unclaim, rescue) are the
same SQLAlchemy Core statements on every backend; where row locks differ the connector says
how (`Connector.lock`). A backend subclasses `SqlTaskStore` and implements the queue's hot
paths, which run once per task: `insert_tasks` (one try of `create_many`), `claim`, `finish`
and `finish_and_claim`; and the API's hottest read, `_fetch_details` (`detail`, `GET` of one
task, for every lookup that arrives together).
"""

from __future__ import annotations

import string
from abc import abstractmethod
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar

from sqlalchemy import (
    Boolean,
    ColumnElement,
    Select,
    Text,
    and_,
    bindparam,
    cast,
    delete,
    func,
    insert,
    literal,
    literal_column,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.visitors import InternalTraversal

from schedule import jsontext
from schedule.clock import Clock, naive, utc, utcnow
from schedule.exceptions import InvalidState, NotFound
from schedule.models import status_is
from schedule.records import (
    COUNT_CAP,
    AttemptRecord,
    ErrorPage,
    HeartbeatReply,
    Keyset,
    Page,
    ProgressUpdate,
    RecordError,
    StoredRecordError,
    TaskFilter,
    TaskPage,
)
from schedule.store import rollups
from schedule.store.callbacks import CallbackOutbox
from schedule.store.coalesce import Coalescer
from schedule.store.connector import Connector
from schedule.store.external import ExternalWorkers
from schedule.store.queries import FINISHED_VALUES, A, E, T, read_task, record_attempt
from schedule.store.statistics import TaskStatistics
from schedule.store.tasks import TaskStore
from schedule.task import NewTask, TaskRecord, TaskStatus

C = TypeVar("C", bound=Connector)
P = TypeVar("P")
#: At most this many `GET`s of one task share a statement (`Coalescer`).
DETAIL_BATCH = 100
Detail = tuple[TaskRecord, list[AttemptRecord]]


class SqlTaskStore(TaskStore, Generic[C]):
    """The task store on a SQL database reached through connector `db`; a backend adds the
    hot paths (`insert_tasks`, `claim`, `finish`, `finish_and_claim`, `_fetch_details`)."""

    db: C
    #: The task list's count stops here (`COUNT_CAP`); a test may lower it on its store.
    count_cap: int = COUNT_CAP

    def __init__(self, db: C, clock: Clock = utcnow) -> None:
        self.db = db
        self.clock = clock
        self.external = ExternalWorkers(db, clock)
        self.callbacks = CallbackOutbox(db, clock)
        self.stats = TaskStatistics(db)
        self._details: Coalescer[str, Detail] = Coalescer(self._fetch_details, DETAIL_BATCH)

    def _now(self) -> datetime:
        """Now as the database stores it (naive UTC)."""
        return naive(self.clock())

    # ---- creation -------------------------------------------------------------------------

    async def create(self, new: NewTask) -> tuple[TaskRecord, bool]:
        (pair,) = await self.create_many([new])
        return pair

    async def create_many(self, items: Sequence[NewTask]) -> list[tuple[TaskRecord, bool]]:
        for _ in range(5):
            try:
                return await self.insert_tasks(items)
            except IntegrityError:
                continue  # a concurrent insert took a dedupe key (or an id): look again
        raise InvalidState("could not create the tasks: concurrent dedupe conflicts")

    @abstractmethod
    async def insert_tasks(self, items: Sequence[NewTask]) -> list[tuple[TaskRecord, bool]]:
        """One try of `create_many`, in one transaction: new ids for every item, the items
        whose dedupe key an unfinished task holds answered with that task. An IntegrityError
        (another node took a key meanwhile) makes `create_many` try again."""

    # ---- reads ----------------------------------------------------------------------------

    async def get(self, key: str) -> TaskRecord | None:
        async with self.db.read() as conn:
            return await read_task(conn, key)

    async def require(self, key: str) -> TaskRecord:
        task = await self.get(key)
        if task is None:
            raise NotFound(f"no task {key!r}")
        return task

    async def detail(self, key: str) -> Detail:
        """The task with its attempts; the lookups that arrive together share one statement
        (`Coalescer`): `GET` of one task is the API's most frequent read."""
        found = await self._details.get(key)
        if found is None:
            raise NotFound(f"no task {key!r}")
        return found

    @abstractmethod
    async def _fetch_details(self, keys: Sequence[str]) -> Mapping[str, Detail]:
        """In one statement, the tasks whose id or reference is one of `keys`, each with its
        attempts in the order they were recorded."""

    async def get_many(self, ids: Collection[str]) -> list[TaskRecord]:
        if not ids:
            return []
        async with self.db.read() as conn:
            rows = await conn.execute(select(T).where(T.c.id.in_(list(ids))))
            return [TaskRecord.from_row(r) for r in rows.mappings()]

    async def list_tasks(self, flt: TaskFilter, page: Page) -> TaskPage:
        cap = self.count_cap
        async with self.db.read() as conn:
            total = int((await conn.execute(capped_count(flt, cap))).scalar_one())
            rows = (await conn.execute(list_query(flt, page))).mappings().all()
        tasks, newer, older = _page_ends(
            [TaskRecord.from_row(r) for r in rows[: page.size]],
            len(rows) > page.size,
            backwards=page.before is not None,
            moved=page.after is not None or page.offset > 0,
        )
        return TaskPage(
            tasks,
            min(total, cap),
            total <= cap,
            Keyset(tasks[-1].created_at, tasks[-1].id) if older else None,
            Keyset(tasks[0].created_at, tasks[0].id) if newer else None,
        )

    async def attempts(self, task_id: str) -> list[AttemptRecord]:
        async with self.db.read() as conn:
            rows = await conn.execute(_attempts_query(task_id))
            return [self._attempt(r) for r in rows]

    def _attempt(self, row: Any) -> AttemptRecord:
        return AttemptRecord(
            attempt=row.attempt,
            node_id=row.node_id,
            started_at=utc(row.started_at) or utc(row.finished_at) or self.clock(),
            finished_at=utc(row.finished_at),
            outcome=row.outcome,
            error=row.error,
        )

    async def errors(
        self, task_id: str, page: Page, after: int | None = None, before: int | None = None
    ) -> ErrorPage:
        query = select(E).where(E.c.task_id == task_id)
        if before is not None:  # read newest first from the place: turned round below
            query = query.where(E.c.id < before).order_by(E.c.id.desc())
        elif after is not None:
            query = query.where(E.c.id > after).order_by(E.c.id)
        else:
            query = query.order_by(E.c.id).offset(page.offset)
        async with self.db.read() as conn:
            # the task keeps the count as its errors are written: no count of a big task's rows
            counted = select(T.c.error_count).where(T.c.id == task_id)
            total = int((await conn.execute(counted)).scalar() or 0)
            rows = (await conn.execute(query.limit(page.size + 1))).all()
        items, earlier, later = _page_ends(
            [
                StoredRecordError(
                    id=r.id,
                    attempt=r.attempt,
                    position=r.position,
                    record=r.record,
                    reason=r.reason,
                    created_at=utc(r.created_at) or self.clock(),
                )
                for r in rows[: page.size]
            ],
            len(rows) > page.size,
            backwards=before is not None,
            moved=after is not None or page.offset > 0,
        )
        cap = self.count_cap
        return ErrorPage(
            items,
            min(total, cap),
            total <= cap,
            items[-1].id if later else None,
            items[0].id if earlier else None,
        )

    # ---- transitions requested by people --------------------------------------------------

    async def update_pending(self, key: str, changes: dict[str, Any]) -> TaskRecord:
        task = await self.require(key)
        values = {k: (naive(v) if isinstance(v, datetime) else v) for k, v in changes.items()}
        async with self.db.write() as conn:
            result = await conn.execute(
                update(T)
                .where(T.c.id == task.id, T.c.status == TaskStatus.PENDING.value)
                .values(**values, updated_at=self._now())
            )
        if result.rowcount == 0:
            current = await self.require(task.id)
            raise InvalidState(f"task is {current.status.value}; only pending tasks can be updated")
        return await self.require(task.id)

    async def cancel(self, key: str) -> TaskRecord:
        task = await self.require(key)
        now = self._now()
        async with self.db.write() as conn:
            done = await conn.execute(
                update(T)
                .where(T.c.id == task.id, T.c.status == TaskStatus.PENDING.value)
                .values(
                    status=TaskStatus.CANCELLED.value,
                    cancel_requested=True,
                    dedupe_active=None,
                    finished_at=now,
                    updated_at=now,
                    message="cancelled before it started",
                )
            )
            if done.rowcount:
                ended = [(task.task_type, TaskStatus.CANCELLED.value, None)]
                await rollups.add(conn, rollups.increments(now, ended))
            else:
                await conn.execute(
                    update(T)
                    .where(T.c.id == task.id, T.c.status == TaskStatus.RUNNING.value)
                    .values(cancel_requested=True, updated_at=now)
                )
        current = await self.require(task.id)
        if current.status.finished and done.rowcount == 0:
            raise InvalidState(f"task is already {current.status.value}")
        return current

    async def delete(self, key: str) -> None:
        task = await self.require(key)
        if not task.status.finished:
            raise InvalidState(f"task is {task.status.value}; only finished tasks can be deleted")
        async with self.db.write() as conn:
            await _delete_ids(conn, [task.id])

    async def delete_finished_before(self, cutoff: datetime, batch: int = 500) -> int:
        query = (
            select(T.c.id)
            .where(T.c.status.in_(FINISHED_VALUES), T.c.finished_at < naive(cutoff))
            .order_by(T.c.finished_at)
            .limit(batch)
        )
        async with self.db.write() as conn:
            ids = list((await conn.execute(query)).scalars())
            if ids:
                await _delete_ids(conn, ids)
        return len(ids)

    # ---- the engine's side, once per lease period or on shutdown --------------------------

    async def heartbeat(
        self, node_id: str, attempts: dict[str, int], lease_s: float
    ) -> HeartbeatReply:
        if not attempts:
            return HeartbeatReply(frozenset(), frozenset())
        now = self._now()
        ids = list(attempts)
        owned = and_(
            T.c.id.in_(ids),
            T.c.lease_owner == node_id,
            T.c.status == TaskStatus.RUNNING.value,
        )
        async with self.db.write() as conn:
            await conn.execute(
                update(T).where(owned).values(lease_expires_at=now + timedelta(seconds=lease_s))
            )
            rows = await conn.execute(
                select(T.c.id, T.c.attempt, T.c.cancel_requested).where(owned)
            )
            held = {r.id: bool(r.cancel_requested) for r in rows if attempts[r.id] == r.attempt}
        return HeartbeatReply(
            held=frozenset(held), cancel_requested=frozenset(k for k, v in held.items() if v)
        )

    async def save_progress(self, node_id: str, updates: Sequence[ProgressUpdate]) -> None:
        if not updates:
            return
        stmt = (
            update(T)
            .where(
                T.c.id == bindparam("b_id"),
                T.c.attempt == bindparam("b_attempt"),
                T.c.lease_owner == node_id,
                T.c.status == TaskStatus.RUNNING.value,
            )
            .values(
                progress=bindparam("b_progress"),
                message=bindparam("b_message"),
                processed_rows=bindparam("b_processed"),
                total_rows=bindparam("b_total"),
                updated_at=self._now(),
            )
        )
        async with self.db.write() as conn:
            await conn.execute(stmt, [_progress_params(u) for u in updates])

    async def record_errors(
        self, node_id: str, task_id: str, attempt: int, errors: Sequence[RecordError]
    ) -> bool:
        if not errors:
            return True
        now = self._now()
        async with self.db.write() as conn:
            bumped = await conn.execute(
                update(T)
                .where(
                    T.c.id == task_id,
                    T.c.attempt == attempt,
                    T.c.lease_owner == node_id,
                    T.c.status == TaskStatus.RUNNING.value,
                )
                .values(error_count=T.c.error_count + len(errors))
            )
            if bumped.rowcount == 0:
                return False
            await conn.execute(
                insert(E),
                [
                    {
                        "task_id": task_id,
                        "attempt": attempt,
                        "position": e.position,
                        "record": jsontext.finite(e.record),
                        "reason": e.reason,
                        "created_at": now,
                    }
                    for e in errors
                ],
            )
        return True

    async def release(self, node_id: str, attempts: dict[str, int]) -> set[str]:
        if not attempts:
            return set()
        now = self._now()
        async with self.db.write() as conn:
            owned = await self._owned(conn, node_id, attempts)
            for task_id, (started, _) in owned.items():
                await conn.execute(
                    update(T)
                    .where(T.c.id == task_id)
                    .values(
                        status=TaskStatus.PENDING.value,
                        attempt=T.c.attempt - 1,
                        lease_owner=None,
                        lease_expires_at=None,
                        run_after=now,
                        updated_at=now,
                        message="released by a stopping node",
                    )
                )
                await conn.execute(
                    insert(A).values(
                        task_id=task_id,
                        attempt=attempts[task_id],
                        node_id=node_id,
                        started_at=started or now,
                        finished_at=now,
                        outcome="released",
                        error="node shut down before the task finished",
                    )
                )
        return set(owned)

    async def unclaim(self, node_id: str, attempts: dict[str, int]) -> None:
        if not attempts:
            return
        async with self.db.write() as conn:
            for task_id, attempt in attempts.items():
                await conn.execute(
                    update(T)
                    .where(
                        T.c.id == task_id,
                        T.c.attempt == attempt,
                        T.c.lease_owner == node_id,
                        T.c.status == TaskStatus.RUNNING.value,
                    )
                    .values(
                        status=TaskStatus.PENDING.value,
                        attempt=T.c.attempt - 1,
                        lease_owner=None,
                        lease_expires_at=None,
                    )
                )

    async def rescue(self) -> list[TaskRecord]:
        now = self._now()
        expired = select(T).where(status_is(TaskStatus.RUNNING), T.c.lease_expires_at < now)
        query = self.db.lock(expired.limit(500), skip_locked=True)
        rescued: list[TaskRecord] = []
        async with self.db.write() as conn:
            for row in (await conn.execute(query)).mappings().all():
                task = TaskRecord.from_row(row)
                await _rescue_one(conn, task, now)
                rescued.append(task)
        return rescued

    async def _owned(
        self, conn: AsyncConnection, node_id: str, attempts: dict[str, int]
    ) -> dict[str, tuple[datetime | None, str]]:
        """The fencing read of a finish or release, in its transaction: of the tasks in
        `attempts` (id -> attempt), those this node still runs at that attempt, with their
        start times as stored and their types.

        Row locks that wait rather than skip: a row locked by this node's own heartbeat or by
        a rescuer must be waited for and then judged, never skipped (skipping it would drop a
        result that this node is still entitled to write)."""
        query = self.db.lock(
            select(T.c.id, T.c.attempt, T.c.started_at, T.c.task_type).where(
                T.c.id.in_(list(attempts)),
                T.c.lease_owner == node_id,
                T.c.status == TaskStatus.RUNNING.value,
            ),
            skip_locked=False,
        )
        rows = await conn.execute(query)
        return {r.id: (r.started_at, r.task_type) for r in rows if attempts[r.id] == r.attempt}


async def _rescue_one(conn: AsyncConnection, task: TaskRecord, now: datetime) -> None:
    reason = f"lease expired: node {task.lease_owner} stopped heartbeating"
    if task.cancel_requested:
        status = TaskStatus.CANCELLED
    elif task.attempt < task.max_attempts:
        status = TaskStatus.PENDING
    else:
        status = TaskStatus.FAILED
    values: dict[str, Any] = {
        "status": status.value,
        "lease_owner": None,
        "lease_expires_at": None,
        "updated_at": now,
        "error": reason,
    }
    if status.finished:
        values.update(finished_at=now, dedupe_active=None)
    else:
        values.update(run_after=now)
    rescued = await conn.execute(
        update(T)
        .where(T.c.id == task.id, T.c.attempt == task.attempt, T.c.status == "running")
        .values(**values)
    )
    if rescued.rowcount and status.finished:
        started = naive(task.started_at) if task.started_at else None
        await rollups.add(conn, rollups.increments(now, [(task.task_type, status.value, started)]))
    await record_attempt(conn, task, now, "lost", reason)


async def _delete_ids(conn: AsyncConnection, ids: list[str]) -> None:
    await conn.execute(delete(E).where(E.c.task_id.in_(ids)))
    await conn.execute(delete(A).where(A.c.task_id.in_(ids)))
    await conn.execute(delete(T).where(T.c.id.in_(ids), T.c.status.in_(FINISHED_VALUES)))


def _attempts_query(task_id: str) -> Select[Any]:
    return select(A).where(A.c.task_id == task_id).order_by(A.c.id)


def list_query(flt: TaskFilter, page: Page) -> Select[Any]:
    """The task list's page (one row more than its size: whether another page follows),
    newest first, from `page.after` or at `page.offset`; or, with `page.before`, the page just
    newer than that place, read oldest first from there (the caller turns it round)."""
    query = select(T).where(_filter_clause(flt))
    index = _list_index(flt)
    if index is not None:  # MariaDB may take another index (see `_list_index`)
        for dialect in ("mysql", "mariadb"):
            query = query.with_hint(T, f"USE INDEX ({index})", dialect_name=dialect)
    # `<=`/`>=` bound the index range; the OR only filters the rows at its edge (an OR of the
    # two ranges loses the index order on SQLite)
    if page.before is not None:
        at, key = naive(page.before.created_at), page.before.id
        query = query.where(T.c.created_at >= at, or_(T.c.created_at > at, T.c.id > key))
        return query.order_by(T.c.created_at, T.c.id).limit(page.size + 1)
    if page.after is not None:
        at, key = naive(page.after.created_at), page.after.id
        query = query.where(T.c.created_at <= at, or_(T.c.created_at < at, T.c.id < key))
    else:
        query = query.offset(page.offset)
    return query.order_by(T.c.created_at.desc(), T.c.id.desc()).limit(page.size + 1)


def _page_ends(
    items: list[P], more: bool, *, backwards: bool, moved: bool
) -> tuple[list[P], bool, bool]:
    """A keyset page in list order, and whether the list goes on before it and after it.
    `items` are as the query read them, `more` whether it read a row past them; `backwards`:
    it read from a place towards the list's start (`before`), so `items` are turned round;
    `moved`: it began past the list's start (a cursor or an offset)."""
    if backwards:
        return items[::-1], more, bool(items)
    return items, bool(items) and moved, more


def _list_index(flt: TaskFilter) -> str | None:
    """The index that serves a filter in the list's order (`schedule/models.py`), for MariaDB:
    its optimizer sometimes took another one, walking the whole list in order and skipping what
    did not match (`ix_sync_tasks_created` for `status=pending`, 2 % of a million tasks: 17 ms
    instead of 1 ms). The filters' indexes read only the page's rows at any depth (SQLite's
    planner takes them by itself, given `ListStatus`; tests/integration/test_list_plans.py)."""
    if flt.search or flt.schedule_id is not None:
        return None
    if flt.status is not None:
        if flt.data_source_id is not None:
            return "ix_sync_tasks_status_source_created"
        if flt.task_type is not None:
            return "ix_sync_tasks_status_type_created"
        return "ix_sync_tasks_status_created"
    if flt.data_source_id is not None:
        return "ix_sync_tasks_source_created"
    if flt.task_type is not None:
        return "ix_sync_tasks_type_created"
    return "ix_sync_tasks_created"


def capped_count(flt: TaskFilter, cap: int) -> Select[Any]:
    """How many tasks match `flt`, counting no further than `cap` + 1."""
    matching: Select[Any] = (
        select(literal_column("1")).select_from(T).where(_filter_clause(flt)).limit(cap + 1)
    )
    return select(func.count()).select_from(matching.subquery())


def _filter_clause(flt: TaskFilter) -> ColumnElement[bool]:
    clauses: list[ColumnElement[bool]] = []
    if flt.status is not None:
        clauses.append(ListStatus(flt.status.value))
    if flt.task_type is not None:
        clauses.append(T.c.task_type == flt.task_type)
    if flt.data_source_id is not None:
        clauses.append(T.c.data_source_id == flt.data_source_id)
    if flt.schedule_id is not None:
        clauses.append(T.c.schedule_id == flt.schedule_id)
    if flt.search:
        clauses.append(search_clause(flt.search))
    return and_(True, *clauses)


class ListStatus(ColumnElement[bool]):
    """`status = value` for the task list. On SQLite the value is cast to text: the planner
    then cannot prove that the list's rows are those of the partial claim index (`WHERE status
    = 'pending'`), which it preferred for `status=pending` and then sorted every pending task
    (3 s at a million tasks, 20,000 of them pending); it takes the list's status index, in the
    list's order. MariaDB is told which index (`_list_index`)."""

    type = Boolean()
    inherit_cache = True
    _is_implicitly_boolean = True
    _traverse_internals = [("value", InternalTraversal.dp_string)]  # noqa: RUF012 (as SQLAlchemy declares it)

    def __init__(self, value: str) -> None:
        self.value = value


@compiles(ListStatus)
def _status_is(element: ListStatus, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(T.c.status == element.value, **kw)


@compiles(ListStatus, "sqlite")
def _status_is_sqlite(element: ListStatus, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(T.c.status == cast(literal(element.value), Text()), **kw)


def search_clause(text: str) -> ColumnElement[bool]:
    """Tasks whose reference or id starts with `text`, or whose dedupe key does (ASCII case
    ignored). `%` and `_` in `text` are matched as themselves. Each dialect reads it through
    indexes (`TaskSearch`)."""
    return TaskSearch(text)


class TaskSearch(ColumnElement[bool]):
    """The task list's search, compiled for each dialect so that each of its three prefixes
    reads an index (the reference's, the id's, `ix_sync_tasks_dedupe_*`):

    * MariaDB/MySQL: `LIKE 'text%'` on each column; the collation ignores case and a prefix
      LIKE is an index range.
    * SQLite: its LIKE ignores ASCII case but reads no index, so each prefix is a range: the
      reference in upper case and the id in lower case (as they are made), the dedupe key as
      `lower(dedupe_key)`, which its index holds.
    """

    type = Boolean()
    inherit_cache = False  # its text is not a bound parameter SQLAlchemy's cache would see
    _is_implicitly_boolean = True  # a condition as it is (not `... = 1`)

    def __init__(self, text: str) -> None:
        self.text = text


#: Above every character a prefix can be followed by (SQLite compares UTF-8 bytes).
_LAST_CHAR = "\U0010ffff"
_ASCII_UPPER = str.maketrans(string.ascii_lowercase, string.ascii_uppercase)
_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


@compiles(TaskSearch)
def _search_like(element: TaskSearch, compiler: SQLCompiler, **kw: Any) -> str:
    pattern = element.text.replace("!", "!!").replace("%", "!%").replace("_", "!_") + "%"
    clause = or_(
        T.c.reference.like(pattern.translate(_ASCII_UPPER), escape="!"),
        T.c.id.like(pattern.translate(_ASCII_LOWER), escape="!"),
        T.c.dedupe_key.like(pattern, escape="!"),
    )
    return compiler.process(clause.self_group(), **kw)


@compiles(TaskSearch, "sqlite")
def _search_ranges(element: TaskSearch, compiler: SQLCompiler, **kw: Any) -> str:
    def starts(column: ColumnElement[Any], prefix: str) -> ColumnElement[bool]:
        return and_(column >= prefix, column < prefix + _LAST_CHAR)

    lowered = element.text.translate(_ASCII_LOWER)
    clause = or_(
        starts(T.c.reference, element.text.translate(_ASCII_UPPER)),
        starts(T.c.id, lowered),
        and_(T.c.dedupe_key.is_not(None), starts(func.lower(T.c.dedupe_key), lowered)),
    )
    return compiler.process(clause.self_group(), **kw)


def _progress_params(update_: ProgressUpdate) -> dict[str, Any]:
    return {
        "b_id": update_.task_id,
        "b_attempt": update_.attempt,
        "b_progress": update_.progress,
        "b_message": update_.message[:2000],
        "b_processed": update_.processed_rows,
        "b_total": update_.total_rows,
    }
