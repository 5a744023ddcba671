"""The durable store of tasks: a contract, one complete implementation per backend, and the
connector every store writes and reads through.

    connector.py     Connector: the one read path and the one write path of each backend
                     (SqliteConnector, MySqlConnector), and the SQL that differs between them
    sqlite_writer.py the SQLite writer thread that the SQLite connector runs transactions on
    tasks.py         TaskStore: the contract the service, the engine and the API rely on
    shared.py        SqlTaskStore: what the SQL backends share (reads, transitions, leases)
    sqlite.py        SqliteTaskStore: the hot paths as plain SQL on the writer thread
    mysql.py         MySqlTaskStore: the hot paths in SQLAlchemy Core, SKIP LOCKED claims
    coalesce.py      lookups that arrive together answered by one query (GET of a task)
    external.py      the external-worker protocol (claims and reports of GET/PUT /api/crontask)
    callbacks.py     the completion-callback outbox
    statistics.py    statistics over the task table
    queries.py       statements and values the modules above share

The other stores (`schedule.books`, `schedule.schedules`, `schedule.datasources`,
`schedule.imports`) take a connector too; `schedule.stores.open_stores` builds them all on one.
docs/architecture.md says how to add a field, a store or a backend.
"""

from __future__ import annotations

from schedule.clock import Clock, utcnow
from schedule.store.connector import Connector, MySqlConnector, SqliteConnector, connect
from schedule.store.mysql import MySqlTaskStore
from schedule.store.sqlite import SqliteTaskStore
from schedule.store.tasks import TaskStore

__all__ = [
    "Connector",
    "MySqlConnector",
    "SqliteConnector",
    "TaskStore",
    "connect",
    "make_store",
]


def make_store(db: Connector, clock: Clock = utcnow) -> TaskStore:
    """The task store implementation for the connector's backend."""
    if isinstance(db, SqliteConnector):
        return SqliteTaskStore(db, clock)
    if isinstance(db, MySqlConnector):
        return MySqlTaskStore(db, clock)
    raise TypeError(f"no task store for the {db.name} backend")
