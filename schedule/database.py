"""Database engines: async for the daemon, sync for Alembic; SQLite tuning; schema checks."""

from __future__ import annotations

import asyncio
import errno
import logging
import re
import socket
import sqlite3
from enum import Enum
from pathlib import Path
from struct import error as struct_error
from typing import Any

from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import (
    DataError,
    DBAPIError,
    DisconnectionError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    StatementError,
)
from sqlalchemy.exc import TimeoutError as SaTimeout
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from config.settings import Settings
from schedule.exceptions import DatabaseUnreachable, SchemaError, UnsupportedDatabase

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
READONLY = {"syncd_readonly": True}
#: Execution option: the SQLite busy timeout (ms) of the write transaction about to begin.
BUSY_MS_OPTION = "syncd_busy_ms"


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


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL (absolute), or None for another database or `:memory:`."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database).absolute()


def missing_sqlite_file(url: str) -> str | None:
    """Why `serve` and `check-config` cannot open a SQLite database: its file does not exist
    (connecting would create an empty one, which only `syncd migrate` may do); else None."""
    path = sqlite_path(url)
    if path is None or path.exists():
        return None
    return f"no database at {path}: run `syncd migrate` first (or set SYNCD_DATABASE_URL)"


def prepare_sqlite_dir(url: str, state_dir: Path) -> None:
    """Before `migrate` creates a SQLite file: its folder must exist, except the state
    directory itself, which is syncd's own and is made (not its parents). A mistyped path is
    refused (`SchemaError`) instead of growing a tree of folders."""
    path = sqlite_path(url)
    if path is None or path.parent.is_dir():
        return
    folder = path.parent
    if folder == state_dir.absolute() and folder.parent.is_dir():
        folder.mkdir(exist_ok=True)
        return
    raise SchemaError(
        f"directory {folder} does not exist: create it first, or fix SYNCD_DATABASE_URL"
        " (migrate creates the database file, not the folders above it)"
    )


def mysql_connect_args(timeout: float, blocking: bool = False) -> dict[str, Any]:
    """Connect (and, for PyMySQL, read/write) timeouts so a dead or silent server fails fast.

    aiomysql has no read timeout; the daemon bounds its statements with `asyncio.timeout`
    instead (see `TaskStore`).
    """
    seconds = max(1, round(timeout))
    args: dict[str, Any] = {"connect_timeout": seconds}
    if blocking:
        args.update(read_timeout=seconds, write_timeout=seconds)
    return args


def create_engine(settings: Settings, **kwargs: Any) -> AsyncEngine:
    """The daemon's async engine, with dialect tuning and bounded waits."""
    url = async_url(settings.database_url)
    timeout = settings.db_timeout_s
    if url.get_backend_name() == "sqlite":
        # No reset-on-return ROLLBACK: every use of a connection ends its own transaction
        # (`begin()` commits or rolls back, `connect()` rolls back on close), and on
        # aiosqlite each extra statement is a round trip to the connection's thread.
        engine = create_async_engine(
            url,
            connect_args={"timeout": timeout},
            pool_size=8,
            max_overflow=8,
            pool_reset_on_return=None,
            **kwargs,
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
        connect_args=mysql_connect_args(timeout),
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
        options = conn.get_execution_options()
        if options.get("syncd_readonly", False):
            conn.exec_driver_sql("BEGIN")
            return
        # A write transaction waits for the lock as long as its caller has left (the store
        # sets BUSY_MS_OPTION), else the configured timeout; set only when it changes.
        wanted = int(options.get(BUSY_MS_OPTION, busy_timeout_ms))
        if conn.info.get(BUSY_MS_OPTION, busy_timeout_ms) != wanted:
            conn.exec_driver_sql(f"PRAGMA busy_timeout={wanted}")
            conn.info[BUSY_MS_OPTION] = wanted
        conn.exec_driver_sql("BEGIN IMMEDIATE")


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


async def check_database(engine: AsyncEngine, database_url: str, limit_s: float) -> None:
    """The start-up check: reachable, a supported server, migrated to this syncd's head.

    Raises `DatabaseUnreachable`, `UnsupportedDatabase` or `SchemaError`, each with one line
    that names the problem (the CLI prints it and exits non-zero).
    """
    missing = await asyncio.to_thread(missing_sqlite_file, database_url)
    if missing is not None:
        raise SchemaError(missing)
    try:
        async with asyncio.timeout(limit_s):
            if not is_sqlite(database_url):
                async with engine.connect() as conn:
                    version = (await conn.exec_driver_sql("SELECT VERSION()")).scalar_one()
                check_server_version(str(version))
            await check_schema(engine, database_url)
    except (SchemaError, UnsupportedDatabase):
        raise
    except TimeoutError:
        raise DatabaseUnreachable(describe_db_error(_NoAnswer(limit_s), database_url)) from None
    except Exception as exc:  # any driver or protocol failure becomes one line
        raise DatabaseUnreachable(describe_db_error(exc, database_url)) from None


class _NoAnswer(TimeoutError):
    def __init__(self, timeout: float) -> None:
        super().__init__(f"no answer within {timeout:g} s")


_VERSION = re.compile(r"^(?:5\.5\.5-)?(\d+)\.(\d+)(?:\.(\d+))?")
NEEDED = "syncd needs MariaDB >= 10.6 or MySQL >= 8.0 (for SELECT ... FOR UPDATE SKIP LOCKED)"


def server_version_problem(version: str) -> str | None:
    """Why a server reporting `version` (SELECT VERSION()) cannot run syncd, or None."""
    match = _VERSION.match(version.strip())
    if match is None:
        return f"cannot read the server version {version!r}; {NEEDED}"
    numbers = (int(match[1]), int(match[2]))
    kind = "MariaDB" if "mariadb" in version.lower() else "MySQL"
    minimum = (10, 6) if kind == "MariaDB" else (8, 0)
    if numbers < minimum:
        shown = ".".join(g for g in match.groups() if g is not None)
        return f"{kind} {shown} is too old; {NEEDED}"
    return None


def check_server_version(version: str) -> None:
    """Raise `UnsupportedDatabase` for a server without `SKIP LOCKED`."""
    problem = server_version_problem(version)
    if problem is not None:
        raise UnsupportedDatabase(problem)


# PyMySQL/MySQL client error codes worth a plain-words message.
_ACCESS_DENIED, _DB_ACCESS_DENIED, _UNKNOWN_DB = 1045, 1044, 1049
_CANT_CONNECT, _LOST_CONNECTION = 2003, 2013


def describe_db_error(exc: BaseException, database_url: str) -> str:
    """One line naming what went wrong with the database (no traceback, no password)."""
    url = make_url(database_url)
    where = url.render_as_string(hide_password=True)
    return f"database {where}: {_explain(exc, url)}"


def _explain(exc: BaseException, url: URL) -> str:
    orig = getattr(exc, "orig", None) or exc
    text = _first_line(orig)
    if url.get_backend_name() == "sqlite":
        return text
    address = f"{url.host or 'localhost'}:{url.port or 3306}"
    args: tuple[Any, ...] = tuple(getattr(orig, "args", ()))
    code = args[0] if args and isinstance(args[0], int) else None
    if code is not None and len(args) > 1:
        text = str(args[1]).strip().splitlines()[0]
    if code == _ACCESS_DENIED:
        return f"access denied for user {url.username!r}: wrong user name or password ({text})"
    if code == _DB_ACCESS_DENIED:
        return f"user {url.username!r} may not use database {url.database!r} ({text})"
    if code == _UNKNOWN_DB:
        return f"unknown database {url.database!r} on {address}: create it, then run syncd migrate"
    if code == _CANT_CONNECT:
        return f"cannot connect to {address}: {_connect_reason(orig, text)}"
    if isinstance(orig, TimeoutError) or code == _LOST_CONNECTION:
        return (
            f"no MySQL/MariaDB handshake from {address} ({text}): is it a MySQL-compatible "
            "server, and reachable?"
        )
    if _is_protocol_error(orig):
        return f"{address} does not speak the MySQL protocol: not a MySQL/MariaDB server ({text})"
    return text


def _connect_reason(exc: BaseException, text: str) -> str:
    causes = [exc]
    while causes[-1].__cause__ is not None or causes[-1].__context__ is not None:
        nxt = causes[-1].__cause__ or causes[-1].__context__
        if nxt is None or nxt in causes:
            break
        causes.append(nxt)
    kinds = tuple(type(c) for c in causes)
    lowered = " ".join(str(c) for c in causes).lower() + " " + text.lower()
    if any(issubclass(k, socket.gaierror) for k in kinds) or "name or service not known" in lowered:
        return "unknown host name (typo in the URL?)"
    if any(issubclass(k, ConnectionRefusedError) for k in kinds) or "refused" in lowered:
        return "connection refused (nothing listens on that port: wrong port, or server down)"
    if any(issubclass(k, TimeoutError) for k in kinds) or "timed out" in lowered:
        return "timed out (wrong host, or a firewall drops the packets)"
    return text


def _is_protocol_error(exc: BaseException) -> bool:
    if type(exc).__module__.startswith(("pymysql", "aiomysql")) and (
        "packet" in str(exc).lower() or type(exc).__name__ == "InternalError"
    ):
        return True
    return isinstance(exc, (struct_error, IndexError, UnicodeDecodeError, EOFError))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# ---- what a failed statement means for the request that met it --------------------------------


class DbFailure(Enum):
    """How a database error is answered: the request's fault, a full disk, or an outage."""

    CONFLICT = "conflict"  # a constraint refused the row (unique key, not null, foreign key)
    INVALID = "invalid"  # a value the column cannot hold
    FULL = "full"  # the database or its disk is full
    UNAVAILABLE = "unavailable"  # unreachable, or no answer (locked, busy) within the timeout


# MySQL/MariaDB codes: a value the column cannot take (answered 422), a full table or disk.
_MYSQL_INVALID = frozenset({1264, 1292, 1366, 1367, 1406, 1690, 3140, 3141, 3143, 3146, 4025})
_MYSQL_FULL = frozenset({1021, 1114})
_FULL_TEXT = ("database or disk is full", "no space left", "errcode: 28", "error 28 ", "disk full")
_NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})


def classify_db_error(exc: BaseException) -> DbFailure | None:
    """What `exc`, raised while serving a request, says about it; None when it is not a
    database failure (then it is a bug, answered 500)."""
    if isinstance(exc, IntegrityError):
        return DbFailure.CONFLICT
    if is_full(exc):
        return DbFailure.FULL
    if isinstance(exc, DataError):
        return DbFailure.INVALID
    if isinstance(exc, StatementError) and not isinstance(exc, DBAPIError):
        return DbFailure.INVALID  # a bound value the driver could not convert
    code = _mysql_code(exc)
    if isinstance(exc, OperationalError) and code in _MYSQL_INVALID:
        return DbFailure.INVALID
    if isinstance(exc, OperationalError | InterfaceError | DisconnectionError | SaTimeout):
        return DbFailure.UNAVAILABLE
    if isinstance(exc, DBAPIError) and (exc.connection_invalidated or _is_mysql_client(exc)):
        return DbFailure.UNAVAILABLE
    if isinstance(exc, TimeoutError | ConnectionError):
        return DbFailure.UNAVAILABLE
    return None


def is_full(exc: BaseException) -> bool:
    """True when `exc` says the database or its disk is out of space (SQLITE_FULL, MySQL 1114
    "table is full" or 1021 "disk full", ENOSPC)."""
    if isinstance(exc, OSError) and exc.errno in _NO_SPACE:
        return True
    if _mysql_code(exc) in _MYSQL_FULL:
        return True
    orig = getattr(exc, "orig", None)
    if isinstance(orig, sqlite3.Error) and getattr(orig, "sqlite_errorcode", None) == _SQLITE_FULL:
        return True
    text = str(orig if orig is not None else exc).lower()
    return isinstance(exc, DBAPIError | OSError) and any(t in text for t in _FULL_TEXT)


_SQLITE_FULL = 13


def _mysql_code(exc: BaseException) -> int | None:
    args = getattr(getattr(exc, "orig", None), "args", ())
    return args[0] if args and isinstance(args[0], int) else None


def _is_mysql_client(exc: DBAPIError) -> bool:
    """A client-side (2000-range) MySQL error: the connection, not the statement, failed."""
    code = _mysql_code(exc)
    return code is not None and 2000 <= code < 3000
