"""The claim of due fires on SQLite: one whole transaction on the writer thread, plain SQL.

At a minute boundary thousands of schedules fall due together; their claim is the scheduler's
hot path, as creating and claiming tasks is the queue's (`schedule.store.sqlite`). So on
SQLite it skips SQLAlchemy and the writer's lock-and-drain: the due schedules are read, their
unfinished tasks and data sources looked up, the planner run, the tasks inserted (the task
store's own multi-row INSERT and parameters, `new_insert_sql` / `new_params`) and the
schedules' next fires written in one transaction on the connector's `SqliteWriter` thread,
queued in order with the engine's claims and finishes. Values are read and written as
SQLAlchemy's types store them, like the task store's.
"""

from __future__ import annotations

import sqlite3
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.dialects import sqlite

from schedule.clock import naive
from schedule.columns import Kind
from schedule.definition import ScheduleRecord
from schedule.firing import FirePlan, overlap_matters
from schedule.ids import new_ids
from schedule.schedules import DUE_STATE, Planner, ScheduleStore, state_groups
from schedule.store import SqliteConnector
from schedule.store.sqlite import json_load, new_insert_sql, new_params, time_load, time_text
from schedule.task import TaskRecord, new_task_values
from schedule.upsert import execute_rows

_FIELDS = ScheduleRecord.row_fields()
_SELECT = ", ".join(f'"{f.name}"' for f in _FIELDS)
_DUE_SQL = (
    f"SELECT {_SELECT} FROM sync_schedules WHERE paused = 0 AND next_fire_at <= ? "
    "ORDER BY next_fire_at LIMIT ?"
)
_LOAD: dict[Kind, Callable[[Any], Any]] = {
    Kind.TIME: time_load,
    Kind.JSON: json_load,
    Kind.BOOL: bool,
}
_DUE_STATE_SQL = str(
    DUE_STATE.compile(dialect=sqlite.dialect(), compile_kwargs={"literal_binds": True})
)
_CONVERT = tuple((f.index, _LOAD[f.kind]) for f in _FIELDS if f.kind in _LOAD)
#: Ids per `IN (...)` list (well under SQLite's bound-parameter limit).
CHUNK = 500


class SqliteScheduleStore(ScheduleStore):
    """`ScheduleStore` whose claim of due fires runs on SQLite's writer thread, and whose
    scheduler poll (`due_state`) on its reader thread."""

    db: SqliteConnector
    #: SQLite has one writer (the connector's thread): a second claim would wait for it.
    concurrent_claims = 1

    async def due_state(self) -> tuple[datetime | None, bool]:
        """The read of `ScheduleStore.due_state` as plain SQL on the reader thread: the idle
        scheduler asks it every `SYNCD_SCHEDULE_POLL_S`, and through SQLAlchemy's adapter it
        cost several thread hand-offs each time."""
        due, queued = await self.db.read_plain(_due_state)
        return (None if due is None else time_load(due)), bool(queued)

    async def claim_fires(
        self, now: datetime, limit: int, planner: Planner
    ) -> list[tuple[FirePlan, list[TaskRecord]]]:
        created = self.clock().astimezone(UTC)
        params_of = new_params(created)

        def work(conn: sqlite3.Connection) -> list[tuple[FirePlan, list[TaskRecord]]]:
            began = time.thread_time()
            try:
                return claim(conn)
            finally:
                self.cpu_s += time.thread_time() - began

        def claim(conn: sqlite3.Connection) -> list[tuple[FirePlan, list[TaskRecord]]]:
            rows = conn.execute(_DUE_SQL, (time_text(naive(now)), limit)).fetchall()
            if not rows:
                return []
            schedules = [_record(r) for r in rows]
            unfinished = _unfinished(conn, [s.id for s in schedules if overlap_matters(s)])
            sources = _sources(conn, {s.data_source_id for s in schedules if s.data_source_id})
            plans = [p for s in schedules if (p := planner(s, unfinished.get(s.id, ()), sources))]
            done: list[tuple[FirePlan, list[TaskRecord]]] = []
            params: list[tuple[Any, ...]] = []
            for plan in plans:
                items = plan.tasks
                records = []
                for item, ids in zip(items, new_ids(len(items)), strict=True):
                    values = new_task_values(item, created, ids)
                    records.append(TaskRecord.from_values(values))
                    params.append(params_of(values))
                done.append((plan, records))
            if params:
                execute_rows(conn, new_insert_sql, params)
            _advance(conn, plans, created)
            return done

        return await self.db.run(work)


def _record(row: Sequence[Any]) -> ScheduleRecord:
    values = list(row)
    for index, load in _CONVERT:
        if values[index] is not None:
            values[index] = load(values[index])
    return ScheduleRecord.from_values(values)


def _unfinished(conn: sqlite3.Connection, ids: list[str]) -> dict[str, list[tuple[str, str]]]:
    out: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start : start + CHUNK]
        marks = ", ".join("?" * len(chunk))
        rows = conn.execute(
            "SELECT schedule_id, id, status FROM sync_tasks WHERE schedule_id IN "
            f"({marks}) AND status IN ('pending', 'running')",
            chunk,
        )
        for schedule_id, task_id, status in rows:
            out[schedule_id].append((task_id, status))
    return out


def _sources(conn: sqlite3.Connection, ids: set[str]) -> frozenset[str]:
    if not ids:
        return frozenset()
    wanted = sorted(ids)
    marks = ", ".join("?" * len(wanted))
    rows = conn.execute(f"SELECT id FROM sync_data_sources WHERE id IN ({marks})", wanted)
    return frozenset(r[0] for r in rows)


def _advance(conn: sqlite3.Connection, plans: Sequence[FirePlan], now: datetime) -> None:
    """Each schedule's state after its fires, one UPDATE per distinct state and chunk, fenced
    by the `next_fire_at` it was claimed at (`state_groups`)."""
    stamp = time_text(naive(now))
    for (was, nxt, last, queued, error), ids in state_groups(plans).items():
        sets = "next_fire_at = ?, last_fire_at = ?, queued_fire_at = ?"
        values: list[Any] = [_text(nxt), _text(last), _text(queued)]
        if error is not None:
            sets += ", last_error = ?, last_error_at = ?"
            values += [error, stamp]
        for start in range(0, len(ids), CHUNK):
            chunk = ids[start : start + CHUNK]
            marks = ", ".join("?" * len(chunk))
            conn.execute(
                f"UPDATE sync_schedules SET {sets} WHERE id IN ({marks}) AND next_fire_at IS ?",
                [*values, *chunk, _text(was)],
            )


def _text(value: datetime | None) -> str | None:
    return None if value is None else time_text(naive(value))


def _due_state(conn: sqlite3.Connection) -> tuple[str | None, int]:
    due, queued = conn.execute(_DUE_STATE_SQL).fetchone()
    return due, queued
