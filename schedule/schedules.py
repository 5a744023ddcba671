"""The schedules (`sync_schedules`) and the claim of their fires, shared by every daemon.

A fire is claimed in the database, never in a daemon's memory: `claim_fires` locks the due
schedules (`FOR UPDATE SKIP LOCKED` on MariaDB, so daemons split them; SQLite's write
transaction holds the whole file), inserts the fires' tasks and moves each schedule's
`next_fire_at` on, all in one transaction. A daemon that crashes before the commit leaves the
fire to the next claim; one that committed has enqueued it. The unique index on a task's
`(schedule_id, scheduled_for)` refuses a second task for the same fire whatever happens.

Definitions change through `save` and `delete`; every daemon reads them at its next claim, so a
change made through one daemon holds on all of them within the scheduler's poll. A claim here
reads each schedule's state and its `updated_at`, and the rest of the row only when the
definition it keeps is not that version (`STATE`, `ScheduleStore._claimed`); SQLite's claim of
due fires (`schedule.schedules_sqlite`) reads whole rows on its writer thread.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Callable, Collection, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import String, and_, cast, delete, false, func, insert, or_, select, update
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from schedule.clock import Clock, naive, utcnow
from schedule.columns import Kind
from schedule.definition import Origin, ScheduleRecord
from schedule.exceptions import InvalidState, NotFound
from schedule.firing import FirePlan, overlap_matters
from schedule.ids import new_ids
from schedule.models import status_is, sync_data_sources, sync_schedules, sync_tasks
from schedule.records import Page
from schedule.store import Connector
from schedule.store.sqlite import json_text, time_text
from schedule.task import NEW_FIELDS, TaskRecord, TaskStatus, new_task_values

S = sync_schedules
T = sync_tasks
DS = sync_data_sources
_UNFINISHED = (status_is(TaskStatus.PENDING), status_is(TaskStatus.RUNNING))
_BUSY = select(T.c.id).where(T.c.schedule_id == S.c.id, or_(*_UNFINISHED)).correlate(S).exists()
#: `ScheduleStore.due_state`'s read.
DUE_STATE = select(
    select(func.min(S.c.next_fire_at)).where(S.c.paused == false()).scalar_subquery(),
    select(S.c.id).where(S.c.queued_fire_at.is_not(None), S.c.paused == false(), ~_BUSY).exists(),
)
_SCHEDULE_TIMES = tuple(
    f.name for f in ScheduleRecord.row_fields() if f.spec.type.python_type is datetime
)
#: What the scheduler and the actions change without a new definition: a schedule's state.
#: Every other column (its definition, and `created_at`, which never changes) only changes
#: along with `updated_at` (`save` and `declare` move it on), so a claim reads these alone and
#: takes the definition from `ScheduleStore._known` (see `_claimed`).
STATE = (
    "id",
    "updated_at",
    "paused",
    "pause_note",
    "next_fire_at",
    "last_fire_at",
    "queued_fire_at",
    "last_run_at",
    "last_task_id",
    "last_error",
    "last_error_at",
)
_STATE_FIELDS = tuple(f for name in STATE for f in ScheduleRecord.row_fields() if f.name == name)
#: The claim's columns. Times are read as text (MariaDB's `CAST(... AS CHAR)` and SQLite's
#: stored text are both `YYYY-MM-DD HH:MM:SS.ffffff`) and parsed once per distinct value by
#: `_states`: the MySQL driver turns each `DATETIME` into a `datetime` with a regular
#: expression in Python, most of the cost of reading a claimed row, and the schedules of a
#: claim share their fire times.
_STATE_COLUMNS = tuple(
    cast(S.c[f.name], String).label(f.name) if f.kind is Kind.TIME else S.c[f.name]
    for f in _STATE_FIELDS
)
_STATE_TIMES = tuple(i for i, f in enumerate(_STATE_FIELDS) if f.kind is Kind.TIME)
_STATE_LOADS = tuple(
    (i, f.load) for i, f in enumerate(_STATE_FIELDS) if f.load and f.kind is not Kind.TIME
)
#: Definitions kept by `ScheduleStore._known` (forgotten all at once when full).
DEFINITIONS = 50_000
_MICROSECOND = timedelta(microseconds=1)

Planner = Callable[[ScheduleRecord, Sequence[tuple[str, str]], frozenset[str]], FirePlan | None]
"""Decides what a claimed schedule's fires become (`schedule.firing`), given its unfinished
tasks `(id, status)` and the data sources that exist."""


class ScheduleStore:
    """Reads and writes `sync_schedules`, and enqueues the fires' tasks."""

    #: Claims of due fires one scheduler turn runs at once. On MySQL each is a transaction on
    #: a connection of its own, `SKIP LOCKED` keeping them apart, so one's Python work (the
    #: plan, the rows) overlaps another's SQL; at a minute boundary with ten thousand fires
    #: on three daemons that took the last claim's start from 0.9 to 0.6 s.
    concurrent_claims = 2

    def __init__(self, db: Connector, clock: Clock = utcnow) -> None:
        self.db = db
        self.clock = clock
        # CPU time of claims done off the event loop's thread (SQLite's writer thread).
        self.cpu_s = 0.0
        # The definitions of schedules claimed lately, by id (`_claimed`).
        self._known: dict[str, ScheduleRecord] = {}

    # ---- reads -------------------------------------------------------------------------------

    async def get(self, schedule_id: str) -> ScheduleRecord | None:
        """A schedule, or None."""
        async with self.db.read() as conn:
            row = (await conn.execute(select(S).where(S.c.id == schedule_id))).mappings().first()
        return None if row is None else ScheduleRecord.from_row(row)

    async def require(self, schedule_id: str) -> ScheduleRecord:
        """A schedule, or `NotFound`."""
        row = await self.get(schedule_id)
        if row is None:
            raise NotFound(f"no schedule {schedule_id!r}")
        return row

    async def all(self) -> list[ScheduleRecord]:
        """Every schedule, by id."""
        async with self.db.read() as conn:
            rows = (await conn.execute(select(S).order_by(S.c.id))).mappings().all()
        return [ScheduleRecord.from_row(r) for r in rows]

    async def page(self, page: Page) -> tuple[list[ScheduleRecord], int]:
        """A page of the schedules by id, and how many there are."""
        query = select(S).order_by(S.c.id).offset(page.offset).limit(page.size)
        async with self.db.read() as conn:
            total = int((await conn.execute(select(func.count()).select_from(S))).scalar_one())
            rows = (await conn.execute(query)).mappings().all()
        return [ScheduleRecord.from_row(r) for r in rows], total

    async def due_state(self) -> tuple[datetime | None, bool]:
        """In one read: the earliest fire any schedule waits for (paused ones aside, None when
        there is none), and whether a fire queued behind its schedule's previous task may go
        now (that task, and every other of the schedule, has ended). The scheduler's idle turn
        reads only this."""
        async with self.db.read() as conn:
            due, queued = (await conn.execute(DUE_STATE)).one()
        return (None if due is None else _aware(due)), bool(queued)

    async def source_exists(self, source_id: str) -> bool:
        """Whether a data source of that id exists."""
        async with self.db.read() as conn:
            return bool(await _sources(conn, {source_id}))

    async def runs(self, schedule_id: str, limit: int = 10) -> list[TaskRecord]:
        """The newest tasks of a schedule, newest fire first."""
        async with self.db.read() as conn:
            rows = await conn.execute(
                select(T)
                .where(T.c.schedule_id == schedule_id)
                .order_by(T.c.scheduled_for.desc())
                .limit(limit)
            )
            return [TaskRecord.from_row(r) for r in rows.mappings()]

    async def last_runs(self, ids: Collection[str]) -> dict[str, TaskRecord]:
        """The newest task of each schedule in `ids` that has one."""
        if not ids:
            return {}
        newest = (
            select(T.c.schedule_id, func.max(T.c.scheduled_for).label("fire"))
            .where(T.c.schedule_id.in_(list(ids)))
            .group_by(T.c.schedule_id)
            .subquery()
        )
        q = select(T).join(
            newest,
            and_(T.c.schedule_id == newest.c.schedule_id, T.c.scheduled_for == newest.c.fire),
        )
        async with self.db.read() as conn:
            rows = (await conn.execute(q)).mappings().all()
        return {r["schedule_id"]: TaskRecord.from_row(r) for r in rows}

    async def fired_at(self, schedule_id: str, fires: Sequence[datetime]) -> set[datetime]:
        """Which of `fires` already have a task."""
        if not fires:
            return set()
        async with self.db.read() as conn:
            rows = await conn.execute(
                select(T.c.scheduled_for).where(
                    T.c.schedule_id == schedule_id,
                    T.c.scheduled_for.in_([naive(f) for f in fires]),
                )
            )
            return {_aware(v) for v in rows.scalars()}

    # ---- definitions --------------------------------------------------------------------------

    async def save(self, record: ScheduleRecord, *, create: bool) -> ScheduleRecord:
        """Insert a new schedule (`create`; `InvalidState` when the id is taken) or replace
        the definition of an existing one (`NotFound` when there is none)."""
        values = _stored(record)
        async with self.db.write() as conn:
            if create:
                try:
                    await conn.execute(insert(S).values(**values))
                except IntegrityError:
                    raise InvalidState(
                        f"schedule {record.id!r} already exists", {"id": record.id}
                    ) from None
            else:
                values.pop("created_at")
                query = select(S.c.updated_at).where(S.c.id == record.id)
                current = (await conn.execute(self.db.lock(query, skip_locked=False))).scalar()
                if current is None:
                    raise NotFound(f"no schedule {record.id!r}")
                values["updated_at"] = naive(_after(record.updated_at, _aware(current)))
                await conn.execute(update(S).where(S.c.id == record.id).values(**values))
        return await self.require(record.id)

    async def delete(self, schedule_id: str) -> None:
        """Remove a schedule (its tasks stay, with their `schedule_id`)."""
        async with self.db.write() as conn:
            result = await conn.execute(delete(S).where(S.c.id == schedule_id))
        self._known.pop(schedule_id, None)
        if not result.rowcount:
            raise NotFound(f"no schedule {schedule_id!r}")

    async def declare(self, records: Sequence[ScheduleRecord], origins: Collection[Origin]) -> None:
        """Make the schedules of `origins` (the settings file, the built-ins) exactly
        `records`: new ones inserted, changed definitions replaced (their state kept when the
        trigger is the same), the others of those origins removed. Several daemons starting
        at once converge on the same rows: one that finds a row another inserted meanwhile
        (the lock cannot cover a row that does not exist yet) looks again."""
        for _ in range(4):
            try:
                await self._declare(records, origins)
                return
            except IntegrityError:
                continue
        await self._declare(records, origins)

    async def _declare(
        self, records: Sequence[ScheduleRecord], origins: Collection[Origin]
    ) -> None:
        wanted = {r.id: r for r in records}
        names = [o.value for o in origins]
        async with self.db.write() as conn:
            # Only the rows this touches are locked: fires of the others are claimed meanwhile.
            mine = or_(S.c.origin.in_(names), S.c.origin.is_(None), S.c.id.in_(list(wanted)))
            query = self.db.lock(select(S).where(mine), skip_locked=False)
            rows = (await conn.execute(query)).mappings().all()
            current = {r["id"]: ScheduleRecord.from_row(r) for r in rows}
            # A row of no origin is a periodic job of an older version: a built-in, or gone.
            gone = [
                i
                for i, r in current.items()
                if (r.origin in names or r.origin is None) and i not in wanted
            ]
            if gone:
                await conn.execute(delete(S).where(S.c.id.in_(gone)))
                for schedule_id in gone:
                    self._known.pop(schedule_id, None)
            for record in wanted.values():
                await _declare_one(conn, record, current.get(record.id))

    async def set_paused(
        self, schedule_id: str, paused: bool, note: str | None, next_fire_at: datetime | None
    ) -> ScheduleRecord:
        """Pause (with a note) or resume; a resume moves the next fire on (`next_fire_at`) so
        that the fires of the pause are not caught up."""
        values: dict[str, Any] = {"paused": paused, "pause_note": note}
        if not paused:
            values["next_fire_at"] = None if next_fire_at is None else naive(next_fire_at)
            values["queued_fire_at"] = None
        async with self.db.write() as conn:
            result = await conn.execute(update(S).where(S.c.id == schedule_id).values(**values))
        if not result.rowcount:
            raise NotFound(f"no schedule {schedule_id!r}")
        return await self.require(schedule_id)

    # ---- fires --------------------------------------------------------------------------------

    async def claim_fires(
        self, now: datetime, limit: int, planner: Planner
    ) -> list[tuple[FirePlan, list[TaskRecord]]]:
        """Claim up to `limit` due schedules and enqueue their fires' tasks as `planner`
        says, in one transaction (see the module docstring)."""
        due = (
            select(*_STATE_COLUMNS)
            .where(S.c.paused == false(), S.c.next_fire_at <= naive(now))
            .order_by(S.c.next_fire_at)
            .limit(limit)
        )
        return await self._fire(due, planner)

    async def claim_queued(
        self, limit: int, planner: Planner
    ) -> list[tuple[FirePlan, list[TaskRecord]]]:
        """Enqueue the fires that wait behind their schedule's previous task, where it ended."""
        waiting = (
            select(*_STATE_COLUMNS)
            .where(S.c.queued_fire_at.is_not(None), S.c.paused == false())
            .order_by(S.c.queued_fire_at)
            .limit(limit)
        )
        return await self._fire(waiting, planner)

    async def backfill(
        self, schedule_id: str, planner: Planner
    ) -> tuple[FirePlan, list[TaskRecord]] | None:
        """Enqueue past fires of one schedule as `planner` says (its state left alone)."""
        query = select(*_STATE_COLUMNS).where(S.c.id == schedule_id)
        done = await self._fire(query, planner, wait=True)
        return done[0] if done else None

    async def _fire(
        self, query: Any, planner: Planner, *, wait: bool = False
    ) -> list[tuple[FirePlan, list[TaskRecord]]]:
        """Lock the schedules `query` selects (their `STATE` columns), plan their fires, insert
        the tasks and write the schedules' state, in one transaction."""
        now = self.clock()
        async with self.db.write() as conn:
            rows = (await conn.execute(self.db.lock(query, skip_locked=not wait))).all()
            if not rows:
                return []
            schedules = await self._claimed(conn, rows)
            unfinished = await _unfinished(conn, [s.id for s in schedules if overlap_matters(s)])
            sources = await _sources(conn, {s.data_source_id for s in schedules})
            plans = [p for s in schedules if (p := planner(s, unfinished.get(s.id, ()), sources))]
            done: list[tuple[FirePlan, list[TaskRecord]]] = []
            values: list[tuple[Any, ...]] = []
            for plan in plans:
                items = plan.tasks
                pairs = zip(items, new_ids(len(items)), strict=True)
                made = [new_task_values(item, now, ids) for item, ids in pairs]
                done.append((plan, [TaskRecord.from_values(v) for v in made]))
                values.extend(made)
            await _insert_tasks(conn, values)
            await _advance(conn, plans, now)
        return done

    async def _claimed(self, conn: AsyncConnection, rows: Sequence[Any]) -> list[ScheduleRecord]:
        """The claimed schedules, from the `STATE` columns a claim read: each one's definition
        is the one kept for it when its `updated_at` is the same, else its whole row is read
        (in this transaction, which holds the row) and kept. The rows of ten thousand
        schedules due at once are mostly definitions, read and decoded again every minute;
        their state alone is a third of the columns and none of the JSON."""
        known = self._known
        if len(known) + len(rows) > DEFINITIONS:
            known.clear()
        states = _states(rows)  # id, updated_at, ... (`STATE`)
        fresh = [s[0] for s in states if (k := known.get(s[0])) is None or k.updated_at != s[1]]
        for chunk in _chunks(fresh, 1000):
            read = await conn.execute(select(S).where(S.c.id.in_(chunk)))
            for row in read.mappings():
                known[row["id"]] = ScheduleRecord.from_row(row)
        return [known[s[0]].replaced(STATE, s) for s in states]

    async def record_task(self, schedule_id: str, task_id: str) -> None:
        """Note a task run by hand as the schedule's last run."""
        now = naive(self.clock())
        async with self.db.write() as conn:
            await conn.execute(
                update(S).where(S.c.id == schedule_id).values(last_run_at=now, last_task_id=task_id)
            )


def _aware(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _stored(record: ScheduleRecord) -> dict[str, Any]:
    values = dict(record.__dict__)
    for name in _SCHEDULE_TIMES:
        if values[name] is not None:
            values[name] = naive(values[name])
    return values


async def _declare_one(
    conn: AsyncConnection, record: ScheduleRecord, current: ScheduleRecord | None
) -> None:
    if current is None:
        await conn.execute(insert(S).values(**_stored(record)))
        return
    same_timing = (current.trigger, current.timezone, current.start_at, current.end_at) == (
        record.trigger,
        record.timezone,
        record.start_at,
        record.end_at,
    )
    kept = replace(
        record,
        created_at=current.created_at,
        paused=current.paused,
        pause_note=current.pause_note,
        last_fire_at=current.last_fire_at,
        last_run_at=current.last_run_at,
        last_task_id=current.last_task_id,
        queued_fire_at=current.queued_fire_at,
        last_error=current.last_error,
        last_error_at=current.last_error_at,
        next_fire_at=current.next_fire_at if same_timing else record.next_fire_at,
        updated_at=current.updated_at
        if _definition(current) == _definition(record)
        else _after(record.updated_at, current.updated_at),
    )
    if kept != current:
        values = _stored(kept)
        await conn.execute(update(S).where(S.c.id == record.id).values(**values))


def _definition(record: ScheduleRecord) -> tuple[Any, ...]:
    """What a schedule's `updated_at` stands for: every field but its state and creation."""
    return tuple(v for k, v in record.__dict__.items() if k not in _NOT_DEFINITION)


_NOT_DEFINITION = frozenset({*STATE, "created_at"}) - {"id"}


def _states(rows: Sequence[Sequence[Any]]) -> list[list[Any]]:
    """The `STATE` values of claimed rows (`_STATE_COLUMNS`) as the fields hold them."""
    times: dict[str, datetime] = {}
    out = []
    for row in rows:
        values = list(row)
        for index in _STATE_TIMES:
            text = values[index]
            if text is not None:
                moment = times.get(text)
                if moment is None:
                    moment = times[text] = datetime.fromisoformat(text).replace(tzinfo=UTC)
                values[index] = moment
        for index, load in _STATE_LOADS:
            if values[index] is not None:
                values[index] = load(values[index])
        out.append(values)
    return out


async def _unfinished(conn: AsyncConnection, ids: list[str]) -> dict[str, list[tuple[str, str]]]:
    """Each schedule's pending and running tasks, `(id, status)`."""
    out: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for chunk in _chunks(ids, 1000):
        rows = await conn.execute(
            select(T.c.schedule_id, T.c.id, T.c.status).where(
                T.c.schedule_id.in_(chunk), or_(*_UNFINISHED)
            )
        )
        for schedule_id, task_id, status in rows:
            out[schedule_id].append((task_id, status))
    return out


async def _sources(conn: AsyncConnection, ids: set[str | None]) -> frozenset[str]:
    wanted = [i for i in ids if i]
    if not wanted:
        return frozenset()
    rows = await conn.execute(select(DS.c.id).where(DS.c.id.in_(wanted)))
    return frozenset(rows.scalars())


async def _insert_tasks(conn: AsyncConnection, values: Sequence[tuple[Any, ...]]) -> None:
    """Insert new tasks, given their field values (`new_task_values`), straight through the
    driver: the columns a new task's INSERT sets (`NEW_FIELDS`), less those that are NULL in
    every row (their default is NULL: the rows stored are the same), each value in the form
    SQLAlchemy's types store (`time_text`, `json_text`; a MariaDB `DATETIME` reads that text
    too), each distinct time formatted once (a claim's tasks share their creation and fire
    times). SQLAlchemy's own executemany spent more on its per-row bookkeeping, and the
    driver on formatting every time of every row, than the rest of the claim's INSERT."""
    if not values:
        return
    columns = list(zip(*values, strict=True))
    count = len(values)
    kept = tuple(
        f
        for f in NEW_FIELDS
        if f.kind is Kind.JSON
        or f.spec.server_default is not None
        or columns[f.index].count(None) < count
    )
    sql, order = _insert_sql(conn.dialect, tuple(f.name for f in kept))
    by_name = {f.name: f for f in kept}
    stored: list[Sequence[Any]] = []
    for name in order:
        f = by_name[name]
        column = columns[f.index]
        if f.kind is Kind.TIME:
            stored.append(_stored_times(column))
        elif f.kind is Kind.JSON:
            stored.append(list(map(json_text, column)))
        else:
            stored.append(column)
    await conn.exec_driver_sql(sql, list(zip(*stored, strict=True)))


@functools.lru_cache(maxsize=64)
def _insert_sql(dialect: Dialect, columns: tuple[str, ...]) -> tuple[str, tuple[str, ...]]:
    """The INSERT of `columns` into `sync_tasks` in the driver's SQL, and its parameters'
    order."""
    compiled = insert(T).compile(dialect=dialect, column_keys=list(columns))
    assert compiled.positiontup is not None, "the claim needs a driver with positional parameters"
    return compiled.string, tuple(compiled.positiontup)


def _stored_times(values: Sequence[datetime | None]) -> list[str | None]:
    """Aware UTC times as stored (`time_text` of naive UTC), each distinct value once."""
    stored: dict[datetime, str] = {}
    out: list[str | None] = []
    for value in values:
        text = None if value is None else stored.get(value)
        if text is None and value is not None:
            text = stored[value] = time_text(naive(value))
        out.append(text)
    return out


def _after(now: datetime, previous: datetime) -> datetime:
    """The `updated_at` of a changed definition: `now`, or just after the one it replaces
    when the clock has not moved past it (a definition is known by its `updated_at`)."""
    return max(now, previous + _MICROSECOND)


def state_groups(plans: Sequence[FirePlan]) -> dict[tuple[Any, ...], list[str]]:
    """The schedules of a claim by the state their fires leave them in: `(next_fire_at as
    claimed, next_fire_at, last_fire_at, queued_fire_at, error)`, times naive UTC. Every
    `* * * * *` schedule of a claim shares one, so one UPDATE writes them all."""
    groups: dict[tuple[Any, ...], list[str]] = defaultdict(list)
    for p in plans:  # grouped by the aware times, each group's converted once
        key = (p.schedule.next_fire_at, p.next_fire_at, p.last_fire_at, p.queued_fire_at, p.error)
        groups[key].append(p.schedule.id)
    return {(_n(w), _n(n), _n(lf), _n(q), e): ids for (w, n, lf, q, e), ids in groups.items()}


async def _advance(conn: AsyncConnection, plans: Sequence[FirePlan], now: datetime) -> None:
    """Write each schedule's state after its fires (`state_groups`), fenced by the
    `next_fire_at` it was claimed at."""
    stamp = naive(now)
    for (was, nxt, last, queued, error), ids in state_groups(plans).items():
        values: dict[str, Any] = {
            "next_fire_at": nxt,
            "last_fire_at": last,
            "queued_fire_at": queued,
        }
        if error is not None:
            values.update(last_error=error, last_error_at=stamp)
        fence = S.c.next_fire_at == was if was is not None else S.c.next_fire_at.is_(None)
        for chunk in _chunks(ids, 1000):
            await conn.execute(update(S).where(S.c.id.in_(chunk), fence).values(**values))


def _n(value: datetime | None) -> datetime | None:
    return None if value is None else naive(value)


def _chunks(items: Sequence[str], size: int) -> list[Sequence[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)] or []
