"""The durable task store: every SQL statement about tasks lives here.

`TaskStore` holds what every dialect shares; `SqliteStore` and `MySqlStore` hold the claim,
rescue and duration arithmetic where SQLite and MySQL differ. Writes on SQLite run inside
`BEGIN IMMEDIATE` (see `schedule.database`), so a claim is one atomic `UPDATE ... RETURNING`.
Every write made on behalf of a running attempt is fenced by `lease_owner` and `attempt`: a node
that lost its lease cannot finish, extend or report on the task any more.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import functools
import json
import os
import secrets
import sqlite3
import string
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    JSON,
    ColumnElement,
    DateTime,
    Integer,
    Select,
    and_,
    bindparam,
    case,
    delete,
    func,
    insert,
    literal_column,
    null,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from schedule import jsontext
from schedule.database import BUSY_MS_OPTION, READONLY, is_full
from schedule.exceptions import InvalidState, NotFound
from schedule.models import (
    FINISHED,
    TaskStatus,
    status_is,
    sync_task_attempts,
    sync_task_errors,
    sync_tasks,
)
from schedule.records import (
    AttemptRecord,
    CallbackDelivery,
    ExternalReport,
    HeartbeatReply,
    HourCount,
    NewTask,
    Outcome,
    Page,
    ProgressUpdate,
    RecordError,
    Statistics,
    StoredRecordError,
    TaskFilter,
    TaskRecord,
    naive,
    utc,
)
from schedule.sqlite_writer import SqliteWriter, writer_for
from schedule.upsert import execute_rows, values_list

Clock = Callable[[], datetime]
T = sync_tasks
A = sync_task_attempts
E = sync_task_errors
REFERENCE_ALPHABET = string.ascii_uppercase + string.digits
FINISHED_VALUES = [s.value for s in FINISHED]
HOUR_FORMAT = "%Y-%m-%d %H:00:00"
CLAIM_ORDER = (T.c.priority.desc(), T.c.run_after.asc(), T.c.created_at.asc())
#: How long a readiness check waits for the write lock (at most SYNCD_DB_TIMEOUT_S).
PROBE_S = 2.0
#: Below this much free space where the SQLite file lives, the disk counts as full.
MIN_FREE_BYTES = 1024 * 1024


def utcnow() -> datetime:
    """The default clock: aware UTC now."""
    return datetime.now(UTC)


def new_reference() -> str:
    """An 11-character public reference such as `HD6EKSD8DO9`, uniform over [A-Z0-9]."""
    return new_ids(1)[0][1]


def new_ids(count: int) -> list[tuple[str, str]]:
    """`count` pairs of (random UUID4 string, reference), from one draw of the OS generator
    (a system call per id was a tenth of the enqueue cost).

    A reference takes 16 random bytes, drops those of 252 and above (252 = 7 * 36) and maps
    the rest to `byte % 36`: uniform over [A-Z0-9], all of it in C (`bytes.translate`).
    Fewer than 11 survive about once in 10**13 draws; that pair is drawn again.
    """
    pool = secrets.token_bytes(32 * count)
    out: list[tuple[str, str]] = []
    for start in range(0, 32 * count, 32):
        raw = bytearray(pool[start : start + 16])
        raw[6] = raw[6] & 0x0F | 0x40  # version 4
        raw[8] = raw[8] & 0x3F | 0x80  # RFC 4122 variant
        h = raw.hex()
        chars = pool[start + 16 : start + 32].translate(_REFERENCE_TABLE, _REFERENCE_DROP)
        if len(chars) < 11:
            out.extend(new_ids(1))
            continue
        out.append((f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}", chars[:11].decode()))
    return out


_REFERENCE_TABLE = bytes(ord(REFERENCE_ALPHABET[b % 36]) for b in range(256))
_REFERENCE_DROP = bytes(range(252, 256))


class TaskStore:
    """Dialect-neutral task persistence. Use `make_store` to get the right subclass."""

    def __init__(
        self, engine: AsyncEngine, clock: Clock = utcnow, timeout: float | None = None
    ) -> None:
        self.engine = engine
        self.clock = clock
        self.timeout = timeout
        # Why the last write failed for want of space, until a write succeeds (readiness).
        self._full: str | None = None

    def _now(self) -> datetime:
        return naive(self.clock())

    @contextlib.asynccontextmanager
    async def _read(self) -> AsyncIterator[AsyncConnection]:
        """A read transaction, bounded by `timeout` (TimeoutError when it is exceeded)."""
        async with asyncio.timeout(self.timeout), _ReadConnection(self.engine) as conn:
            yield conn

    @contextlib.asynccontextmanager
    async def _write(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction, bounded by `timeout`: a server that went silent (no RST, a
        hung network) cannot hold an API request or an engine loop longer than that."""
        try:
            async with asyncio.timeout(self.timeout), self.engine.begin() as conn:
                yield conn
        except DBAPIError as exc:
            if is_full(exc):
                self._full = _first_line(exc)
            raise
        self._full = None

    async def write_check(self) -> str | None:
        """Why a write cannot be made now, or None: the server is not read-only and the last
        write did not fail for want of space."""
        async with self._read() as conn:
            read_only = (await conn.execute(text("SELECT @@read_only"))).scalar()
        if read_only:
            return "the server is read-only (read_only=ON)"
        if self._full is not None:
            return f"the last write failed: {self._full}"
        return None

    # ---- creation -------------------------------------------------------------------------

    async def create(self, new: NewTask) -> tuple[TaskRecord, bool]:
        """Insert a task; with a `dedupe_key` held by an unfinished task, return that one."""
        (pair,) = await self.create_many([new])
        return pair

    async def create_many(self, items: Sequence[NewTask]) -> list[tuple[TaskRecord, bool]]:
        """Insert tasks in one transaction; `created` is False for deduplicated ones."""
        for _ in range(5):
            try:
                return await self._create_many_once(items)
            except IntegrityError:
                continue  # a concurrent insert took a dedupe key or a reference: look again
        raise InvalidState("could not create the tasks: concurrent dedupe conflicts")

    async def _create_many_once(self, items: Sequence[NewTask]) -> list[tuple[TaskRecord, bool]]:
        now = self._now()
        # Rows and their driver parameters are built before the write transaction, so that
        # other writers of this process (claims, finishes) are not held up by that Python work;
        # a row whose dedupe key turns out to be taken is simply not inserted.
        candidates = [self._row_for(item, now) for item in items]
        async with self._write() as conn:
            keys = {i.dedupe_key for i in items if i.dedupe_key}
            existing: dict[str, TaskRecord] = {}
            if keys:
                rows = await conn.execute(select(T).where(T.c.dedupe_active.in_(keys)))
                existing = {r.dedupe_key: TaskRecord.from_row(r._mapping) for r in rows}
            plan: list[tuple[dict[str, Any] | str, bool]] = []
            fresh: list[dict[str, Any]] = []
            for item, row in zip(items, candidates, strict=True):
                if item.dedupe_key and item.dedupe_key in existing:
                    plan.append((item.dedupe_key, False))
                    continue
                fresh.append(row)
                plan.append((row, True))
                if item.dedupe_key:
                    existing[item.dedupe_key] = TaskRecord.from_row(row)
            if fresh:
                await conn.execute(insert(T), fresh)
        out: list[tuple[TaskRecord, bool]] = []
        for entry, created in plan:
            if isinstance(entry, str):
                out.append((existing[entry], False))
            else:
                out.append((TaskRecord.from_row(entry), created))
        return out

    @staticmethod
    def _row_for(item: NewTask, now: datetime) -> dict[str, Any]:
        return {
            "id": str(uuid.uuid4()),
            "reference": new_reference(),
            "task_type": item.task_type,
            "status": TaskStatus.PENDING.value,
            "priority": item.priority,
            "data_source_id": item.data_source_id,
            "interface_id": item.interface_id,
            "parameters": item.parameters,
            "progress": 0,
            "message": "",
            "processed_rows": 0,
            "total_rows": None,
            "error_count": 0,
            "result": None,
            "error": None,
            "attempt": 0,
            "max_attempts": item.max_attempts,
            "timeout_s": item.timeout_s,
            "retry_of": item.retry_of,
            "dedupe_key": item.dedupe_key,
            "dedupe_active": item.dedupe_key,
            "callback_url": item.callback_url,
            "run_after": naive(item.run_after) if item.run_after else now,
            "cancel_requested": False,
            "lease_owner": None,
            "lease_expires_at": None,
            "created_at": now,
            "started_at": None,
            "updated_at": now,
            "finished_at": None,
            "service": item.service,
            "service_group": item.service_group,
            "temp": None,
            "callback_status": "pending" if item.callback_url else None,
            "callback_attempts": 0,
            "callback_error": None,
            "callback_next_at": None,
        }

    # ---- reads ----------------------------------------------------------------------------

    async def get(self, key: str) -> TaskRecord | None:
        """A task by id or reference."""
        async with self._read() as conn:
            row = await conn.execute(select(T).where(or_(T.c.id == key, T.c.reference == key)))
            found = row.first()
        return TaskRecord.from_row(found._mapping) if found else None

    async def require(self, key: str) -> TaskRecord:
        """A task by id or reference, or `NotFound`."""
        task = await self.get(key)
        if task is None:
            raise NotFound(f"no task {key!r}")
        return task

    async def list_tasks(self, flt: TaskFilter, page: Page) -> tuple[list[TaskRecord], int]:
        """Newest first, filtered and paged; also the total matching."""
        where = _filter_clause(flt)
        query = select(T).where(where).order_by(T.c.created_at.desc(), T.c.id.desc())
        async with self._read() as conn:
            total = (
                await conn.execute(select(func.count()).select_from(T).where(where))
            ).scalar_one()
            rows = await conn.execute(query.limit(page.size).offset(page.offset))
            tasks = [TaskRecord.from_row(r._mapping) for r in rows]
        return tasks, int(total)

    async def attempts(self, task_id: str) -> list[AttemptRecord]:
        """Finished attempts of a task, oldest first."""
        query = select(A).where(A.c.task_id == task_id).order_by(A.c.id)
        async with self._read() as conn:
            rows = await conn.execute(query)
            return [
                AttemptRecord(
                    attempt=r.attempt,
                    node_id=r.node_id,
                    started_at=utc(r.started_at) or utc(r.finished_at) or self.clock(),
                    finished_at=utc(r.finished_at),
                    outcome=r.outcome,
                    error=r.error,
                )
                for r in rows
            ]

    async def errors(self, task_id: str, page: Page) -> tuple[list[StoredRecordError], int]:
        """Per-record errors of a task in the order they were recorded."""
        where = E.c.task_id == task_id
        async with self._read() as conn:
            total = (
                await conn.execute(select(func.count()).select_from(E).where(where))
            ).scalar_one()
            rows = await conn.execute(
                select(E).where(where).order_by(E.c.id).limit(page.size).offset(page.offset)
            )
            items = [
                StoredRecordError(
                    id=r.id,
                    attempt=r.attempt,
                    position=r.position,
                    record=r.record,
                    reason=r.reason,
                    created_at=utc(r.created_at) or self.clock(),
                )
                for r in rows
            ]
        return items, int(total)

    async def statistics(self, since: datetime) -> Statistics:
        """Counts by status and type, success rate and mean duration since `since`."""
        recent = T.c.created_at >= naive(since)
        duration = self._duration_s()
        async with self._read() as conn:
            by_status: dict[Any, Any] = dict(
                (
                    await conn.execute(
                        select(T.c.status, func.count()).where(recent).group_by(T.c.status)
                    )
                ).all()
            )
            by_type: dict[Any, Any] = dict(
                (
                    await conn.execute(
                        select(T.c.task_type, func.count()).where(recent).group_by(T.c.task_type)
                    )
                ).all()
            )
            done = and_(
                recent, T.c.status == TaskStatus.COMPLETED.value, T.c.started_at.is_not(None)
            )
            avg = (await conn.execute(select(func.avg(duration)).where(done))).scalar_one()
            running: dict[Any, Any] = dict(
                (
                    await conn.execute(
                        select(T.c.lease_owner, func.count())
                        .where(status_is(TaskStatus.RUNNING))
                        .group_by(T.c.lease_owner)
                    )
                ).all()
            )
            queued = (
                await conn.execute(select(func.count()).where(status_is(TaskStatus.PENDING)))
            ).scalar_one()
        completed = by_status.get(TaskStatus.COMPLETED.value, 0)
        failed = by_status.get(TaskStatus.FAILED.value, 0)
        return Statistics(
            since=since,
            total=sum(by_status.values()),
            by_status={s.value: int(by_status.get(s.value, 0)) for s in TaskStatus},
            by_type={str(k): int(v) for k, v in by_type.items()},
            success_rate=round(completed / (completed + failed), 4) if completed + failed else None,
            avg_duration_s=round(float(avg), 3) if avg is not None else None,
            running_by_node={str(k): int(v) for k, v in running.items()},
            queue_length=int(queued),
        )

    async def throughput(self, start: datetime, hours: int) -> list[HourCount]:
        """Tasks that finished in each of `hours` hours from `start` (an hour boundary), by
        final status; hours without any are included with zero counts."""
        start = start.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        end = start + timedelta(hours=hours)
        bucket = self._hour_bucket(T.c.finished_at).label("bucket")
        query = (
            select(bucket, T.c.status, func.count())
            .where(
                T.c.finished_at >= naive(start),
                T.c.finished_at < naive(end),
                T.c.status.in_(FINISHED_VALUES),
            )
            .group_by(literal_column("bucket"), T.c.status)
        )
        async with self._read() as conn:
            rows = (await conn.execute(query)).all()
        counts: dict[datetime, dict[str, int]] = {}
        for hour, status, count in rows:
            at = datetime.strptime(str(hour), HOUR_FORMAT).replace(tzinfo=UTC)
            counts.setdefault(at, {})[str(status)] = int(count)
        out = []
        for index in range(hours):
            at = start + timedelta(hours=index)
            found = counts.get(at, {})
            out.append(HourCount(at, {s: found.get(s, 0) for s in FINISHED_VALUES}))
        return out

    async def get_many(self, ids: Collection[str]) -> list[TaskRecord]:
        """Tasks by id (unknown ids are skipped), in no particular order."""
        if not ids:
            return []
        async with self._read() as conn:
            rows = await conn.execute(select(T).where(T.c.id.in_(list(ids))))
            return [TaskRecord.from_row(r._mapping) for r in rows]

    async def queue_length(self) -> int:
        """Pending tasks, due or not."""
        async with self._read() as conn:
            query = select(func.count()).where(status_is(TaskStatus.PENDING))
            return int((await conn.execute(query)).scalar_one())

    async def ping(self) -> None:
        """Raise if the database cannot be reached."""
        async with self._read() as conn:
            await conn.execute(select(literal_column("1")))

    # ---- transitions requested by people --------------------------------------------------

    async def update_pending(self, key: str, changes: dict[str, Any]) -> TaskRecord:
        """Change a pending task; `InvalidState` once it has started or finished."""
        task = await self.require(key)
        values = {k: (naive(v) if isinstance(v, datetime) else v) for k, v in changes.items()}
        async with self._write() as conn:
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
        """Pending: cancelled now. Running: `cancel_requested` set. Finished: `InvalidState`."""
        task = await self.require(key)
        now = self._now()
        async with self._write() as conn:
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
            if done.rowcount == 0:
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
        """Delete a finished task with its attempts and record errors."""
        task = await self.require(key)
        if not task.status.finished:
            raise InvalidState(f"task is {task.status.value}; only finished tasks can be deleted")
        async with self._write() as conn:
            await self._delete_ids(conn, [task.id])

    async def delete_finished_before(self, cutoff: datetime, batch: int = 500) -> int:
        """Delete one batch of tasks that finished before `cutoff`; returns how many."""
        query = (
            select(T.c.id)
            .where(T.c.status.in_(FINISHED_VALUES), T.c.finished_at < naive(cutoff))
            .order_by(T.c.finished_at)
            .limit(batch)
        )
        async with self._write() as conn:
            ids = list((await conn.execute(query)).scalars())
            if ids:
                await self._delete_ids(conn, ids)
        return len(ids)

    @staticmethod
    async def _delete_ids(conn: AsyncConnection, ids: list[str]) -> None:
        await conn.execute(delete(E).where(E.c.task_id.in_(ids)))
        await conn.execute(delete(A).where(A.c.task_id.in_(ids)))
        await conn.execute(delete(T).where(T.c.id.in_(ids), T.c.status.in_(FINISHED_VALUES)))

    # ---- the engine's side: claim, heartbeat, progress, finish, rescue -------------------

    async def claim(
        self, node_id: str, limit: int, lease_s: float, types: Collection[str] | None = None
    ) -> list[TaskRecord]:
        """Atomically take up to `limit` due pending tasks (of `types`) in claim order."""
        if limit <= 0 or (types is not None and not types):
            return []
        now = self._now()
        values = _claim_values(node_id, now, lease_s)
        due = select(T.c.id).where(status_is(TaskStatus.PENDING), T.c.run_after <= now)
        if types is not None:
            due = due.where(T.c.task_type.in_(list(types)))
        due = due.order_by(*CLAIM_ORDER).limit(limit)
        async with self._write() as conn:
            rows = await self._claim_rows(conn, due, values)
        tasks = [TaskRecord.from_row(r) for r in rows]
        tasks.sort(key=lambda t: (-t.priority, t.run_after, t.created_at))
        return tasks

    async def _claim_rows(
        self, conn: AsyncConnection, due: Select[Any], values: dict[str, Any]
    ) -> list[Any]:
        raise NotImplementedError

    async def heartbeat(
        self, node_id: str, attempts: dict[str, int], lease_s: float
    ) -> HeartbeatReply:
        """Extend the leases this node holds; report lost ones and cancel requests."""
        if not attempts:
            return HeartbeatReply(frozenset(), frozenset())
        now = self._now()
        ids = list(attempts)
        owned = and_(
            T.c.id.in_(ids),
            T.c.lease_owner == node_id,
            T.c.status == TaskStatus.RUNNING.value,
        )
        async with self._write() as conn:
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
        """Write live progress of running attempts this node still owns."""
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
        async with self._write() as conn:
            await conn.execute(stmt, [_progress_params(u) for u in updates])

    async def record_errors(
        self, node_id: str, task_id: str, attempt: int, errors: Sequence[RecordError]
    ) -> bool:
        """Store per-record errors of an attempt this node owns; False when fenced off."""
        if not errors:
            return True
        now = self._now()
        async with self._write() as conn:
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

    async def finish(self, node_id: str, outcomes: Sequence[Outcome]) -> set[str]:
        """Write how attempts ended, in one transaction; returns the ids actually written.

        An outcome is written only when this node still holds the task's lease for that
        attempt (fencing): a node that lost its lease never overwrites a rescued task.
        """
        if not outcomes:
            return set()
        now = self._now()
        by_id = {o.task_id: o for o in outcomes}
        async with self._write() as conn:
            owned = await self._owned(conn, node_id, by_id)
            if not owned:
                return set()
            await self._write_outcomes(conn, [_finish_params(by_id[i], now) for i in owned])
            await conn.execute(
                insert(A),
                [
                    {
                        "task_id": i,
                        "attempt": by_id[i].attempt,
                        "node_id": node_id,
                        "started_at": owned[i] or now,
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
        """`finish` the outcomes, then `claim` up to `limit` tasks of `types` (none when
        `limit` is 0): the engine's round for slots its attempts just left."""
        written = await self.finish(node_id, outcomes)
        claimed = await self.claim(node_id, limit, lease_s, types) if limit > 0 else []
        return written, claimed

    @staticmethod
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

    async def _owned(
        self, conn: AsyncConnection, node_id: str, by_id: dict[str, Outcome]
    ) -> dict[str, datetime | None]:
        # FOR UPDATE without SKIP LOCKED: a row locked by this node's own heartbeat or by a
        # rescuer must be waited for and then judged, never skipped (skipping it would drop
        # a result that this node is still entitled to write).
        query = self._lock_wait(
            select(T.c.id, T.c.attempt, T.c.started_at).where(
                T.c.id.in_(list(by_id)),
                T.c.lease_owner == node_id,
                T.c.status == TaskStatus.RUNNING.value,
            )
        )
        rows = await conn.execute(query)
        return {r.id: r.started_at for r in rows if by_id[r.id].attempt == r.attempt}

    async def release(self, node_id: str, attempts: dict[str, int]) -> set[str]:
        """Give running tasks back to `pending` without counting the attempt (shutdown)."""
        if not attempts:
            return set()
        now = self._now()
        async with self._write() as conn:
            fake = {i: Outcome(i, a, TaskStatus.PENDING, "released") for i, a in attempts.items()}
            owned = await self._owned(conn, node_id, fake)
            for task_id, started in owned.items():
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
        """Undo a claim this node cannot run now (a type at its limit): as if never taken."""
        if not attempts:
            return
        async with self._write() as conn:
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
        """Recover tasks whose lease expired: retry if attempts remain, else fail them."""
        now = self._now()
        query = self._lock(
            select(T).where(status_is(TaskStatus.RUNNING), T.c.lease_expires_at < now).limit(500)
        )
        rescued: list[TaskRecord] = []
        async with self._write() as conn:
            for row in (await conn.execute(query)).all():
                task = TaskRecord.from_row(row._mapping)
                await self._rescue_one(conn, task, now)
                rescued.append(task)
        return rescued

    async def _rescue_one(self, conn: AsyncConnection, task: TaskRecord, now: datetime) -> None:
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
        await conn.execute(
            update(T)
            .where(T.c.id == task.id, T.c.attempt == task.attempt, T.c.status == "running")
            .values(**values)
        )
        await conn.execute(
            insert(A).values(
                task_id=task.id,
                attempt=task.attempt,
                node_id=task.lease_owner or "?",
                started_at=naive(task.started_at) if task.started_at else now,
                finished_at=now,
                outcome="lost",
                error=reason,
            )
        )

    # ---- issue 6: external workers (seed 003) ---------------------------------------------

    async def claim_external(
        self, owner: str, service: str, group: str | None, lease_s: float
    ) -> TaskRecord | None:
        """Atomically take the first due pending task of `service` (and `group`), in claim
        order, with the same machinery as `claim`; None when there is none."""
        now = self._now()
        due = select(T.c.id).where(
            T.c.service == service,
            status_is(TaskStatus.PENDING),
            T.c.run_after <= now,
        )
        if group is not None:
            due = due.where(T.c.service_group == group)
        due = due.order_by(*CLAIM_ORDER).limit(1)
        async with self.engine.begin() as conn:
            rows = await self._claim_rows(conn, due, _claim_values(owner, now, lease_s))
        first = next(iter(rows), None)
        return TaskRecord.from_row(first) if first is not None else None

    async def report_external(
        self, key: str, report: ExternalReport, lease_s: float
    ) -> tuple[TaskRecord, Outcome | None]:
        """Apply an external worker's report to the running task; extends its lease, or ends
        it. Returns the task as now stored and, when it finished, how."""
        task = await self.require(key)
        if task.service is None:
            raise NotFound(f"task {key!r} is not an external task")
        _check_reportable(task, report)
        now = self._now()
        values, outcome = _report_values(task, report, now, lease_s)
        async with self.engine.begin() as conn:
            done = await conn.execute(
                update(T)
                .where(
                    T.c.id == task.id,
                    T.c.attempt == task.attempt,
                    T.c.status == TaskStatus.RUNNING.value,
                )
                .values(**values)
            )
            if done.rowcount and outcome is not None:
                await conn.execute(
                    insert(A).values(
                        task_id=task.id,
                        attempt=task.attempt,
                        node_id=task.lease_owner or "?",
                        started_at=naive(task.started_at) if task.started_at else now,
                        finished_at=now,
                        outcome=outcome.outcome,
                        error=outcome.error,
                    )
                )
        current = await self.require(task.id)
        if done.rowcount == 0:
            raise InvalidState(f"task is {current.status.value}; the report was not applied")
        return current, outcome

    # ---- issue 6: completion callbacks ----------------------------------------------------

    async def claim_callbacks(self, limit: int, claim_s: float) -> builtins.list[CallbackDelivery]:
        """Take up to `limit` finished tasks whose callback is due, for one delivery attempt
        each; the claim holds them for `claim_s` so that no other node sends them meanwhile."""
        now = self._now()
        query = self._lock(
            select(T)
            .where(
                T.c.callback_status == "pending",
                T.c.finished_at.is_not(None),
                or_(T.c.callback_next_at.is_(None), T.c.callback_next_at <= now),
            )
            .order_by(T.c.finished_at)
            .limit(limit)
        )
        out: builtins.list[CallbackDelivery] = []
        async with self.engine.begin() as conn:
            for row in (await conn.execute(query)).all():
                task = TaskRecord.from_row(row._mapping)
                attempt = task.callback_attempts + 1
                await conn.execute(
                    update(T)
                    .where(T.c.id == task.id, T.c.callback_attempts == task.callback_attempts)
                    .values(
                        callback_attempts=attempt,
                        callback_next_at=now + timedelta(seconds=claim_s),
                    )
                )
                out.append(CallbackDelivery(task, attempt))
        return out

    async def settle_callback(
        self, task_id: str, attempt: int, error: str | None, retry_at: datetime | None
    ) -> None:
        """Record how a delivery attempt ended: delivered (no error), to retry at `retry_at`,
        or failed for good (an error and no `retry_at`)."""
        if error is None:
            values: dict[str, Any] = {"callback_status": "delivered", "callback_next_at": None}
        elif retry_at is not None:
            values = {"callback_next_at": naive(retry_at)}
        else:
            values = {"callback_status": "failed", "callback_next_at": None}
        async with self.engine.begin() as conn:
            await conn.execute(
                update(T)
                .where(T.c.id == task_id, T.c.callback_attempts == attempt)
                .values(callback_error=error, **values)
            )

    # ---- dialect hooks --------------------------------------------------------------------

    def _lock(self, query: Select[Any]) -> Select[Any]:
        """Row locks that skip rows others hold (SQLite already holds the write lock)."""
        return query

    def _lock_wait(self, query: Select[Any]) -> Select[Any]:
        """Row locks that wait for rows others hold (SQLite already holds the write lock)."""
        return query

    def _duration_s(self) -> ColumnElement[Any]:
        raise NotImplementedError

    def _hour_bucket(self, column: ColumnElement[Any]) -> ColumnElement[Any]:
        """The column's time truncated to the hour, as text in `HOUR_FORMAT`."""
        raise NotImplementedError


class SqliteStore(TaskStore):
    """SQLite: claims are one `UPDATE ... RETURNING` inside `BEGIN IMMEDIATE`.

    Creating, claiming and finishing (once per task each) run as whole transactions on the
    engine's `SqliteWriter` thread, one hand-off per transaction (see `schedule.sqlite_writer`).
    Every other write goes through SQLAlchemy after taking the writer's lock and draining its
    queue: SQLite has one writer anyway, and a waiter woken by the lock starts at once, where one
    left to SQLite's busy handler sleeps in steps of milliseconds. Other processes still meet
    the busy timeout.

    With `timeout`, every transaction, both ways, ends within about that many seconds counted
    from the call (TimeoutError), waiting for the writer's queue and for another process's
    write lock included: the lock wait (busy timeout) is set to the time left.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        clock: Clock = utcnow,
        busy_timeout_s: float = 5.0,
        timeout: float | None = None,
    ) -> None:
        super().__init__(engine, clock, timeout)
        self._busy_timeout_s = busy_timeout_s

    @property
    def _writer(self) -> SqliteWriter:
        return writer_for(self.engine, self._busy_timeout_s)

    @contextlib.asynccontextmanager
    async def _write(self) -> AsyncIterator[AsyncConnection]:
        writer = self._writer
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        async with asyncio.timeout(self.timeout), writer.lock:
            await writer.drain()
            async with self.engine.connect() as conn:
                busy = _busy_ms(deadline, self._busy_timeout_s)
                conn = await conn.execution_options(**{BUSY_MS_OPTION: busy})
                async with conn.begin():
                    yield conn

    async def write_check(self) -> str | None:
        """Why a write cannot be made now, or None: on the writer's own connection, the write
        lock is taken within `PROBE_S` and a new page can be allocated (a table is created and
        rolled back at once), and the disk where the file lives has room."""
        writer = self._writer

        def work(conn: sqlite3.Connection) -> None:
            conn.execute("CREATE TABLE syncd_write_probe (x)")  # needs a page of its own
            raise _ProbeDone  # rolled back: nothing is left behind

        probe_s = min(PROBE_S, self.timeout or PROBE_S)
        try:
            await writer.transaction(work, limit_s=probe_s)
        except _ProbeDone:
            pass
        except TimeoutError:
            return f"no write lock within {probe_s:g} s: another process holds the database"
        except DBAPIError as exc:
            if is_full(exc):
                return f"the database is full: {_first_line(exc)}"
            if "locked" in str(exc.orig):
                return f"no write lock within {probe_s:g} s: another process holds the database"
            return f"cannot write: {_first_line(exc)}"
        room = await asyncio.to_thread(_free_bytes, writer.path)
        if room < MIN_FREE_BYTES:
            return f"the disk is full: {room:,} bytes free where the database is"
        return None

    # ---- hot paths in plain SQL ------------------------------------------------------------
    #
    # Creating, claiming and finishing run once per task, so on SQLite they skip SQLAlchemy's
    # per-row type processing (measured as most of the daemon's CPU time per task): the
    # statements below are fixed strings with positional parameters, times are written in
    # exactly the format SQLAlchemy's SQLite `DateTime` writes (`_sqlite_time`) and read back
    # with `datetime.fromisoformat`, JSON columns are dumped and loaded once per value the way
    # SQLAlchemy's `JSON` type does (None is stored as the JSON text `null`). Locking, fencing
    # and claim order are exactly those of the generic statements they replace.

    async def _create_many_once(self, items: Sequence[NewTask]) -> list[tuple[TaskRecord, bool]]:
        now = self._now()
        # Rows and their parameters are built before the transaction is submitted, so that the
        # writer thread is busy only with SQL; a row whose dedupe key turns out to be taken is
        # simply not inserted.
        stamp = _sqlite_time(now)
        aware = now.replace(tzinfo=UTC)
        built = [
            _sqlite_new_task(item, aware, stamp, ids)
            for item, ids in zip(items, new_ids(len(items)), strict=True)
        ]
        keys = sorted({i.dedupe_key for i in items if i.dedupe_key})

        def work(conn: sqlite3.Connection) -> tuple[dict[str, TaskRecord], list[bool]]:
            taken: dict[str, TaskRecord] = {}
            if keys:
                rows = conn.execute(_sqlite_dedupe_sql(len(keys)), keys).fetchall()
                taken = {r[_DEDUPE_KEY_INDEX]: _sqlite_task(r) for r in rows}
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
                execute_rows(conn, _sqlite_new_insert, fresh)
            return taken, inserted

        taken, inserted = await self._writer.transaction(work, self.timeout)
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

    async def claim(
        self, node_id: str, limit: int, lease_s: float, types: Collection[str] | None = None
    ) -> list[TaskRecord]:
        """Atomically take up to `limit` due pending tasks (of `types`) in claim order."""
        if limit <= 0 or (types is not None and not types):
            return []
        return _claimed(
            await self._writer.transaction(
                self._claim_work(node_id, limit, lease_s, types), self.timeout
            )
        )

    async def finish(self, node_id: str, outcomes: Sequence[Outcome]) -> set[str]:
        """Write how attempts ended, in one transaction; returns the ids actually written.

        Fenced like `TaskStore.finish`: only attempts whose lease this node still holds.
        """
        if not outcomes:
            return set()
        return await self._writer.transaction(self._finish_work(node_id, outcomes), self.timeout)

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

        written, rows = await self._writer.transaction(work, self.timeout)
        return written, _claimed(rows)

    def _claim_work(
        self, node_id: str, limit: int, lease_s: float, types: Collection[str] | None
    ) -> Callable[[sqlite3.Connection], list[Any]]:
        """The claim as a function for the writer thread: the claimed rows as JSON arrays."""
        now = self._now()
        stamp = _sqlite_time(now)
        type_list = list(types) if types is not None else []
        due_sql = _sqlite_due_sql(len(type_list) if types is not None else None)
        lease = (node_id, _sqlite_time(now + timedelta(seconds=lease_s)), stamp, stamp)

        def work(conn: sqlite3.Connection) -> list[Any]:
            # Three statements of one row each rather than an `UPDATE ... RETURNING` of a row
            # per task: every row SQLite hands back is a GIL hand-off on this thread, and
            # those hand-offs were most of a claim's time. `json_group_array` gives all the
            # claimed rows as one JSON text, decoded in C.
            (due,) = conn.execute(due_sql, (stamp, *type_list, limit)).fetchone()
            if not due:
                return []
            ids = due.split(",")
            conn.execute(_sqlite_take_sql(len(ids)), (*lease, *ids))
            (rows,) = conn.execute(_sqlite_rows_sql(len(ids)), ids).fetchone()
            loaded: list[Any] = json.loads(rows)
            return loaded

        return work

    def _finish_work(
        self, node_id: str, outcomes: Sequence[Outcome]
    ) -> Callable[[sqlite3.Connection], set[str]]:
        """The fenced finish as a function for the writer thread: the ids written."""
        now = self._now()
        stamp = _sqlite_time(now)
        by_id = {o.task_id: o for o in outcomes}
        ids = list(by_id)
        params = {i: _sqlite_finish_params(o, stamp) for i, o in by_id.items()}
        owned_sql = _sqlite_owned_sql(len(ids))

        def work(conn: sqlite3.Connection) -> set[str]:
            (text_,) = conn.execute(owned_sql, (*ids, node_id, TaskStatus.RUNNING.value)).fetchone()
            rows = [r.split("|") for r in text_.split(",")] if text_ else []
            rows = [r for r in rows if by_id[r[0]].attempt == int(r[1])]
            if not rows:
                return set()
            owned = {r[0]: r[2] or None for r in rows}
            plain = [params[r[0]] for r in rows if r[3] == "0"]
            if plain:
                execute_rows(conn, _sqlite_finish_plain, [p[:-2] + p[-1:] for p in plain])
            keyed = [params[r[0]] for r in rows if r[3] != "0"]
            if keyed:
                execute_rows(conn, _sqlite_finish_dedupe, keyed)
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
            execute_rows(conn, _sqlite_attempts_insert, attempts)
            return set(owned)

        return work

    async def _claim_rows(
        self, conn: AsyncConnection, due: Select[Any], values: dict[str, Any]
    ) -> list[Any]:
        # `+status` keeps the (redundant under BEGIN IMMEDIATE) status guard out of the query
        # planner's index choice: with a plain `status = ?` SQLite walked every pending row
        # through a status index instead of looking the claimed ids up by primary key
        # (measured: 26 ms per claim with 50k pending tasks, see the issue 6 notes).
        still_pending = text("+sync_tasks.status = :claim_pending").bindparams(
            claim_pending=TaskStatus.PENDING.value
        )
        stmt = (
            update(T)
            .where(T.c.id.in_(due.scalar_subquery()), still_pending)
            .values(**values)
            .returning(*T.c)
        )
        return [r._mapping for r in (await conn.execute(stmt)).all()]

    def _duration_s(self) -> ColumnElement[Any]:
        return (func.julianday(T.c.finished_at) - func.julianday(T.c.started_at)) * 86400.0

    def _hour_bucket(self, column: ColumnElement[Any]) -> ColumnElement[Any]:
        return func.strftime("%Y-%m-%d %H:00:00", column)


_TASK_COLUMNS = tuple(TaskRecord.__dataclass_fields__)
_SQLITE_SELECT_LIST = ", ".join(f'"{name}"' for name in _TASK_COLUMNS)
# The columns a new task sets; every other column starts at its server default or NULL.
_SQLITE_NEW_COLUMNS = (
    "id",
    "reference",
    "task_type",
    "status",
    "priority",
    "data_source_id",
    "interface_id",
    "parameters",
    "message",
    "result",
    "max_attempts",
    "timeout_s",
    "retry_of",
    "dedupe_key",
    "dedupe_active",
    "callback_url",
    "run_after",
    "created_at",
    "updated_at",
    "service",
    "service_group",
    "temp",
    "callback_status",
)


@functools.cache
def _sqlite_new_insert(rows: int) -> str:
    """Insert `rows` new tasks (`_sqlite_new_task` parameters)."""
    columns = ", ".join(f'"{name}"' for name in _SQLITE_NEW_COLUMNS)
    return f"INSERT INTO sync_tasks ({columns}) " + values_list(rows, len(_SQLITE_NEW_COLUMNS))


_JSON_COLUMNS = frozenset(c.name for c in T.c if isinstance(c.type, JSON))
_TIME_COLUMNS = frozenset(c.name for c in T.c if isinstance(c.type, DateTime))
# Tasks without a dedupe key (nearly all) are finished by a statement that leaves
# `dedupe_active` out of its SET list: SQLite then does not touch that unique index at all.
_SQLITE_FINISH_SET = (
    "WITH v(c0, c1, c2, c3, c4, c5, c6, c7, c8, c9, c10{more}) AS ({values}) "
    "UPDATE sync_tasks SET status = v.c0, result = v.c1, error = v.c2, progress = v.c3, "
    "message = v.c4, processed_rows = v.c5, total_rows = v.c6, run_after = v.c7, "
    "finished_at = v.c8, lease_owner = NULL, lease_expires_at = NULL, updated_at = v.c9{dedupe} "
    "FROM v WHERE sync_tasks.id = v.{id}"
)


@functools.cache
def _sqlite_finish_plain(rows: int) -> str:
    """Finish `rows` attempts of tasks without a dedupe key (`_sqlite_finish_params` without
    its `b_free` flag)."""
    return _SQLITE_FINISH_SET.format(more="", values=values_list(rows, 11), dedupe="", id="c10")


@functools.cache
def _sqlite_finish_dedupe(rows: int) -> str:
    """Finish `rows` attempts of tasks with a dedupe key (`_sqlite_finish_params`)."""
    return _SQLITE_FINISH_SET.format(
        more=", c11",
        values=values_list(rows, 12),
        dedupe=", dedupe_active = CASE WHEN v.c10 = 1 THEN NULL ELSE sync_tasks.dedupe_key END",
        id="c11",
    )


@functools.cache
def _sqlite_attempts_insert(rows: int) -> str:
    """Insert `rows` attempt records."""
    return (
        "INSERT INTO sync_task_attempts "
        "(task_id, attempt, node_id, started_at, finished_at, outcome, error) "
        + values_list(rows, 7)
    )


def _sqlite_time(value: datetime) -> str:
    """A naive UTC time as SQLAlchemy's SQLite `DateTime` stores it (always 6 fraction digits,
    so that stored times compare correctly as text)."""
    return value.isoformat(" ", "microseconds")


def _sqlite_json(value: Any) -> str:
    """A JSON column value as SQLAlchemy's `JSON` type writes it (None as the text `null`, a
    non-finite float as `null` too: see `schedule.jsontext`); the two values nearly every task
    has (no result yet, no parameters) without the encoder."""
    if value is None:
        return "null"
    if value == {} and type(value) is dict:
        return "{}"
    return jsontext.dumps(value)


def _sqlite_json_load(text: str) -> Any:
    """A stored JSON text as SQLAlchemy's `JSON` type reads it (`_sqlite_json`'s shortcuts)."""
    if text == "null":
        return None
    if text == "{}":
        return {}
    return json.loads(text)


def _sqlite_new_task(
    item: NewTask, now: datetime, stamp: str, ids: tuple[str, str]
) -> tuple[TaskRecord, tuple[Any, ...]]:
    """A new pending task as its record and as the parameters of `_sqlite_new_insert`, built
    directly (no row dict, no parse back): `now` is aware UTC and `stamp` is it as stored.
    `ids` is the task's (id, reference) from `new_ids`. Equal to what `TaskStore._row_for` +
    `TaskRecord.from_row` give (tested)."""
    task_id, reference = ids
    if item.run_after is None:
        run_after, run_after_text = now, stamp
    else:
        run_after = utc(item.run_after) or now
        run_after_text = _sqlite_time(naive(run_after))
    callback_status = "pending" if item.callback_url else None
    record = TaskRecord.from_values(
        (
            task_id,
            reference,
            item.task_type,
            TaskStatus.PENDING,
            item.priority,
            item.data_source_id,
            item.interface_id,
            item.parameters,
            0,  # progress
            "",  # message
            0,  # processed_rows
            None,  # total_rows
            0,  # error_count
            None,  # result
            None,  # error
            0,  # attempt
            item.max_attempts,
            item.timeout_s,
            item.retry_of,
            item.dedupe_key,
            item.callback_url,
            run_after,
            False,  # cancel_requested
            None,  # lease_owner
            None,  # lease_expires_at
            now,  # created_at
            None,  # started_at
            now,  # updated_at
            None,  # finished_at
            item.service,
            item.service_group,
            None,  # temp
            callback_status,
            0,  # callback_attempts
            None,  # callback_error
        )
    )
    params = (
        task_id,
        reference,
        item.task_type,
        TaskStatus.PENDING.value,
        item.priority,
        item.data_source_id,
        item.interface_id,
        _sqlite_json(item.parameters),
        "",
        "null",
        item.max_attempts,
        item.timeout_s,
        item.retry_of,
        item.dedupe_key,
        item.dedupe_key,
        item.callback_url,
        run_after_text,
        stamp,
        stamp,
        item.service,
        item.service_group,
        "null",
        callback_status,
    )
    return record, params


@functools.cache
def _sqlite_due_sql(type_count: int | None) -> str:
    """The ids of up to `?` due pending tasks (of `type_count` types; None: any type) in claim
    order, as one comma-separated text."""
    types = ""
    if type_count is not None:
        types = " AND sync_tasks.task_type IN (" + ", ".join("?" * type_count) + ")"
    return (
        "SELECT group_concat(id, ',') FROM (SELECT sync_tasks.id AS id FROM sync_tasks "
        "WHERE sync_tasks.status = 'pending' AND sync_tasks.run_after <= ?" + types + " "
        "ORDER BY sync_tasks.priority DESC, sync_tasks.run_after ASC, "
        "sync_tasks.created_at ASC LIMIT ?)"
    )


@functools.cache
def _sqlite_take_sql(count: int) -> str:
    """Mark `count` tasks (found by `_sqlite_due_sql` in this same `BEGIN IMMEDIATE`
    transaction, so still pending) as running under this node's lease. `+status` keeps the
    guard out of the planner's index choice: the ids are looked up by primary key."""
    marks = ", ".join("?" * count)
    return (
        "UPDATE sync_tasks SET status = 'running', progress = 0, message = '', "
        "processed_rows = 0, error = NULL, attempt = sync_tasks.attempt + 1, lease_owner = ?, "
        f"lease_expires_at = ?, started_at = ?, updated_at = ? WHERE sync_tasks.id IN ({marks}) "
        "AND +sync_tasks.status = 'pending'"
    )


@functools.cache
def _sqlite_rows_sql(count: int) -> str:
    """`count` task rows as one JSON array of arrays in `_TASK_COLUMNS` order; JSON columns
    embedded as JSON (`json(...)`), so that one `json.loads` decodes everything."""
    marks = ", ".join("?" * count)
    columns = ", ".join(
        f'json("{name}")' if name in _JSON_COLUMNS else f'"{name}"' for name in _TASK_COLUMNS
    )
    return f"SELECT json_group_array(json_array({columns})) FROM sync_tasks WHERE id IN ({marks})"


@functools.cache
def _sqlite_dedupe_sql(count: int) -> str:
    """The unfinished tasks holding any of `count` dedupe keys."""
    marks = ", ".join("?" * count)
    return f"SELECT {_SQLITE_SELECT_LIST} FROM sync_tasks WHERE dedupe_active IN ({marks})"


@functools.cache
def _sqlite_owned_sql(count: int) -> str:
    """The fencing read of `finish` for `count` ids: `id|attempt|started_at|has dedupe key`
    of each owned task, joined by commas into one text (one row back, one GIL hand-off, where
    a row per task cost one each)."""
    marks = ", ".join("?" * count)
    return (
        "SELECT group_concat(id || '|' || attempt || '|' || ifnull(started_at, '') || '|' "
        "|| (dedupe_key IS NOT NULL), ',') FROM sync_tasks "
        f"WHERE id IN ({marks}) AND lease_owner = ? AND status = ?"
    )


_STATUS_INDEX = _TASK_COLUMNS.index("status")
_DEDUPE_KEY_INDEX = _TASK_COLUMNS.index("dedupe_key")
_CANCEL_INDEX = _TASK_COLUMNS.index("cancel_requested")
_JSON_INDEXES = tuple(i for i, n in enumerate(_TASK_COLUMNS) if n in _JSON_COLUMNS)
_TIME_INDEXES = tuple(i for i, n in enumerate(_TASK_COLUMNS) if n in _TIME_COLUMNS)


def _sqlite_task(row: Sequence[Any]) -> TaskRecord:
    """A `TaskRecord` from a raw row selected with `_SQLITE_SELECT_LIST`."""
    values = list(row)
    for index in _JSON_INDEXES:
        value = values[index]
        if value is not None:
            values[index] = _sqlite_json_load(value)
    return _sqlite_task_from_json(values)


def _claimed(rows: list[Any]) -> list[TaskRecord]:
    """Claimed rows (`_sqlite_rows_sql`) as records in claim order."""
    tasks = [_sqlite_task_from_json(r) for r in rows]
    tasks.sort(key=lambda t: (-t.priority, t.run_after, t.created_at))
    return tasks


def _sqlite_task_from_json(values: list[Any]) -> TaskRecord:
    """A `TaskRecord` from one row of `_sqlite_rows_sql`, or any stored row whose JSON columns
    are already decoded."""
    values[_STATUS_INDEX] = _STATUS_BY_VALUE[values[_STATUS_INDEX]]
    values[_CANCEL_INDEX] = bool(values[_CANCEL_INDEX])
    for index in _TIME_INDEXES:
        value = values[index]
        if value is not None:
            values[index] = _sqlite_time_load(value)
    return TaskRecord.from_values(values)


_STATUS_BY_VALUE = {s.value: s for s in TaskStatus}


@functools.lru_cache(maxsize=4096)
def _sqlite_time_load(text: str) -> datetime:
    """A stored time as an aware UTC datetime. Cached: the rows of one claim or one batch
    share most of their times (created together, claimed together), and datetimes are
    immutable."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def _sqlite_finish_params(outcome: Outcome, stamp: str) -> tuple[Any, ...]:
    """`_finish_params` as one row of `_sqlite_finish_dedupe` (without the `b_free` flag, one
    row of `_sqlite_finish_plain`); `stamp` is now as stored."""
    status, result, error, percent, message, processed, total, retry_at, finished = _finish_values(
        outcome
    )
    return (
        status,
        _sqlite_json(result),
        error,
        percent,
        message,
        processed,
        total,
        _sqlite_time(retry_at) if retry_at else stamp,
        stamp if finished else None,
        stamp,
        1 if finished else 0,
        outcome.task_id,
    )


class MySqlStore(TaskStore):
    """MariaDB/MySQL: `SELECT ... FOR UPDATE SKIP LOCKED`, then `UPDATE`, one transaction."""

    async def _claim_rows(
        self, conn: AsyncConnection, due: Select[Any], values: dict[str, Any]
    ) -> list[Any]:
        ids = list((await conn.execute(due.with_for_update(skip_locked=True))).scalars())
        if not ids:
            return []
        await conn.execute(update(T).where(T.c.id.in_(ids)).values(**values))
        return [r._mapping for r in (await conn.execute(select(T).where(T.c.id.in_(ids)))).all()]

    def _lock(self, query: Select[Any]) -> Select[Any]:
        return query.with_for_update(skip_locked=True)

    def _lock_wait(self, query: Select[Any]) -> Select[Any]:
        return query.with_for_update()

    def _duration_s(self) -> ColumnElement[Any]:
        micro = func.timestampdiff(literal_column("MICROSECOND"), T.c.started_at, T.c.finished_at)
        return micro / 1_000_000.0

    def _hour_bucket(self, column: ColumnElement[Any]) -> ColumnElement[Any]:
        return func.date_format(column, "%Y-%m-%d %H:00:00")


def make_store(
    engine: AsyncEngine, clock: Clock = utcnow, timeout: float | None = None
) -> TaskStore:
    """The store implementation for the engine's dialect.

    `timeout` bounds every transaction (`SYNCD_DB_TIMEOUT_S`): on MySQL a server that went
    silent, on SQLite the wait for the writer's queue and for another process's write lock.
    """
    if engine.dialect.name == "sqlite":
        return SqliteStore(engine, clock, busy_timeout_s=timeout or 5.0, timeout=timeout)
    return MySqlStore(engine, clock, timeout)


def _busy_ms(deadline: float | None, default_s: float) -> int:
    """The SQLite busy timeout for a transaction that must end by `deadline`."""
    if deadline is None:
        return int(default_s * 1000)
    return max(1, min(int(default_s * 1000), int((deadline - time.monotonic()) * 1000)))


def _free_bytes(path: str) -> int:
    """Free space for unprivileged writers on the file system holding `path`."""
    stats = os.statvfs(os.path.dirname(os.path.abspath(path)))
    return stats.f_bavail * stats.f_frsize


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    text_ = str(orig).strip()
    return text_.splitlines()[0] if text_ else type(orig).__name__


class _ProbeDone(Exception):
    """Ends the readiness probe's transaction (rolled back) once the write has been tried."""


class _ReadConnection:
    """`async with` a connection whose transaction begins deferred (never waits on writers)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._cm = engine.connect()

    async def __aenter__(self) -> AsyncConnection:
        conn = await self._cm.__aenter__()
        return await conn.execution_options(**READONLY)

    async def __aexit__(self, *exc: object) -> None:
        await self._cm.__aexit__(*exc)


def _claim_values(owner: str, now: datetime, lease_s: float) -> dict[str, Any]:
    """The columns a claim sets: running, next attempt, leased to `owner`."""
    return {
        "status": TaskStatus.RUNNING.value,
        "attempt": T.c.attempt + 1,
        "lease_owner": owner,
        "lease_expires_at": now + timedelta(seconds=lease_s),
        "started_at": now,
        "updated_at": now,
        "error": None,
        "progress": 0,
        "message": "",
        "processed_rows": 0,
    }


def _filter_clause(flt: TaskFilter) -> ColumnElement[bool]:
    clauses: list[ColumnElement[bool]] = []
    if flt.status is not None:
        clauses.append(T.c.status == flt.status.value)
    if flt.task_type is not None:
        clauses.append(T.c.task_type == flt.task_type)
    if flt.data_source_id is not None:
        clauses.append(T.c.data_source_id == flt.data_source_id)
    if flt.search:
        clauses.append(search_clause(flt.search))
    return and_(True, *clauses)


def search_clause(text: str) -> ColumnElement[bool]:
    """Tasks whose reference or id starts with `text`, or whose dedupe key does (ASCII case
    ignored, as both dialects' LIKE do). `%` and `_` in `text` are matched as themselves."""
    pattern = text.replace("!", "!!").replace("%", "!%").replace("_", "!_") + "%"
    return or_(
        T.c.reference.like(pattern.upper(), escape="!"),
        T.c.id.like(pattern.lower(), escape="!"),
        T.c.dedupe_key.like(pattern, escape="!"),
    )


def _progress_params(update_: ProgressUpdate) -> dict[str, Any]:
    return {
        "b_id": update_.task_id,
        "b_attempt": update_.attempt,
        "b_progress": update_.progress,
        "b_message": update_.message[:2000],
        "b_processed": update_.processed_rows,
        "b_total": update_.total_rows,
    }


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


def _finish_values(outcome: Outcome) -> tuple[Any, ...]:
    """What a finish writes, shared by `_finish_params` and `_sqlite_finish_params`: status,
    result, error, percent, message, processed, total, retry time, finished. A retry keeps its
    dedupe key held, an end frees it."""
    progress = outcome.progress
    status = outcome.status
    if progress is None:
        percent, message, processed, total = 0, "", 0, None
    else:
        percent = progress.progress
        message, processed, total = (
            progress.message[:2000],
            progress.processed_rows,
            progress.total_rows,
        )
    if status is TaskStatus.COMPLETED:
        percent = 100
    retry_at = naive(outcome.retry_at) if outcome.retry_at else None
    return (
        status.value,
        jsontext.finite(outcome.result),
        outcome.error,
        percent,
        message,
        processed,
        total,
        retry_at,
        status in FINISHED,
    )


def _finish_params(outcome: Outcome, now: datetime) -> dict[str, Any]:
    """Parameters of `_FINISH_STMT`."""
    status, result, error, percent, message, processed, total, retry_at, finished = _finish_values(
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


def _check_reportable(task: TaskRecord, report: ExternalReport) -> None:
    """Only a running task, and only its current attempt, takes reports."""
    if task.status.finished:
        raise InvalidState(f"task is already {task.status.value}; reports are no longer accepted")
    if task.status is not TaskStatus.RUNNING:
        raise InvalidState(
            f"task is {task.status.value}; claim it with GET /api/crontask before reporting"
        )
    if report.attempt is not None and report.attempt != task.attempt:
        raise InvalidState(
            f"task is at attempt {task.attempt}, the report is for attempt {report.attempt}"
        )


def _report_values(
    task: TaskRecord, report: ExternalReport, now: datetime, lease_s: float
) -> tuple[dict[str, Any], Outcome | None]:
    """The columns a report sets and, when it ends the task, the outcome."""
    values: dict[str, Any] = {"updated_at": now}
    if report.progress is not None:
        values["progress"] = report.progress
    if report.message is not None:
        values["message"] = report.message[:2000]
    if report.has_temp:
        values["temp"] = report.temp
    if report.status in (None, "running"):
        values["lease_expires_at"] = now + timedelta(seconds=lease_s)
        return values, None
    result = {"output": report.output} if report.has_output else None
    if report.status == "completed":
        status, error = TaskStatus.COMPLETED, None
        values["progress"] = 100
    else:
        status = TaskStatus.FAILED
        error = report.message or "the external worker reported a failure"
    values.update(
        status=status.value,
        result=result,
        error=error,
        finished_at=now,
        dedupe_active=None,
        lease_owner=None,
        lease_expires_at=None,
    )
    outcome = Outcome(task.id, task.attempt, status, status.value, result=result, error=error)
    return values, outcome
