"""Read-only connections to the databases of `sql` sources, and the checks of their queries.

A source is read, never written, and the guarantee does not rest on the query text alone:

* SQLite: the file is opened through a `file:...?mode=ro` URI (a missing file is an error, never
  created), with `PRAGMA query_only` on and an authorizer that allows reading only: SELECT,
  reading columns, functions (but `load_extension` and the like) and the pragmas that describe
  tables. DML, DDL, ATTACH (and so `VACUUM INTO`, which attaches its output), temporary tables
  and writing pragmas (`query_only = 0` among them) fail when the statement is prepared.
* MariaDB/MySQL: a PyMySQL connection without multi-statements or `LOCAL INFILE`, with connect,
  read and write timeouts, in a session whose transactions are READ ONLY, inside an explicit
  `START TRANSACTION READ ONLY`, with the server's statement time limit set. The server refuses
  DML and DDL there (tested); what it would still let through (`SELECT ... INTO OUTFILE`,
  `SET`, `COMMIT`, `FLUSH`, `ANALYZE`, `KILL`...) is refused by `statement_problem`, which
  admits one SELECT (or WITH, VALUES) statement.

And a source may not be syncd's own database: not the same SQLite file (`same_database`
compares files after symlinks, hard links included), not the same server and schema, and not any
database whose connection can see syncd's `sync_tasks` table (`check_not_syncd`): on MariaDB
that refuses a user that could read syncd's schema from another one.
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pymysql
from sqlalchemy import create_engine
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from engine.sources.exceptions import SourceError

MYSQL_QUERY_OPTIONS = frozenset({"charset", "ssl_ca", "ssl_verify_cert", "ssl_verify_identity"})
"""The only `?key=value` options a MySQL source URL may carry (others could turn on multiple
statements, `LOCAL INFILE`, an init command or an options file of this machine)."""
FIRST_WORDS = frozenset({"select", "with", "values"})
_WRITING_WORDS = re.compile(r"\b(outfile|dumpfile)\b", re.I)
_EXECUTABLE_COMMENT = re.compile(r"/\*M?!", re.I)
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")
_LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})
_READ_PRAGMAS = frozenset(
    {
        "table_info",
        "table_xinfo",
        "table_list",
        "index_list",
        "index_info",
        "index_xinfo",
        "foreign_key_list",
        "database_list",
        "collation_list",
    }
)
"""Pragmas that describe tables (SQLAlchemy's reflection reads them)."""
_QUERY_PRAGMAS = frozenset({"read_uncommitted", "encoding", "user_version", "schema_version"})
"""Pragmas allowed only in their reading form, without a value (SQLAlchemy reads the first).
Every other pragma is refused, `query_only = 0` and `writable_schema = 1` among them."""
_DENIED_FUNCTIONS = frozenset({"load_extension", "readfile", "writefile", "edit", "fts3_tokenizer"})
_READING = frozenset({sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_RECURSIVE})
_CANT_CONNECT = 2003
_PROGRESS_STEPS = 10_000
"""SQLite virtual machine steps between two looks at the deadline (well under 1 ms)."""
OWN_MARKER = "sync_tasks"
"""The table whose presence marks a database as syncd's."""


class SqlSourceError(SourceError):
    """The SQL source could not be read."""

    code = "sql_source"


class SqlUnavailableError(SqlSourceError):
    """The SQL source could not be reached, or did not answer in time; a later attempt may."""

    code = "sql_unavailable"


@dataclass(frozen=True)
class SqlTimeouts:
    """Bounds on a source's waits: connecting (and SQLite's busy wait), and every read."""

    connect_s: float
    read_s: float


@dataclass
class Deadline:
    """How long a source may stay silent: `reset()` whenever it has answered (connected, sent
    a batch). SQLite, which has no socket to time out, aborts a statement once it is `passed()`
    (a progress handler asks); MySQL's socket read timeout does the same there."""

    seconds: float
    at: float = field(init=False)

    def __post_init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Start the wait again."""
        self.at = time.monotonic() + self.seconds

    def passed(self) -> bool:
        """Whether the source has been silent for longer than allowed."""
        return time.monotonic() > self.at


def is_sqlite(url: URL) -> bool:
    """Whether the URL names a SQLite database."""
    return url.get_backend_name() == "sqlite"


def url_problem(url: URL) -> str | None:
    """What is wrong with a source URL beyond its syntax, or None."""
    if is_sqlite(url):
        if url.query:
            return "a SQLite source URL takes no ?options (it is always opened read-only)"
        if not url.database or url.database == ":memory:" or url.database.startswith("file:"):
            return "give the SQLite file as an absolute path: sqlite:////path/to/file.db"
        if not Path(url.database).is_absolute():
            return "the SQLite file must be an absolute path: sqlite:////path/to/file.db"
        return None
    if not url.host:
        return "the URL has no host"
    unknown = sorted(set(url.query) - MYSQL_QUERY_OPTIONS)
    if unknown:
        allowed = ", ".join(sorted(MYSQL_QUERY_OPTIONS))
        return f"option(s) {', '.join(unknown)} are not allowed; only {allowed}"
    return None


def statement_problem(query: str, sqlite: bool) -> str | None:
    """Why a source query is refused (not one SELECT, WITH or VALUES statement), or None.

    Conservative: a query naming OUTFILE or DUMPFILE anywhere, or holding a MySQL executable
    comment (`/*! ... */`), is refused even inside a string. Everything else the drivers enforce
    too (one statement per execute) and the read-only connection below it.
    """
    if _EXECUTABLE_COMMENT.search(query):
        return "MySQL executable comments (/*! ... */) are not allowed"
    if found := _WRITING_WORDS.search(query):
        return f"{found.group(0).upper()} is not allowed: a source query only reads"
    words, rest = _scan(query, sqlite)
    if rest is None:
        return "unterminated quote or comment"
    if rest.strip():
        return "one statement only: nothing may follow ';'"
    if not words:
        return "the query is empty"
    if words[0].lower() not in FIRST_WORDS:
        return f"only SELECT (or WITH ... SELECT, VALUES) statements are allowed, not {words[0]!r}"
    return None


def _scan(query: str, sqlite: bool) -> tuple[list[str], str | None]:
    """The words of a query outside quotes and comments, and what follows its first `;` without
    comments (None when a quote or comment does not end)."""
    words: list[str] = []
    closing = {"'": "'", '"': '"', "`": "`"} | ({"[": "]"} if sqlite else {})
    i, n = 0, len(query)
    while i < n:
        c = query[i]
        if c in closing:
            end = _string_end(query, i, closing[c], backslash=not sqlite and c in "'\"")
            if end < 0:
                return words, None
            i = end + 1
        elif query.startswith("/*", i):
            end = query.find("*/", i + 2)
            if end < 0:
                return words, None
            i = end + 2
        elif _line_comment(query, i, sqlite):
            end = query.find("\n", i)
            i = n if end < 0 else end + 1
        elif c == ";":
            return words, _without_comments(query[i + 1 :], sqlite)
        elif match := _WORD.match(query, i):
            words.append(match.group(0))
            i = match.end()
        else:
            i += 1
    return words, ""


def _string_end(query: str, start: int, close: str, *, backslash: bool) -> int:
    i = start + 1
    while i < len(query):
        if backslash and query[i] == "\\":
            i += 2
            continue
        if query[i] == close:
            if query.startswith(close * 2, i) and close != "]":
                i += 2
                continue
            return i
        i += 1
    return -1


def _line_comment(query: str, i: int, sqlite: bool) -> bool:
    if query.startswith("--", i):
        # MySQL: only "-- " followed by a space or control character starts a comment
        # ("1--1" is one minus minus one).
        after = query[i + 2 : i + 3]
        return sqlite or after == "" or after <= " "
    return not sqlite and query[i] == "#"


def _without_comments(text: str, sqlite: bool) -> str:
    out, i, n = [], 0, len(text)
    while i < n:
        if text.startswith("/*", i):
            end = text.find("*/", i + 2)
            i = n if end < 0 else end + 2
        elif _line_comment(text, i, sqlite):
            end = text.find("\n", i)
            i = n if end < 0 else end + 1
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


# ---- own database --------------------------------------------------------------------------


def same_database(source: URL, own: URL) -> bool:
    """Whether a source URL names syncd's own database: the same SQLite file (after symlinks,
    hard links too; blocking), or the same MySQL server, port and schema."""
    if is_sqlite(source) != is_sqlite(own):
        return False
    if is_sqlite(source):
        if not source.database or not own.database:
            return False
        try:
            return os.path.samefile(source.database, own.database)
        except OSError:
            return os.path.realpath(source.database) == os.path.realpath(own.database)
    return _server(source) == _server(own) and (source.database or "") == (own.database or "")


def _server(url: URL) -> tuple[str, int]:
    host = (url.host or "localhost").lower().strip("[]")
    return ("loopback" if host in _LOOPBACK else host, url.port or 3306)


def check_not_syncd(conn: Connection, shown: str) -> None:
    """Refuse a source connection that can see a `sync_tasks` table: syncd's own database, or
    (MySQL) a user that can read some syncd's schema."""
    if conn.dialect.name == "sqlite":
        query = "SELECT 'main' FROM sqlite_master WHERE type = 'table' AND lower(name) = ?"
        found = conn.exec_driver_sql(query, (OWN_MARKER,)).scalar()
    else:
        query = "SELECT table_schema FROM information_schema.tables WHERE table_name = %s LIMIT 1"
        found = conn.exec_driver_sql(query, (OWN_MARKER,)).scalar()
    if found is not None:
        where = "its database" if found == "main" else f"schema {found!r}"
        raise SqlSourceError(
            f"{shown}: {where} holds syncd's {OWN_MARKER} table; a source may not read syncd's"
            " own database (give the source a database user that cannot read it)"
        )


# ---- connections ----------------------------------------------------------------------------


@contextlib.contextmanager
def read_only(
    url: URL,
    timeouts: SqlTimeouts,
    own: URL,
    shown: str,
    query: str | None = None,
    deadline: Deadline | None = None,
) -> Iterator[Connection]:
    """A read-only SQLAlchemy connection to a source, checked not to be syncd's, for `query`
    (checked too, when given) or a table (blocking). The caller resets `deadline` (by default
    one of `timeouts.read_s`) as rows arrive."""
    deadline = deadline or Deadline(timeouts.read_s)
    problem = url_problem(url)
    if problem is not None:
        raise SqlSourceError(f"{shown}: {problem}")
    if same_database(url, own):
        raise SqlSourceError(f"{shown} is syncd's own database; a source may not read it")
    if query is not None and (problem := statement_problem(query, sqlite=is_sqlite(url))):
        raise SqlSourceError(f"{shown}: query refused: {problem}")
    if is_sqlite(url):
        assert url.database is not None
        path = url.database

        def creator() -> Any:
            return _sqlite(path, timeouts.connect_s, shown, deadline)

        engine = create_engine("sqlite+pysqlite://", creator=creator, poolclass=NullPool)
    else:

        def creator() -> Any:
            return _mysql(url, timeouts, shown)

        engine = create_engine("mysql+pymysql://", creator=creator, poolclass=NullPool)
    try:
        try:
            conn = engine.connect()
        except SQLAlchemyError as exc:
            raise SqlUnavailableError(f"cannot connect to {shown}: {first_line(exc)}") from None
        with conn:
            if not is_sqlite(url):
                conn.exec_driver_sql("START TRANSACTION READ ONLY")
            check_not_syncd(conn, shown)
            deadline.reset()
            yield conn
    finally:
        engine.dispose()


def _sqlite(path: str, busy_s: float, shown: str, deadline: Deadline) -> sqlite3.Connection:
    real = os.path.realpath(path)
    if not os.path.isfile(real):
        raise SqlSourceError(f"{shown}: no such SQLite file (a source is never created)")
    conn = sqlite3.connect(f"file:{quote(real, safe='/')}?mode=ro", uri=True, timeout=busy_s)
    try:
        conn.execute("PRAGMA query_only = ON")
        conn.set_authorizer(_authorize)
        conn.set_progress_handler(deadline.passed, _PROGRESS_STEPS)
    except BaseException:
        conn.close()
        raise
    return conn


def _authorize(action: int, arg1: str | None, arg2: str | None, *_: object) -> int:
    """sqlite3 authorizer of source connections: reading only (see the module docstring)."""
    if action in _READING:
        return sqlite3.SQLITE_OK
    if action == sqlite3.SQLITE_FUNCTION:
        denied = (arg2 or "").lower() in _DENIED_FUNCTIONS
        return sqlite3.SQLITE_DENY if denied else sqlite3.SQLITE_OK
    if action == sqlite3.SQLITE_PRAGMA:
        name = (arg1 or "").lower()
        if name in _READ_PRAGMAS or (name in _QUERY_PRAGMAS and arg2 is None):
            return sqlite3.SQLITE_OK
    return sqlite3.SQLITE_DENY


def _mysql(url: URL, timeouts: SqlTimeouts, shown: str) -> Any:
    query = dict(url.query)
    options: dict[str, Any] = {}
    if "ssl_ca" in query:
        options["ssl_ca"] = str(query["ssl_ca"])
    for flag in ("ssl_verify_cert", "ssl_verify_identity"):
        if flag in query:
            options[flag] = str(query[flag]).lower() in ("1", "true", "yes")
    try:
        conn = pymysql.connect(
            host=url.host,
            port=url.port or 3306,
            user=url.username or "",
            password=url.password or "",
            database=url.database,
            charset=str(query.get("charset", "utf8mb4")),
            connect_timeout=timeouts.connect_s,
            read_timeout=timeouts.read_s,
            write_timeout=timeouts.read_s,
            client_flag=0,
            local_infile=False,
            autocommit=False,
            **options,
        )
    except pymysql.err.OperationalError as exc:
        reason = _mysql_error(exc, timeouts)
        raise SqlUnavailableError(f"cannot connect to {shown}: {reason}") from None
    try:
        with conn.cursor() as cursor:
            cursor.execute("SET SESSION TRANSACTION READ ONLY")
    except BaseException:
        conn.close()
        raise
    return conn


def _mysql_error(exc: pymysql.err.OperationalError, timeouts: SqlTimeouts) -> str:
    text = first_line(exc)
    if "timed out" not in text:
        return text
    if exc.args and exc.args[0] == _CANT_CONNECT:
        return f"no connection within {timeouts.connect_s:g} s ({text})"
    return f"no answer within {timeouts.read_s:g} s ({text})"


def first_line(exc: BaseException) -> str:
    """An error's first line, on one line, at most 300 characters."""
    text = str(getattr(exc, "orig", None) or exc)
    return re.sub(r"\s+", " ", text.splitlines()[0] if text else type(exc).__name__)[:300]


def parse_url(value: str) -> URL:
    """A SQLAlchemy URL from text (ArgumentError when it is not one)."""
    return make_url(value)
