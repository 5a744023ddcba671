"""Database engines: async for the daemon, sync for Alembic; SQLite tuning; schema checks."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from config.settings import Settings
from schedule.exceptions import SchemaError

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
READONLY = {"syncd_readonly": True}


def is_sqlite(url: str | URL) -> bool:
    """True for a SQLite URL, whatever its driver."""
    return make_url(url).get_backend_name() == "sqlite"


def async_url(url: str) -> URL:
    """The plain URL of the settings with the async driver syncd uses for it."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return parsed.set(drivername="sqlite+aiosqlite")
    return parsed.set(drivername="mysql+aiomysql")


def sync_url(url: str) -> URL:
    """The plain URL with the blocking driver (Alembic, benchmarks)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return parsed.set(drivername="sqlite+pysqlite")
    return parsed.set(drivername="mysql+pymysql")


def ensure_sqlite_dir(url: str) -> None:
    """Create the folder of a SQLite file so a fresh state directory just works."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)


def create_engine(settings: Settings, **kwargs: Any) -> AsyncEngine:
    """The daemon's async engine, with dialect tuning and bounded waits."""
    url = async_url(settings.database_url)
    timeout = settings.db_timeout_s
    if url.get_backend_name() == "sqlite":
        engine = create_async_engine(
            url, connect_args={"timeout": timeout}, pool_size=8, max_overflow=8, **kwargs
        )
        install_sqlite_tuning(engine.sync_engine, busy_timeout_ms=int(timeout * 1000))
        return engine
    return create_async_engine(
        url,
        pool_size=max(4, settings.concurrency + 4),
        max_overflow=8,
        pool_timeout=timeout,
        pool_recycle=1800,
        pool_pre_ping=True,
        isolation_level="READ COMMITTED",  # claims lock only the rows they take
        connect_args={"connect_timeout": max(1, int(timeout))},
        **kwargs,
    )


def install_sqlite_tuning(sync_engine: Any, busy_timeout_ms: int) -> None:
    """WAL, NORMAL sync, busy timeout, and `BEGIN IMMEDIATE` for write transactions.

    pysqlite's own transaction handling is switched off so that the `begin` event decides:
    write transactions take the write lock up front (no lock-upgrade failures), readonly ones
    (execution option `syncd_readonly`) begin deferred and never wait for writers.
    """

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        readonly = conn.get_execution_options().get("syncd_readonly", False)
        conn.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")


def alembic_config(database_url: str) -> AlembicConfig:
    """Alembic configuration pointing at the packaged migrations."""
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", sync_url(database_url).render_as_string(False))
    cfg.attributes["configure_logging"] = False
    return cfg


def head_revision(database_url: str) -> str | None:
    """The newest migration shipped with this version of syncd."""
    return ScriptDirectory.from_config(alembic_config(database_url)).get_current_head()


async def check_schema(engine: AsyncEngine, database_url: str) -> None:
    """Refuse to run on an unmigrated or outdated database (raises `SchemaError`)."""
    head = await asyncio.to_thread(head_revision, database_url)  # reads the scripts from disk
    async with engine.connect() as conn:
        conn = await conn.execution_options(**READONLY)
        current = await conn.run_sync(lambda c: MigrationContext.configure(c).get_current_heads())
    if not current:
        raise SchemaError("database is not migrated: run `syncd migrate` first")
    if tuple(current) != (head,):
        raise SchemaError(
            f"database schema is at {', '.join(current)}, this syncd needs {head}: "
            "run `syncd migrate` first"
        )


def describe_db_error(exc: BaseException, database_url: str) -> str:
    """One line naming what went wrong with the database (no traceback, no password)."""
    where = make_url(database_url).render_as_string(hide_password=True)
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
    return f"database {where}: {text}"
