"""The statistics' rollups: finished tasks per hour of their finish, task type and outcome.

Every transition that finishes a task adds it here in the same transaction: the engine's
finish (plain SQL on SQLite's writer thread, SQLAlchemy Core on MySQL), a cancel of a pending
task, a rescue that gives up, an external worker's last report. A row counts the tasks
(`tasks`), those of them that had started (`timed`) and the sum of their run times in seconds
(`duration_s`, start to finish). Statistics over any window read a few hundred rows instead of
every task, and deleting old tasks (retention) leaves their counts. Migration 0009 fills the
table for tasks that finished before it (`fill_statements`).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Executable, func, literal_column, select
from sqlalchemy.dialects import mysql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from schedule.models import sync_task_rollups, sync_tasks
from schedule.task import FINISHED
from schedule.upsert import values_list

R = sync_task_rollups
T = sync_tasks
FINISHED_VALUES = sorted(s.value for s in FINISHED)
#: (hour, task_type, outcome, tasks, timed, duration_s): one row's increments
Increment = tuple[datetime, str, str, int, int, float]
#: (task_type, final status, started_at or None): a task that finished, naive UTC
Ended = tuple[str, str, datetime | None]


def hour_of(moment: datetime) -> datetime:
    """The hour a time falls in (the rollups' key)."""
    return moment.replace(minute=0, second=0, microsecond=0)


def increments(now: datetime, ended: Iterable[Ended]) -> list[Increment]:
    """The rollup increments of tasks that finished at `now` (naive UTC), grouped by type and
    outcome; statuses that do not finish a task (a retry) are left out."""
    groups: dict[tuple[str, str], list[Any]] = {}
    for task_type, status, started in ended:
        if status not in FINISHED_VALUES:
            continue
        group = groups.setdefault((task_type, status), [0, 0, 0.0])
        group[0] += 1
        if started is not None:
            group[1] += 1
            group[2] += max(0.0, (now - started).total_seconds())
    hour = hour_of(now)
    return [(hour, t, s, n, timed, d) for (t, s), (n, timed, d) in groups.items()]


async def add(conn: AsyncConnection, rows: list[Increment]) -> None:
    """Add increments in the caller's write transaction (SQLAlchemy, either dialect)."""
    if not rows:
        return
    values = [
        {"hour": h, "task_type": t, "outcome": o, "tasks": n, "timed": c, "duration_s": d}
        for h, t, o, n, c, d in rows
    ]
    if conn.dialect.name == "sqlite":
        lite = sqlite.insert(R).values(values)
        stmt: Any = lite.on_conflict_do_update(
            index_elements=[R.c.hour, R.c.task_type, R.c.outcome],
            set_={
                "tasks": R.c.tasks + lite.excluded.tasks,
                "timed": R.c.timed + lite.excluded.timed,
                "duration_s": R.c.duration_s + lite.excluded.duration_s,
            },
        )
    else:
        my = mysql.insert(R).values(values)
        stmt = my.on_duplicate_key_update(
            tasks=R.c.tasks + my.inserted.tasks,
            timed=R.c.timed + my.inserted.timed,
            duration_s=R.c.duration_s + my.inserted.duration_s,
        )
    await conn.execute(stmt)


@functools.cache
def upsert_sql(rows: int) -> str:
    """The same on a plain `sqlite3` connection (the writer thread), for `rows` increments
    whose hour is written as SQLAlchemy's SQLite `DateTime` writes it."""
    return (
        "INSERT INTO sync_task_rollups (hour, task_type, outcome, tasks, timed, duration_s) "
        + values_list(rows, 6)
        + " ON CONFLICT (hour, task_type, outcome) DO UPDATE SET "
        "tasks = tasks + excluded.tasks, timed = timed + excluded.timed, "
        "duration_s = duration_s + excluded.duration_s"
    )


def fill_statements(dialect: str) -> list[Executable]:
    """The statements that count every finished task in the table into empty rollups (the
    migration runs them, and the read benchmark after it writes tasks directly), for a
    SQLAlchemy dialect's name. Statements, not a function that runs them: the migration
    executes them itself."""
    if dialect == "sqlite":
        hour: Any = func.strftime("%Y-%m-%d %H:00:00.000000", T.c.finished_at)
        seconds: Any = (func.julianday(T.c.finished_at) - func.julianday(T.c.started_at)) * 86400.0
    else:
        hour = func.date_format(T.c.finished_at, "%Y-%m-%d %H:00:00")
        seconds = (
            func.timestampdiff(literal_column("MICROSECOND"), T.c.started_at, T.c.finished_at)
            / 1_000_000.0
        )
    bucket = hour.label("bucket")
    query = (
        select(
            bucket,
            T.c.task_type,
            T.c.status,
            func.count(),
            func.count(T.c.started_at),
            func.coalesce(func.sum(seconds), 0.0),
        )
        .where(T.c.status.in_(FINISHED_VALUES), T.c.finished_at.is_not(None))
        .group_by(literal_column("bucket"), T.c.task_type, T.c.status)
    )
    columns = ["hour", "task_type", "outcome", "tasks", "timed", "duration_s"]
    return [R.delete(), R.insert().from_select(columns, query)]
