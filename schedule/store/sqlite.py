"""The task store on SQLite: the queue's hot paths as plain SQL on the writer thread.

Creating, claiming and finishing run once per task, so here they skip SQLAlchemy: each is one
whole transaction on the connector's `SqliteWriter` thread (one hand-off between the event loop
and the driver per transaction, see `schedule.store.sqlite_writer`), made of fixed statements
with positional parameters. Values are converted the way SQLAlchemy's types would: times
written as its SQLite `DateTime` writes them (`time_text`) and read back with
`datetime.fromisoformat`, JSON dumped and loaded once per value as its `JSON` type does (None
stored as the JSON text `null`). The column lists and the conversions come from the task's
field definition (`schedule.task.TaskRecord`). Locking, fencing and claim order are those of
every backend: `BEGIN IMMEDIATE` holds the write lock for the whole transaction.

Few rows back, few statements stepped: the writer thread gives the GIL up inside every SQLite
step and then waits for the event loop to hand it back, so a claim reads the due ids as one
`group_concat` text and the claimed rows as one `json_group_array` text, and inserts and
finishes are multi-row statements (`schedule.upsert.values_list`).
"""

from __future__ import annotations

import functools
import json
import operator
import sqlite3
from collections.abc import Callable, Collection, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from schedule import jsontext
from schedule.clock import naive
from schedule.columns import Kind, RowField
from schedule.ids import new_ids
from schedule.records import AttemptRecord, Outcome
from schedule.store import rollups
from schedule.store.connector import SqliteConnector
from schedule.store.queries import finish_values, in_claim_order
from schedule.store.shared import Detail, SqlTaskStore
from schedule.task import (
    NEW_FIELDS,
    TASK_FIELDS,
    NewTask,
    TaskRecord,
    TaskStatus,
    is_constant,
    new_task_values,
)
from schedule.upsert import execute_rows, values_list


class SqliteTaskStore(SqlTaskStore[SqliteConnector]):
    """SQLite: creates, claims and finishes as plain SQL on the writer thread."""

    async def insert_tasks(self, items: Sequence[NewTask]) -> list[tuple[TaskRecord, bool]]:
        now = self.clock().astimezone(UTC)
        # Records and parameters are built before the transaction is submitted, so that the
        # writer thread is busy only with SQL; a row whose dedupe key turns out to be taken is
        # simply not inserted.
        params_of = new_params(now)
        built = []
        for item, ids in zip(items, new_ids(len(items)), strict=True):
            values = new_task_values(item, now, ids)
            built.append((TaskRecord.from_values(values), params_of(values)))
        keys = sorted({i.dedupe_key for i in items if i.dedupe_key})

        def work(conn: sqlite3.Connection) -> tuple[dict[str, TaskRecord], list[bool]]:
            taken: dict[str, TaskRecord] = {}
            if keys:
                rows = conn.execute(dedupe_sql(len(keys)), keys).fetchall()
                taken = {r[_DEDUPE_KEY_AT]: task_from_stored(r) for r in rows}
            claimed = set(taken)
            fresh: list[tuple[Any, ...]] = []
            inserted: list[bool] = []
            for item, (_, params) in zip(items, built, strict=True):
                if item.dedupe_key and item.dedupe_key in claimed:
                    inserted.append(False)
                    continue
                if item.dedupe_key:
                    claimed.add(item.dedupe_key)
                fresh.append(params)
                inserted.append(True)
            if fresh:
                execute_rows(conn, new_insert_sql, fresh)
            return taken, inserted

        taken, inserted = await self.db.run(work)
        out: list[tuple[TaskRecord, bool]] = []
        first: dict[str, TaskRecord] = {}
        for item, (record, _), created in zip(items, built, inserted, strict=True):
            key = item.dedupe_key
            if created:
                if key:
                    first[key] = record
                out.append((record, True))
            else:
                assert key is not None
                out.append((taken[key] if key in taken else first[key], False))
        return out

    async def _fetch_details(self, keys: Sequence[str]) -> dict[str, Detail]:
        """Plain SQL on the reader thread: one hand-off, one statement and one text for every
        task asked for with its attempts."""
        text = await self.db.read_plain(functools.partial(_details_work, tuple(keys)))
        fallback = self.clock()
        by_key: dict[str, Detail] = {}
        for values in json.loads(text):
            attempts = sorted(values.pop())  # by the attempt row's id: the order recorded
            task = task_from_json(values)
            detail = (task, [_attempt_from_stored(a[1:], fallback) for a in attempts])
            by_key[task.id] = by_key[task.reference] = detail  # ids are longer than references
        return {k: by_key[k] for k in keys if k in by_key}

    async def claim(
        self, node_id: str, limit: int, lease_s: float, types: Collection[str] | None = None
    ) -> list[TaskRecord]:
        if limit <= 0 or (types is not None and not types):
            return []
        return _claimed(await self.db.run(self._claim_work(node_id, limit, lease_s, types)))

    async def finish(self, node_id: str, outcomes: Sequence[Outcome]) -> set[str]:
        if not outcomes:
            return set()
        return await self.db.run(self._finish_work(node_id, outcomes))

    async def finish_and_claim(
        self,
        node_id: str,
        outcomes: Sequence[Outcome],
        limit: int,
        lease_s: float,
        types: Collection[str],
    ) -> tuple[set[str], list[TaskRecord]]:
        """`finish` and `claim` in one transaction on the writer thread."""
        finish = self._finish_work(node_id, outcomes) if outcomes else None
        claim = self._claim_work(node_id, limit, lease_s, types) if limit > 0 and types else None

        def work(conn: sqlite3.Connection) -> tuple[set[str], list[Any]]:
            return (
                finish(conn) if finish is not None else set(),
                claim(conn) if claim is not None else [],
            )

        written, rows = await self.db.run(work)
        return written, _claimed(rows)

    def _claim_work(
        self, node_id: str, limit: int, lease_s: float, types: Collection[str] | None
    ) -> Callable[[sqlite3.Connection], list[Any]]:
        """The claim as a function for the writer thread: the claimed rows as JSON arrays."""
        now = self._now()
        stamp = time_text(now)
        type_list = list(types) if types is not None else []
        due = due_sql(len(type_list) if types is not None else None)
        lease = (node_id, time_text(now + timedelta(seconds=lease_s)), stamp, stamp)

        def work(conn: sqlite3.Connection) -> list[Any]:
            # Three statements of one row each rather than an `UPDATE ... RETURNING` of a row
            # per task: every row SQLite hands back is a GIL hand-off on this thread, and
            # those hand-offs were most of a claim's time. `json_group_array` gives all the
            # claimed rows as one JSON text, decoded in C.
            (found,) = conn.execute(due, (stamp, *type_list, limit)).fetchone()
            if not found:
                return []
            ids = found.split(",")
            conn.execute(take_sql(len(ids)), (*lease, *ids))
            (rows,) = conn.execute(rows_sql(len(ids)), ids).fetchone()
            loaded: list[Any] = json.loads(rows)
            return loaded

        return work

    def _finish_work(
        self, node_id: str, outcomes: Sequence[Outcome]
    ) -> Callable[[sqlite3.Connection], set[str]]:
        """The fenced finish as a function for the writer thread: the ids written (and the
        rollups of the tasks it ends)."""
        now = self._now()
        stamp = time_text(now)
        by_id = {o.task_id: o for o in outcomes}
        ids = list(by_id)
        params = {i: _finish_params(o, stamp) for i, o in by_id.items()}
        owned_query = owned_sql(len(ids))

        def work(conn: sqlite3.Connection) -> set[str]:
            (found,) = conn.execute(
                owned_query, (*ids, node_id, TaskStatus.RUNNING.value)
            ).fetchone()
            rows = [r.split("|") for r in found.split(",")] if found else []
            rows = [r for r in rows if by_id[r[0]].attempt == int(r[1])]
            if not rows:
                return set()
            owned = {r[0]: r[2] or None for r in rows}
            plain = [params[r[0]] for r in rows if r[3] == "0"]
            if plain:
                execute_rows(conn, finish_plain_sql, [p[:-2] + p[-1:] for p in plain])
            keyed = [params[r[0]] for r in rows if r[3] != "0"]
            if keyed:
                execute_rows(conn, finish_dedupe_sql, keyed)
            attempts = [
                (
                    i,
                    by_id[i].attempt,
                    node_id,
                    started or stamp,
                    stamp,
                    by_id[i].outcome,
                    by_id[i].error,
                )
                for i, started in owned.items()
            ]
            execute_rows(conn, attempts_insert_sql, attempts)
            ended = [(r[4], params[r[0]][0], _naive_time(r[2])) for r in rows]
            bumps = rollups.increments(now, ended)
            if bumps:
                execute_rows(conn, rollups.upsert_sql, [(time_text(b[0]), *b[1:]) for b in bumps])
            return set(owned)

        return work


# ---- the task row: columns and conversions, from the field definition --------------------

COLUMNS = tuple(f.name for f in TASK_FIELDS)
_SELECT_LIST = ", ".join(f'"{name}"' for name in COLUMNS)


def time_text(value: datetime) -> str:
    """A naive UTC time as SQLAlchemy's SQLite `DateTime` stores it (always 6 fraction digits,
    so that stored times compare correctly as text)."""
    return value.isoformat(" ", "microseconds")


def json_text(value: Any) -> str:
    """A JSON column value as SQLAlchemy's `JSON` type writes it (None as the text `null`, a
    non-finite float as `null` too: see `schedule.jsontext`); the two values nearly every task
    has (no result yet, no parameters) without the encoder."""
    if value is None:
        return "null"
    if value == {} and type(value) is dict:
        return "{}"
    return jsontext.dumps(value)


def json_load(text: str) -> Any:
    """A stored JSON text as SQLAlchemy's `JSON` type reads it (`json_text`'s shortcuts)."""
    if text == "null":
        return None
    if text == "{}":
        return {}
    return json.loads(text)


@functools.lru_cache(maxsize=4096)
def _naive_time(text: str) -> datetime | None:
    """A stored time as naive UTC (None for the empty text)."""
    return datetime.fromisoformat(text) if text else None


@functools.lru_cache(maxsize=4096)
def time_load(text: str) -> datetime:
    """A stored time as an aware UTC datetime. Cached: the rows of one claim or one batch
    share most of their times (created together, claimed together), and datetimes are
    immutable."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def new_params(now: datetime) -> Callable[[Sequence[Any]], tuple[Any, ...]]:
    """For the tasks of one create made at `now` (aware UTC): a new task's field values (in
    field order) to the parameters of `new_insert_sql`. The stored form of a constant value
    is the same for every task, so only the other values are converted per task."""
    stamp = time_text(naive(now))

    def time_param(value: datetime | None) -> str | None:
        if value is now:
            return stamp
        return None if value is None else time_text(naive(value))

    to_stored: dict[Kind, Callable[[Any], Any]] = {Kind.JSON: json_text, Kind.TIME: time_param}
    convert = [
        (f.index, to_stored[f.kind])
        for f in NEW_FIELDS
        if f.kind in to_stored and not is_constant(f.spec.new)
    ]

    def params(values: Sequence[Any]) -> tuple[Any, ...]:
        stored = list(values)
        for index, to in convert:
            stored[index] = to(stored[index])
        return _PICK_NEW_PARAMS((*stored, *_NEW_CONSTANTS))

    return params


def _constant_stored(field: RowField) -> Any:
    """How the column of a field whose new value is a constant stores that value."""
    value = field.spec.new
    if field.kind is Kind.JSON:
        return json_text(value)
    if field.kind is Kind.ENUM:
        return value.value
    assert field.kind is not Kind.TIME, "a time is never a constant of a new task"
    return value


_NEW_CONSTANT_FIELDS = tuple(f for f in NEW_FIELDS if is_constant(f.spec.new))
_NEW_CONSTANTS = tuple(_constant_stored(f) for f in _NEW_CONSTANT_FIELDS)
#: Picks `new_insert_sql`'s parameters from a task's stored values followed by the constants.
_PICK_NEW_PARAMS: Callable[[Sequence[Any]], tuple[Any, ...]] = operator.itemgetter(
    *(
        len(TASK_FIELDS) + _NEW_CONSTANT_FIELDS.index(f) if f in _NEW_CONSTANT_FIELDS else f.index
        for f in NEW_FIELDS
    )
)


@functools.cache
def details_sql(count: int) -> str:
    """The tasks whose id or reference is one of `count` keys (`?1`..), each with its attempts
    last, as one JSON array of arrays (`rows_sql`'s columns): one statement stepped once."""
    marks = ", ".join(f"?{n}" for n in range(1, count + 1))
    attempts = (
        "json((SELECT json_group_array(json_array(a.id, a.attempt, a.node_id, a.started_at, "
        "a.finished_at, a.outcome, a.error)) FROM sync_task_attempts AS a "
        "WHERE a.task_id = sync_tasks.id))"
    )
    return (
        f"SELECT json_group_array(json_array({_ROW_JSON_COLUMNS}, {attempts})) FROM sync_tasks "
        f"WHERE id IN ({marks}) OR reference IN ({marks})"
    )


def _details_work(keys: Sequence[str], conn: sqlite3.Connection) -> str:
    """The reader thread's part of `_fetch_details`: `details_sql`'s one text."""
    text: str = conn.execute(details_sql(len(keys)), keys).fetchone()[0]
    return text


def _attempt_from_stored(row: Sequence[Any], fallback: datetime) -> AttemptRecord:
    attempt, node_id, started, finished, outcome, error = row
    finished_at = time_load(finished) if finished is not None else None
    return AttemptRecord(
        attempt=attempt,
        node_id=node_id,
        started_at=time_load(started) if started is not None else finished_at or fallback,
        finished_at=finished_at,
        outcome=outcome,
        error=error,
    )


def task_from_stored(row: Sequence[Any]) -> TaskRecord:
    """A `TaskRecord` from a raw row selected with every column in field order (JSON still
    text)."""
    values = list(row)
    for index in _JSON_AT:
        value = values[index]
        if value is not None:
            values[index] = json_load(value)
    return task_from_json(values)


def task_from_json(values: list[Any]) -> TaskRecord:
    """A `TaskRecord` from one row of `rows_sql`, or any stored row whose JSON columns are
    already decoded."""
    for index, convert in _CONVERT_AT:
        value = values[index]
        if value is not None:
            values[index] = convert(value)
    return TaskRecord.from_values(values)


def _claimed(rows: list[Any]) -> list[TaskRecord]:
    """Claimed rows (`rows_sql`) as records in claim order."""
    return in_claim_order([task_from_json(r) for r in rows])


def _from_stored(field: RowField) -> Callable[[Any], Any] | None:
    if field.kind is Kind.TIME:
        return time_load
    if field.kind is Kind.BOOL:
        return bool
    if field.kind is Kind.ENUM:
        by_value = {member.value: member for member in field.enum}
        return by_value.__getitem__
    return None


_JSON_AT = tuple(f.index for f in TASK_FIELDS if f.kind is Kind.JSON)
_CONVERT_AT = tuple(
    (f.index, convert) for f in TASK_FIELDS if (convert := _from_stored(f)) is not None
)
_DEDUPE_KEY_AT = COLUMNS.index("dedupe_key")


def _finish_params(outcome: Outcome, stamp: str) -> tuple[Any, ...]:
    """`finish_values` as one row of `finish_dedupe_sql` (without the `free` flag, one row of
    `finish_plain_sql`); `stamp` is now as stored."""
    status, result, error, percent, message, processed, total, retry_at, finished = finish_values(
        outcome
    )
    return (
        status,
        json_text(result),
        error,
        percent,
        message,
        processed,
        total,
        time_text(retry_at) if retry_at else stamp,
        stamp if finished else None,
        stamp,
        1 if finished else 0,
        outcome.task_id,
    )


# ---- the statements -------------------------------------------------------------------------


@functools.cache
def new_insert_sql(rows: int) -> str:
    """Insert `rows` new tasks (`new_params` parameters)."""
    columns = ", ".join(f'"{f.name}"' for f in NEW_FIELDS)
    return f"INSERT INTO sync_tasks ({columns}) " + values_list(rows, len(NEW_FIELDS))


@functools.cache
def due_sql(type_count: int | None) -> str:
    """The ids of up to `?` due pending tasks (of `type_count` types; None: any type) in claim
    order, as one comma-separated text. The claim index is named (`INDEXED BY`): with
    statistics (after an `ANALYZE`) the planner skipped through it by due time and then sorted
    every due pending task, on each claim (2.8 ms instead of 0.03 ms with 20,000 pending)."""
    types = ""
    if type_count is not None:
        types = " AND sync_tasks.task_type IN (" + ", ".join("?" * type_count) + ")"
    return (
        "SELECT group_concat(id, ',') FROM (SELECT sync_tasks.id AS id FROM sync_tasks "
        "INDEXED BY ix_sync_tasks_claim "
        "WHERE sync_tasks.status = 'pending' AND sync_tasks.run_after <= ?" + types + " "
        "ORDER BY sync_tasks.priority DESC, sync_tasks.run_after ASC, "
        "sync_tasks.created_at ASC LIMIT ?)"
    )


@functools.cache
def take_sql(count: int) -> str:
    """Mark `count` tasks (found by `due_sql` in this same `BEGIN IMMEDIATE` transaction, so
    still pending) as running under this node's lease. `+status` keeps the guard out of the
    planner's index choice: the ids are looked up by primary key."""
    marks = ", ".join("?" * count)
    return (
        "UPDATE sync_tasks SET status = 'running', progress = 0, message = '', "
        "processed_rows = 0, error = NULL, attempt = sync_tasks.attempt + 1, lease_owner = ?, "
        f"lease_expires_at = ?, started_at = ?, updated_at = ? WHERE sync_tasks.id IN ({marks}) "
        "AND +sync_tasks.status = 'pending'"
    )


@functools.cache
def rows_sql(count: int) -> str:
    """`count` task rows as one JSON array of arrays in field order; JSON columns embedded as
    JSON (`json(...)`), so that one `json.loads` decodes everything."""
    marks = ", ".join("?" * count)
    return (
        f"SELECT json_group_array(json_array({_ROW_JSON_COLUMNS})) FROM sync_tasks "
        f"WHERE id IN ({marks})"
    )


#: `rows_sql`'s columns: every column in field order, JSON columns as JSON.
_ROW_JSON_COLUMNS = ", ".join(
    f'json("{f.name}")' if f.kind is Kind.JSON else f'"{f.name}"' for f in TASK_FIELDS
)


@functools.cache
def dedupe_sql(count: int) -> str:
    """The unfinished tasks holding any of `count` dedupe keys."""
    marks = ", ".join("?" * count)
    return f"SELECT {_SELECT_LIST} FROM sync_tasks WHERE dedupe_active IN ({marks})"


@functools.cache
def owned_sql(count: int) -> str:
    """The fencing read of a finish for `count` ids: `id|attempt|started_at|has dedupe
    key|task_type` of each owned task, joined by commas into one text (one row back, one GIL
    hand-off, where a row per task cost one each). Task types are names of registered types
    (letters, digits, `_`), never a separator."""
    marks = ", ".join("?" * count)
    return (
        "SELECT group_concat(id || '|' || attempt || '|' || ifnull(started_at, '') || '|' "
        "|| (dedupe_key IS NOT NULL) || '|' || task_type, ',') FROM sync_tasks "
        f"WHERE id IN ({marks}) AND lease_owner = ? AND status = ?"
    )


# Tasks without a dedupe key (nearly all) are finished by a statement that leaves
# `dedupe_active` out of its SET list: SQLite then does not touch that unique index at all.
_FINISH_SET = (
    "WITH v(c0, c1, c2, c3, c4, c5, c6, c7, c8, c9, c10{more}) AS ({values}) "
    "UPDATE sync_tasks SET status = v.c0, result = v.c1, error = v.c2, progress = v.c3, "
    "message = v.c4, processed_rows = v.c5, total_rows = v.c6, run_after = v.c7, "
    "finished_at = v.c8, lease_owner = NULL, lease_expires_at = NULL, updated_at = v.c9{dedupe} "
    "FROM v WHERE sync_tasks.id = v.{id}"
)


@functools.cache
def finish_plain_sql(rows: int) -> str:
    """Finish `rows` attempts of tasks without a dedupe key (`_finish_params` without its
    `free` flag)."""
    return _FINISH_SET.format(more="", values=values_list(rows, 11), dedupe="", id="c10")


@functools.cache
def finish_dedupe_sql(rows: int) -> str:
    """Finish `rows` attempts of tasks with a dedupe key (`_finish_params`)."""
    return _FINISH_SET.format(
        more=", c11",
        values=values_list(rows, 12),
        dedupe=", dedupe_active = CASE WHEN v.c10 = 1 THEN NULL ELSE sync_tasks.dedupe_key END",
        id="c11",
    )


@functools.cache
def attempts_insert_sql(rows: int) -> str:
    """Insert `rows` attempt records."""
    return (
        "INSERT INTO sync_task_attempts "
        "(task_id, attempt, node_id, started_at, finished_at, outcome, error) "
        + values_list(rows, 7)
    )
