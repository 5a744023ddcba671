"""The task store on MariaDB/MySQL: the queue's hot paths in SQLAlchemy Core.

A claim is `SELECT ... FOR UPDATE SKIP LOCKED`, then `UPDATE`, in one transaction (READ
COMMITTED: it locks only the rows it takes), so nodes sharing the database never take the same
task and never wait for each other's claims. A finish reads the rows it may write with `FOR
UPDATE` (waiting, never skipping: see `SqlTaskStore._owned`).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Collection, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Integer, String, bindparam, case, func, insert, null, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from schedule.clock import naive, utc
from schedule.columns import Kind
from schedule.ids import new_ids
from schedule.models import status_is
from schedule.records import AttemptRecord, Outcome
from schedule.store import rollups
from schedule.store.connector import MySqlConnector
from schedule.store.queries import (
    CLAIM_ORDER,
    A,
    T,
    claim_values,
    finish_values,
    in_claim_order,
    take,
)
from schedule.store.shared import Detail, SqlTaskStore
from schedule.task import TASK_FIELDS, NewTask, TaskRecord, TaskStatus, new_task_values

#: Times go to the database naive (UTC).
_TIME_FIELDS = tuple(f.name for f in TASK_FIELDS if f.kind is Kind.TIME)


class MySqlTaskStore(SqlTaskStore[MySqlConnector]):
    """MariaDB/MySQL: claims with `SKIP LOCKED`, finishes fenced under `FOR UPDATE`."""

    async def insert_tasks(self, items: Sequence[NewTask]) -> list[tuple[TaskRecord, bool]]:
        now = utc(self.clock()) or self.clock()
        # Records and rows are built before the write transaction, so that other writers of
        # this process (claims, finishes) are not held up by that Python work; a row whose
        # dedupe key turns out to be taken is simply not inserted.
        records = [
            TaskRecord.from_values(new_task_values(item, now, ids))
            for item, ids in zip(items, new_ids(len(items)), strict=True)
        ]
        keys = {i.dedupe_key for i in items if i.dedupe_key}
        async with self.db.write() as conn:
            taken: dict[str, TaskRecord] = {}
            if keys:
                rows = await conn.execute(select(T).where(T.c.dedupe_active.in_(keys)))
                taken = {r.dedupe_key: TaskRecord.from_row(r) for r in rows.mappings()}
            out: list[tuple[TaskRecord, bool]] = []
            fresh: list[dict[str, Any]] = []
            for item, record in zip(items, records, strict=True):
                key = item.dedupe_key
                if key and key in taken:
                    out.append((taken[key], False))
                    continue
                if key:
                    taken[key] = record
                fresh.append(_row(record))
                out.append((record, True))
            if fresh:
                await conn.execute(insert(T), fresh)
        return out

    async def _fetch_details(self, keys: Sequence[str]) -> dict[str, Detail]:
        """One statement, one round trip: the tasks whose id or reference is one of `keys`,
        each with its attempts as a JSON array."""
        async with self.db.read() as conn:
            rows = (await conn.execute(_DETAIL, {"keys": list(keys)})).all()
        fallback = self.clock()
        by_key: dict[str, Detail] = {}
        for row in rows:
            task = TaskRecord.from_row(row._mapping)
            found = sorted(json.loads(row.attempts_json or "[]"))  # by the attempt row's id
            detail = (task, [_attempt(a, fallback) for a in found])
            by_key[task.id.lower()] = by_key[task.reference.lower()] = detail
        # The columns compare without case (the database's collation), as a lookup of one did.
        return {k: by_key[k.lower()] for k in keys if k.lower() in by_key}

    async def claim(
        self, node_id: str, limit: int, lease_s: float, types: Collection[str] | None = None
    ) -> list[TaskRecord]:
        if limit <= 0 or (types is not None and not types):
            return []
        now = self._now()
        due = select(T.c.id).where(status_is(TaskStatus.PENDING), T.c.run_after <= now)
        if types is not None:
            due = due.where(T.c.task_type.in_(list(types)))
        due = due.order_by(*CLAIM_ORDER).limit(limit)
        async with self.db.write() as conn:
            rows = await take(self.db, conn, due, claim_values(node_id, now, lease_s))
        return in_claim_order([TaskRecord.from_row(r) for r in rows])

    async def finish(self, node_id: str, outcomes: Sequence[Outcome]) -> set[str]:
        if not outcomes:
            return set()
        now = self._now()
        by_id = {o.task_id: o for o in outcomes}
        async with self.db.write() as conn:
            owned = await self._owned(conn, node_id, {i: o.attempt for i, o in by_id.items()})
            if not owned:
                return set()
            await _write_outcomes(conn, [_finish_params(by_id[i], now) for i in owned])
            ended = [(kind, by_id[i].status.value, started) for i, (started, kind) in owned.items()]
            await rollups.add(conn, rollups.increments(now, ended))
            await conn.execute(
                insert(A),
                [
                    {
                        "task_id": i,
                        "attempt": by_id[i].attempt,
                        "node_id": node_id,
                        "started_at": owned[i][0] or now,
                        "finished_at": now,
                        "outcome": by_id[i].outcome,
                        "error": by_id[i].error,
                    }
                    for i in owned
                ],
            )
        return set(owned)

    async def finish_and_claim(
        self,
        node_id: str,
        outcomes: Sequence[Outcome],
        limit: int,
        lease_s: float,
        types: Collection[str],
    ) -> tuple[set[str], list[TaskRecord]]:
        """`finish`, then `claim`: two transactions (a finish waits for row locks, a claim
        must not hold its own locks meanwhile)."""
        written = await self.finish(node_id, outcomes)
        claimed = await self.claim(node_id, limit, lease_s, types) if limit > 0 else []
        return written, claimed


_KEYS = bindparam("keys", expanding=True, type_=String)
_DETAIL = select(
    T,
    select(
        func.json_arrayagg(
            func.json_array(
                A.c.id,
                A.c.attempt,
                A.c.node_id,
                A.c.started_at,
                A.c.finished_at,
                A.c.outcome,
                A.c.error,
            )
        )
    )
    .where(A.c.task_id == T.c.id)
    .scalar_subquery()
    .label("attempts_json"),
).where(or_(T.c.id.in_(_KEYS), T.c.reference.in_(_KEYS)))


def _attempt(values: list[Any], fallback: datetime) -> AttemptRecord:
    """An attempt from its JSON array (`_DETAIL`): times are MariaDB's DATETIME text."""
    _, attempt, node_id, started, finished, outcome, error = values
    finished_at = _json_time(finished)
    return AttemptRecord(
        attempt=attempt,
        node_id=node_id,
        started_at=_json_time(started) or finished_at or fallback,
        finished_at=finished_at,
        outcome=outcome,
        error=error,
    )


def _json_time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text).replace(tzinfo=UTC) if text else None


def _row(record: TaskRecord) -> dict[str, Any]:
    """A new task's row for SQLAlchemy's insert: every column, times naive UTC."""
    row = dict(record.__dict__)
    for name in _TIME_FIELDS:
        value = row[name]
        if value is not None:
            row[name] = naive(value)
    return row


async def _write_outcomes(conn: AsyncConnection, rows: Sequence[dict[str, Any]]) -> None:
    """Outcomes that set the same values (a burst of plain completions) are written by one
    `UPDATE ... WHERE id IN (...)`; the rest row by row. pymysql runs an `executemany` of
    `UPDATE` as one statement per row, so grouping saves a round trip per task."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        same = {k: v for k, v in row.items() if k != "b_id"}
        groups[json.dumps(same, sort_keys=True, default=str)].append(row)
    singles: list[dict[str, Any]] = []
    for members in groups.values():
        if len(members) == 1:
            singles.extend(members)
            continue
        params = {k: v for k, v in members[0].items() if k != "b_id"}
        params["b_ids"] = [m["b_id"] for m in members]
        await conn.execute(_FINISH_GROUP_STMT, params)
    if singles:
        await conn.execute(_FINISH_STMT, singles)


_FINISH_VALUES: dict[str, Any] = dict(
    status=bindparam("b_status"),
    result=bindparam("b_result"),
    error=bindparam("b_error"),
    progress=bindparam("b_progress"),
    message=bindparam("b_message"),
    processed_rows=bindparam("b_processed"),
    total_rows=bindparam("b_total"),
    run_after=bindparam("b_run_after"),
    finished_at=bindparam("b_finished_at"),
    dedupe_active=case((bindparam("b_free", type_=Integer) == 1, null()), else_=T.c.dedupe_key),
    lease_owner=None,
    lease_expires_at=None,
    updated_at=bindparam("b_now"),
)
_FINISH_STMT = update(T).where(T.c.id == bindparam("b_id")).values(**_FINISH_VALUES)
_FINISH_GROUP_STMT = (
    update(T).where(T.c.id.in_(bindparam("b_ids", expanding=True))).values(**_FINISH_VALUES)
)


def _finish_params(outcome: Outcome, now: datetime) -> dict[str, Any]:
    """Parameters of `_FINISH_STMT`."""
    status, result, error, percent, message, processed, total, retry_at, finished = finish_values(
        outcome
    )
    return {
        "b_id": outcome.task_id,
        "b_status": status,
        "b_result": result,
        "b_error": error,
        "b_progress": percent,
        "b_message": message,
        "b_processed": processed,
        "b_total": total,
        "b_run_after": retry_at or now,
        "b_finished_at": now if finished else None,
        "b_free": 1 if finished else 0,
        "b_now": now,
    }
