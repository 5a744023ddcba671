"""Every store of the daemon, built once at start-up on one database and one clock.

The app composes a `Stores` when it starts (`controllers/app.py`) and hands it down: the API
routes read what they need from it, and the engine gives it to each handler through its
`TaskContext`, so no handler builds a store of its own (and each store has the configured
timeout and clock).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from schedule.books import BookStore
from schedule.datasources import DataSourceStore
from schedule.imports import ImportStore
from schedule.schedules import ScheduleStore
from schedule.store import Clock, TaskStore, make_store, utcnow


@dataclass(frozen=True)
class Stores:
    """The stores of one database."""

    tasks: TaskStore
    books: BookStore
    data_sources: DataSourceStore
    imports: ImportStore
    schedules: ScheduleStore


def open_stores(db: AsyncEngine, clock: Clock = utcnow, timeout: float | None = None) -> Stores:
    """Build every store on `db`; `timeout` is `SYNCD_DB_TIMEOUT_S` (see `make_store`)."""
    return Stores(
        tasks=make_store(db, clock, timeout=timeout),
        books=BookStore(db, clock),
        data_sources=DataSourceStore(db, clock),
        imports=ImportStore(db, clock, busy_timeout_s=timeout or 5.0),
        schedules=ScheduleStore(db, clock),
    )
