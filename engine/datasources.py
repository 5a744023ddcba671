"""Data sources of `full_sync`/`incremental_sync`: their definition, masking, and readers.

A definition names a `kind` (`sql`, `http`, `file`) with its `connection` settings, the target
table of our database with its key columns, a column mapping (source field -> target column;
empty: the same names) and optionally the source field that is the watermark of incremental
syncs. `interfaces` are named variants of the connection (an HTTP endpoint, a SQL table or query,
a file) selected by a task's `interface_id`; each is merged over `connection`.

Readers yield batches of rows (dicts keyed by source field) and never block the event loop: SQL
and files are read in a worker thread (`ThreadedIterator`), HTTP with aiohttp (`HttpPager`).
What a source may reach (target tables, files, hosts, databases) is the `SourcePolicy`'s to say,
when a definition is validated (`definition_problems`) and again when it is read: SQL sources
through read-only connections (`engine.sources.sql`), files only under the source directories
(`engine.sources.files`), HTTP through sessions that obey the egress policy
(`engine.sources.egress`).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Iterator, Sequence
from datetime import date, datetime
from decimal import Decimal
from itertools import repeat
from operator import itemgetter
from pathlib import Path
from typing import Annotated, Any, Literal

import aiohttp
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy import MetaData, Table, inspect, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from yarl import URL as YarlURL

from engine.policy import SourcePolicy
from engine.sources.exceptions import SourceError
from engine.sources.files import confine
from engine.sources.http import MASK, SECRET_NAME, HttpPager, HttpSourceConfig
from engine.sources.sheets import batched, iter_rows
from engine.sources.sql import (
    Deadline,
    SqlSourceError,
    SqlTimeouts,
    SqlUnavailableError,
    first_line,
    read_only,
    url_problem,
)
from engine.sources.streaming import ThreadedIterator, read_ahead
from engine.validation import NoBoolNumbers

Kind = Literal["sql", "http", "file"]
Identifier = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_$]{0,63}$")]
SourceId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]
SourceRow = dict[str, Any]


class SourceBatch:
    """Rows of a source read together: value tuples under one list of field names (SQL
    results, files), or records whose fields may differ from one to the next (HTTP pages).

    Values are taken a field at a time for the whole batch (`column`), with C-level calls;
    a row is made into a record (`record`) only when it is needed whole (a rejected row's
    error). Building a dict per row cost as much as reading the row.
    """

    __slots__ = ("_fields", "_index", "_records", "_rows")

    def __init__(
        self,
        names: Sequence[str] = (),
        rows: Sequence[Sequence[Any]] | None = None,
        *,
        records: list[SourceRow] | None = None,
    ) -> None:
        self._records = records
        self._rows = rows if rows is not None else []
        if records is not None:
            self._fields = list(records[0]) if records else []
            self._index: dict[str, int] = {}
        else:
            self._fields = list(names)
            self._index = {name: i for i, name in enumerate(names)}  # a repeated name: the last

    @classmethod
    def of_records(cls, records: list[SourceRow]) -> SourceBatch:
        """A batch of records (dicts)."""
        return cls(records=records)

    def __len__(self) -> int:
        return len(self._records) if self._records is not None else len(self._rows)

    @property
    def fields(self) -> list[str]:
        """The field names (of the first record, for a batch of records)."""
        return list(self._fields)

    def column(self, name: str) -> list[Any]:
        """The values of field `name` in row order (None where a row has none)."""
        if self._records is not None:
            count = len(self._records)
            return list(map(dict.get, self._records, repeat(name, count)))
        index = self._index.get(name)
        if index is None:
            return [None] * len(self._rows)
        return list(map(itemgetter(index), self._rows))

    def record(self, position: int) -> SourceRow:
        """One row as a record (`{field: value}`)."""
        if self._records is not None:
            return self._records[position]
        values = self._rows[position]
        return {name: values[i] for name, i in self._index.items()}

    @classmethod
    def joined(cls, batches: Sequence[SourceBatch]) -> SourceBatch:
        """The rows of `batches`, read from one source (the same field names), as one."""
        if len(batches) == 1:
            return batches[0]
        first = batches[0]
        if first._records is not None:
            return cls(records=[r for b in batches for r in b._records or ()])
        return cls(first._fields, [row for b in batches for row in b._rows])

    def take(self, positions: Sequence[int]) -> SourceBatch:
        """The rows at `positions`, in that order."""
        if self._records is not None:
            return SourceBatch(records=[self._records[i] for i in positions])
        return SourceBatch(self._fields, [self._rows[i] for i in positions])


_PLAIN_HEADERS = frozenset({"accept", "accept-language", "content-type", "user-agent"})


class _Strict(NoBoolNumbers):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SqlConnection(_Strict):
    """Another database: a SQLAlchemy URL and either a table or a query (one SELECT), with
    optional bounds on connecting and on each read (default: the `SYNCD_SOURCE_*_TIMEOUT_S`
    settings)."""

    url: str
    table: str | None = Field(None, min_length=1, max_length=255)
    query: str | None = Field(None, min_length=1)
    connect_timeout_s: float | None = Field(None, gt=0, le=3600)
    read_timeout_s: float | None = Field(None, gt=0, le=86400)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        try:
            url = make_url(value)
        except ArgumentError as exc:
            raise ValueError(f"not a SQLAlchemy URL: {exc}") from None
        if url.get_backend_name() not in ("sqlite", "mysql", "mariadb"):
            raise ValueError("only sqlite:/// and mysql+pymysql:// URLs are supported")
        problem = url_problem(url)
        if problem is not None:
            raise ValueError(problem)
        return value

    def timeouts(self, defaults: SqlTimeouts) -> SqlTimeouts:
        """This source's timeouts, the defaults where it gives none."""
        return SqlTimeouts(
            self.connect_timeout_s or defaults.connect_s, self.read_timeout_s or defaults.read_s
        )


class FileConnection(_Strict):
    """An .xlsx or CSV file on the server (chosen by content); the header row names fields."""

    path: str = Field(..., min_length=1)
    sheet: str | None = None
    delimiter: str | None = Field(None, min_length=1, max_length=1)
    encoding: str = "utf-8-sig"

    @field_validator("path")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not Path(value).is_absolute():
            raise ValueError("must be an absolute path on the server")
        return value


CONNECTION_MODELS: dict[str, type[BaseModel]] = {
    "sql": SqlConnection,
    "http": HttpSourceConfig,
    "file": FileConnection,
}
Connection = SqlConnection | HttpSourceConfig | FileConnection


class DataSourceBody(_Strict):
    """A data source definition as the API takes it (`id` comes from the path on PUT)."""

    id: SourceId | None = None
    name: str = Field(..., min_length=1, max_length=255)
    kind: Kind
    connection: dict[str, Any]
    target_table: Identifier
    key_columns: list[Identifier] = Field(..., min_length=1, max_length=16)
    column_mapping: dict[str, Identifier] = Field(default_factory=dict)
    watermark_column: str | None = Field(None, min_length=1, max_length=255)
    delete_missing: bool = False
    interfaces: dict[SourceId, dict[str, Any]] = Field(default_factory=dict)
    batch_size: int = Field(1000, ge=1, le=50_000)


async def definition_problems(body: DataSourceBody, policy: SourcePolicy) -> list[dict[str, str]]:
    """Every problem of a definition, `{field, message}`: kind-specific checks of `connection`
    and of every interface merged over it, then what the policy refuses (target table, files
    outside the source directories, refused hosts, syncd's own database, writing queries)."""
    problems: list[dict[str, str]] = []
    problem = policy.target_problem(body.target_table)
    if problem is not None:
        problems.append({"field": "target_table", "message": problem})
    problems += _check(body.kind, body.connection, "connection", partial=bool(body.interfaces))
    if body.column_mapping:
        targets = set(body.column_mapping.values())
        for key in body.key_columns:
            if key not in targets:
                problems.append(
                    {"field": "key_columns", "message": f"{key!r} is not a column_mapping target"}
                )
    variants: list[tuple[dict[str, Any], dict[str, str]]] = []
    if not body.interfaces:
        variants.append((body.connection, {}))
    for name, overrides in body.interfaces.items():
        merged = {**body.connection, **overrides}
        problems += _check(body.kind, merged, f"interfaces.{name}", partial=False)
        variants.append((merged, {k: f"interfaces.{name}" for k in overrides}))
    if body.interfaces and _parses(body.kind, body.connection):
        variants.insert(0, (body.connection, {}))
    for config, origins in variants:
        for key, message in await _policy_problems(body.kind, config, policy):
            entry = {"field": f"{origins.get(key, 'connection')}.{key}", "message": message}
            if entry not in problems:
                problems.append(entry)
    return problems


def _parses(kind: str, config: dict[str, Any]) -> bool:
    try:
        CONNECTION_MODELS[kind].model_validate(config)
    except ValidationError:
        return False
    return True


async def _policy_problems(
    kind: str, config: dict[str, Any], policy: SourcePolicy
) -> list[tuple[str, str]]:
    """`(connection key, why)` of what the policy refuses in one complete connection."""
    try:
        parsed = CONNECTION_MODELS[kind].model_validate(config)
    except ValidationError:
        return []  # reported by _check
    if isinstance(parsed, FileConnection):
        problem = await policy.file_problem(parsed.path)
        return [] if problem is None else [("path", problem)]
    if isinstance(parsed, HttpSourceConfig):
        problem = await policy.egress.url_problem(parsed.url)
        hint = f"; refused unless listed in {policy.egress.setting}"
        return [] if problem is None else [("url", problem + hint)]
    assert isinstance(parsed, SqlConnection)
    found = await policy.sql_problem(make_url(parsed.url), parsed.query)
    return [] if found is None else [found]


def _check(
    kind: str, config: dict[str, Any], prefix: str, *, partial: bool
) -> list[dict[str, str]]:
    try:
        parsed = CONNECTION_MODELS[kind].model_validate(config)
    except ValidationError as exc:
        out = []
        for err in exc.errors():
            if partial and err["type"] == "missing":
                continue  # every interface supplies it
            path = ".".join(str(p) for p in err["loc"])
            out.append({"field": f"{prefix}.{path}" if path else prefix, "message": err["msg"]})
        return out
    if (
        isinstance(parsed, SqlConnection)
        and not partial
        and (parsed.table is None) == (parsed.query is None)
    ):
        return [{"field": f"{prefix}.table", "message": "give exactly one of table or query"}]
    return []


def resolve_connection(
    kind: str, connection: dict[str, Any], interfaces: dict[str, Any], interface_id: str | None
) -> Connection:
    """The connection of one interface (or the base one) as a validated model."""
    config = dict(connection)
    if interface_id is not None:
        if interface_id not in interfaces:
            known = ", ".join(sorted(interfaces)) or "none"
            raise SourceError(f"no interface {interface_id!r}; interfaces: {known}")
        config.update(interfaces[interface_id])
    try:
        parsed = CONNECTION_MODELS[kind].model_validate(config)
    except ValidationError as exc:
        raise SourceError(f"invalid {kind} connection: {exc}") from None
    assert isinstance(parsed, SqlConnection | HttpSourceConfig | FileConnection)
    if isinstance(parsed, SqlConnection) and (parsed.table is None) == (parsed.query is None):
        raise SourceError("the SQL source needs exactly one of table or query")
    return parsed


# ---- masking --------------------------------------------------------------------------------


def mask(value: Any, key: str = "") -> Any:
    """A configuration fit to show: secret-looking keys, header values and URL passwords
    replaced by `***` at any depth."""
    if isinstance(value, dict):
        if key.lower() == "headers":
            return {k: v if k.lower() in _PLAIN_HEADERS else MASK for k, v in value.items()}
        return {k: mask(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [mask(v, key) for v in value]
    if key and SECRET_NAME.search(key) and value is not None and not isinstance(value, bool):
        return MASK
    if isinstance(value, str) and "://" in value:
        return mask_url(value)
    return value


def mask_url(value: str) -> str:
    """A URL with its password (and secret-looking query values) masked."""
    if value.startswith(("http://", "https://")):
        try:
            url = YarlURL(value)
        except (ValueError, TypeError):
            return value
        if url.password is not None:
            url = url.with_password(MASK)
        if any(SECRET_NAME.search(k) for k in url.query):
            url = url.with_query(
                [(k, MASK if SECRET_NAME.search(k) else v) for k, v in url.query.items()]
            )
        return str(url)
    try:
        parsed = make_url(value)
    except ArgumentError:
        return value
    if parsed.password is None:
        return value
    return parsed.render_as_string(hide_password=True)


def unmask(new: Any, old: Any) -> Any:
    """A PUT body whose masked values (`***`, as a GET showed them) keep the stored ones."""
    if isinstance(new, dict) and isinstance(old, dict):
        return {k: unmask(v, old.get(k)) for k, v in new.items()}
    if new == MASK and old is not None:
        return old
    if isinstance(new, str) and MASK in new and isinstance(old, str) and mask_url(old) == new:
        return old
    return new


# ---- watermarks -----------------------------------------------------------------------------


def watermark_json(value: Any) -> Any:
    """A watermark value as JSON: datetimes and dates as ISO text, decimals as text."""
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    return value


def _sortable(value: Any) -> tuple[int, Any]:
    if isinstance(value, bool):
        return (0, int(value))
    if isinstance(value, int | float | Decimal):
        return (0, float(value))
    if isinstance(value, datetime | date):
        return (1, watermark_json(value))
    if isinstance(value, str):
        try:
            return (0, float(value))
        except ValueError:
            return (1, value)
    return (1, str(value))


def above(value: Any, mark: Any) -> bool:
    """Whether a row's watermark value is above the stored one (numbers compare as numbers)."""
    if value is None:
        return False
    if mark is None:
        return True
    left, right = _sortable(value), _sortable(mark)
    if left[0] != right[0]:
        return str(left[1]) > str(right[1])
    return bool(left[1] > right[1])


def positions_above(values: Sequence[Any], mark: Any) -> list[int]:
    """The positions of the values above `mark`, as `above` tells one by one.

    A column of plain numbers and numeric text (what a CSV file, a sheet or a JSON page holds
    as a version) against a numeric mark is compared as floats in one pass, as `above` compares
    them; any other column goes value by value.
    """
    if mark is None:
        return [i for i, value in enumerate(values) if value is not None]
    kind, bound = _sortable(mark)
    if kind == 0 and set(map(type, values)) <= {int, float, str}:
        try:
            numbers = list(map(float, values))
        except ValueError:  # text that is not a number: it compares as text
            pass
        else:
            return [i for i, number in enumerate(numbers) if number > bound]
    return [i for i, value in enumerate(values) if above(value, mark)]


def highest(values: list[Any]) -> Any:
    """The highest non-null watermark value of a batch, or None."""
    best = None
    for value in values:
        if value is not None and (best is None or above(value, best)):
            best = value
    return best


# ---- readers --------------------------------------------------------------------------------


def sql_batches(
    config: SqlConnection, size: int, watermark: str | None, mark: Any, policy: SourcePolicy
) -> Iterator[SourceBatch]:
    """Rows of a table or a query of another database, streamed through a read-only
    connection (blocking: a worker thread)."""
    url = make_url(config.url)
    shown = url.render_as_string(hide_password=True)
    timeouts = config.timeouts(policy.timeouts)
    deadline = Deadline(timeouts.read_s)
    with read_only(url, timeouts, policy.own_database, shown, config.query, deadline) as conn:
        statement = _sql_statement(conn, config, watermark, mark, shown)
        try:
            deadline.reset()
            result = conn.execution_options(stream_results=True, yield_per=size).execute(
                statement, {"syncd_mark": mark} if watermark and mark is not None else {}
            )
            names = list(result.keys())
            for partition in result.partitions(size):
                yield SourceBatch(names, list(partition))
                deadline.reset()
        except SQLAlchemyError as exc:
            reason = first_line(exc)
            if deadline.passed() or "timed out" in reason:
                reason = f"no answer within {timeouts.read_s:g} s ({reason})"
                raise SqlUnavailableError(f"reading {shown} failed: {reason}") from None
            raise SqlSourceError(f"reading {shown} failed: {reason}") from None


def _sql_statement(
    conn: Any, config: SqlConnection, watermark: str | None, mark: Any, shown: str
) -> Any:
    quote = conn.dialect.identifier_preparer.quote
    if config.table is not None:
        if not inspect(conn).has_table(config.table):
            raise SqlSourceError(f"table {config.table!r} does not exist in {shown}")
        table = Table(config.table, MetaData(), autoload_with=conn)
        query = select(table)
        if watermark is not None:
            if watermark not in table.c:
                raise SqlSourceError(f"table {config.table!r} has no column {watermark!r}")
            column = table.c[watermark]
            if mark is not None:
                query = query.where(column > _typed(column, mark))
            query = query.order_by(column)
        return query
    assert config.query is not None
    if watermark is None:
        return text(config.query)
    where = f" WHERE {quote(watermark)} > :syncd_mark" if mark is not None else ""
    return text(f"SELECT * FROM ({config.query}) AS syncd_src{where} ORDER BY {quote(watermark)}")


def _typed(column: Any, mark: Any) -> Any:
    """A stored (JSON) watermark back as the column's Python type, for the bind processor."""
    try:
        kind = column.type.python_type
    except NotImplementedError:
        return mark
    if isinstance(mark, str):
        if kind is datetime:
            return datetime.fromisoformat(mark)
        if kind is date:
            return date.fromisoformat(mark)
        if kind is Decimal:
            return Decimal(mark)
    return mark


def file_batches(config: FileConnection, size: int, policy: SourcePolicy) -> Iterator[SourceBatch]:
    """Rows of an .xlsx or CSV file under the source directories, keyed by header text
    (blocking: a worker thread); an .xlsx is held to `policy.unpack`."""
    real = confine(config.path, policy.source_dirs, policy.own_sqlite_file)
    if not real.is_file():
        raise SourceError(f"{config.path}: no such file")
    rows = iter_rows(
        real,
        sheet=config.sheet,
        delimiter=config.delimiter,
        encoding=config.encoding,
        limits=policy.unpack,
    )
    try:
        first = next(rows, None)
        if first is None:
            raise SourceError(f"{Path(config.path).name}: the file is empty (no header row)")
        names = [
            str(h).strip() if h is not None and str(h).strip() else f"column{i + 1}"
            for i, h in enumerate(first[1])
        ]

        width = len(names)
        for chunk in batched(map(itemgetter(1), rows), size):
            if set(map(len, chunk)) != {width}:  # rows shorter or longer than the header
                chunk = [(*values, *[None] * (width - len(values)))[:width] for values in chunk]
            yield SourceBatch(names, chunk)
    finally:
        rows.close()


async def read_batches(
    connection: Connection,
    size: int,
    watermark: str | None,
    mark: Any,
    policy: SourcePolicy,
    session: aiohttp.ClientSession | None = None,
) -> AsyncGenerator[SourceBatch, None]:
    """Batches of source rows, whatever the kind (an HTTP source reads with `session`, which
    must obey `policy.egress`: see `engine.sources.egress.client_session`)."""
    if isinstance(connection, HttpSourceConfig):
        assert session is not None
        async with contextlib.aclosing(read_ahead(HttpPager(connection, session).pages())) as pages:
            async for page in pages:
                yield SourceBatch.of_records(page)
        return
    if isinstance(connection, SqlConnection):

        def factory() -> Iterator[SourceBatch]:
            return sql_batches(connection, size, watermark, mark, policy)

    else:
        file_config = connection

        def factory() -> Iterator[SourceBatch]:
            return file_batches(file_config, size, policy)

    async with ThreadedIterator(factory) as batches:
        async for batch in batches:
            yield batch
