"""Every store of the daemon, built once at start-up on one connector and one clock.

The app composes a `Stores` when it starts (`controllers/app.py`) and hands it down: the API
routes read what they need from it, and the engine gives it to each handler through its
`TaskContext`, so no handler builds a store of its own. Each store reads and writes through the
same connector (`schedule.store.Connector`), so each has the configured `SYNCD_DB_TIMEOUT_S`
and write path, and the same clock.
"""

from __future__ import annotations

from dataclasses import dataclass

from schedule.books import BookStore
from schedule.clock import Clock, utcnow
from schedule.datasources import DataSourceStore
from schedule.imports import ImportStore
from schedule.nodes import NodeStore
from schedule.schedules import ScheduleStore
from schedule.schedules_sqlite import SqliteScheduleStore
from schedule.store import Connector, SqliteConnector, TaskStore, make_store


@dataclass(frozen=True)
class Stores:
    """The stores of one database."""

    tasks: TaskStore
    books: BookStore
    data_sources: DataSourceStore
    imports: ImportStore
    schedules: ScheduleStore
    nodes: NodeStore


def schedule_store(db: Connector, clock: Clock = utcnow) -> ScheduleStore:
    """The schedule store for the connector's backend: on SQLite its claim of due fires runs
    on the writer thread (`schedule.schedules_sqlite`)."""
    if isinstance(db, SqliteConnector):
        return SqliteScheduleStore(db, clock)
    return ScheduleStore(db, clock)


#: How long a daemon counts as alive after its last heartbeat: three heartbeats, each a third
#: of the lease (`SYNCD_LEASE_S`, 30 s by default).
ALIVE_S = 30.0


def open_stores(db: Connector, clock: Clock = utcnow, *, alive_s: float = ALIVE_S) -> Stores:
    """Build every store on the connector `db` (see `schedule.store.connect`); a daemon is
    alive for `alive_s` after its last heartbeat (the daemon passes its lease)."""
    return Stores(
        tasks=make_store(db, clock),
        books=BookStore(db, clock),
        data_sources=DataSourceStore(db, clock),
        imports=ImportStore(db, clock),
        schedules=schedule_store(db, clock),
        nodes=NodeStore(db, alive_s, clock),
    )
