"""The run of `full_sync` and `incremental_sync`: read a data source, map, upsert, count.

Rows are mapped by the source's column mapping and coerced to the reflected target column
types; a row that cannot be (an empty key, a value of the wrong type, an empty NOT NULL column)
is a record error and counts as failed. Batches are written one transaction each. The batch
read last is written together with the new watermark (incremental) in one transaction, so the
watermark never moves past rows that were not committed. A failure ends the task with a message
saying how many rows earlier batches committed; those stay.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from types import NoneType
from typing import Any

import aiohttp
from pydantic import Field
from sqlalchemy.dialects.mysql import TINYINT
from sqlalchemy.exc import SQLAlchemyError

from engine.context import TaskContext
from engine.datasources import (
    SourceBatch,
    SqlConnection,
    highest,
    positions_above,
    read_batches,
    resolve_connection,
    watermark_json,
)
from engine.exceptions import PermanentError, RetryableError
from engine.handlers.base import JsonObject, Parameters
from engine.policy import SourcePolicy
from engine.sources.egress import client_session
from engine.sources.exceptions import SourceError, SourceUnavailableError
from engine.sources.http import HttpSourceConfig
from engine.sources.sql import SqlUnavailableError
from schedule.datasources import DataSourceRecord, TargetError, TargetWriter
from schedule.datasources import Watermark as StoredMark

TRUE = frozenset({"1", "true", "yes", "y", "t", "on"})
FALSE = frozenset({"0", "false", "no", "n", "f", "off", ""})


class SyncParams(Parameters):
    """Overrides of the data source's settings for one run."""

    batch_size: int | None = Field(None, ge=1, le=50_000)


@dataclass
class Counts:
    """What a sync did so far."""

    read: int = 0
    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    failed: int = 0
    batches: int = 0

    def as_json(self) -> JsonObject:
        return {
            "read": self.read,
            "inserted": self.inserted,
            "updated": self.updated,
            "deleted": self.deleted,
            "failed": self.failed,
        }

    @property
    def committed(self) -> str:
        return f"{self.inserted + self.updated} rows committed before the error"


@dataclass
class RowMapper:
    """Source rows -> target rows, checked against the reflected target before the first."""

    mapping: dict[str, str]
    keys: list[str]
    writer: TargetWriter
    pairs: list[tuple[str, str]] = field(default_factory=list)

    def check(self, fields: Sequence[str]) -> None:
        """Fix the column pairs from the mapping (or the first row's fields) and check them."""
        pairs = list(self.mapping.items()) or [(name, name) for name in fields]
        unknown = sorted({t for _, t in pairs} - self.writer.columns)
        if unknown:
            raise TargetError(
                f"target table {self.writer.table_name!r} has no column(s) {unknown};"
                " set column_mapping"
            )
        missing = [k for k in self.keys if k not in {t for _, t in pairs}]
        if missing:
            raise TargetError(f"key column(s) {missing} are not filled by the source rows")
        self.pairs = pairs

    def map(
        self, batch: SourceBatch, start: int
    ) -> tuple[dict[str, list[Any]], list[tuple[int, str, dict[str, Any]]]]:
        """The batch's target rows column by column (`{target column: values}`, rejects left
        out), and `(position, reason, source row)` of the rejects.

        Column by column: a column whose values all have the target's Python type already
        (text into a text column, say) is taken as it is, with C-level checks over the whole
        column; only the values of other columns go through `coerce` one by one. A rejected
        row's reason is that of its first failing column in the mapping's order, as if each
        row were mapped on its own.
        """
        if not self.pairs and len(batch):
            self.check(batch.fields)
        count = len(batch)
        columns: dict[str, list[Any]] = {}
        failed: dict[int, str] = {}
        for source, target in self.pairs:
            values, errors = self._column(batch.column(source), target)
            columns[target] = values
            for index, reason in errors.items():
                failed.setdefault(index, reason)  # the first column's reason wins
        if not failed:
            return columns, []
        rejects = [(start + i, failed[i], _json_safe(batch.record(i))) for i in sorted(failed)]
        kept = [i for i in range(count) if i not in failed]
        return {name: [values[i] for i in kept] for name, values in columns.items()}, rejects

    def _column(self, values: list[Any], target: str) -> tuple[list[Any], dict[int, str]]:
        """A column's values as the target column's type, and the reason of each row that
        cannot be (by position in the batch)."""
        column = self.writer.column(target)
        kind = python_kind(column)
        errors: dict[int, str] = {}
        if kind is not None and not set(map(type, values)) <= {kind, NoneType}:
            converted = []
            for index, value in enumerate(values):
                try:
                    converted.append(coerce(value, column, target))
                except ValueError as exc:
                    converted.append(None)
                    errors[index] = str(exc)
            values = converted
        if None in values and not self._may_be_empty(column, target):
            reason = (
                f"key column {target!r} is empty"
                if target in self.keys
                else f"{target!r} must not be empty"
            )
            for index, value in enumerate(values):
                if value is None:
                    errors.setdefault(index, reason)
        return values, errors

    def _may_be_empty(self, column: Any, target: str) -> bool:
        if target in self.keys:
            return False
        required = not column.nullable and column.server_default is None
        generated = column.primary_key and column.autoincrement is True
        return not required or generated


def python_kind(column: Any) -> type | None:
    """The Python type a target column holds, or None when its type does not say.

    MySQL/MariaDB have no boolean type: a `BOOLEAN` column is created as `TINYINT(1)` and
    reflected as an integer. That display width is the convention for a boolean (the MySQL
    drivers and SQLAlchemy follow it too), so such a column takes booleans as a boolean
    column does on SQLite: `yes`, `0`, `true` ...
    """
    if isinstance(column.type, TINYINT) and column.type.display_width == 1:
        return bool
    try:
        kind: type = column.type.python_type
    except NotImplementedError:
        return None
    return kind


def coerce(value: Any, column: Any, name: str) -> Any:
    """A source value as the Python type of the target column; ValueError saying why not."""
    if value is None:
        return None
    kind = python_kind(column)
    if kind is None:
        return value
    if isinstance(value, str) and not value.strip() and kind is not str:
        return None
    try:
        return _convert(value, kind)
    except (ValueError, TypeError, InvalidOperation, ArithmeticError):
        shown = repr(value)[:80]
        raise ValueError(f"{name}: {shown} is not a valid {kind.__name__}") from None


def _convert(value: Any, kind: type) -> Any:
    if kind is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in TRUE:
            return True
        if text in FALSE:
            return False
        raise ValueError(value)
    if kind is int:
        if isinstance(value, bool):
            raise ValueError(value)
        if isinstance(value, float) and not value.is_integer():
            raise ValueError(value)
        return int(Decimal(str(value).strip()))
    if kind is float:
        return float(value)
    if kind is Decimal:
        return Decimal(str(value).strip())
    if kind is datetime:
        return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    if kind is date:
        if isinstance(value, datetime):
            return value.date()
        return value if isinstance(value, date) else date.fromisoformat(str(value))
    if kind is str:
        if isinstance(value, float) and value.is_integer():
            return str(int(value))
        return value if isinstance(value, str) else str(value)
    return value


def _json_safe(record: dict[str, Any]) -> dict[str, Any]:
    return {
        k: v if v is None or isinstance(v, str | int | float | bool | list | dict) else str(v)
        for k, v in record.items()
    }


async def run_sync(ctx: TaskContext, *, incremental: bool) -> JsonObject:
    """Read the task's data source and upsert it into its target; the result counts rows."""
    source = await _source(ctx, incremental)
    policy = SourcePolicy.from_settings(ctx.settings)
    params = ctx.params
    assert isinstance(params, SyncParams)
    interface = ctx.task.interface_id
    try:
        connection = resolve_connection(
            source.kind, source.connection, source.interfaces, interface
        )
    except SourceError as exc:
        raise PermanentError(f"data source {source.id!r}: {exc}") from None
    size = params.batch_size or source.batch_size
    sources = ctx.stores.data_sources
    mark = await sources.watermark(source.id, interface) if incremental else None
    counts = Counts()
    track = source.delete_missing and not incremental
    writer = sources.target_writer(
        source.target_table, source.key_columns, targets=policy.targets, track_keys=track
    )
    label = f"{source.id}{f'/{interface}' if interface else ''}"
    ctx.report(progress=0, message=f"syncing {label} into {source.target_table}")
    try:
        async with writer, _session(connection, policy) as session:
            reading = _Reading(connection, session, policy, size, mark, incremental)
            await _copy(ctx, source, reading, writer, counts)
            if track:
                counts.deleted = await _delete_missing(writer, counts, source)
    except TargetError as exc:
        raise PermanentError(f"{exc} ({counts.committed})") from None
    except (SourceUnavailableError, SqlUnavailableError) as exc:
        raise RetryableError(f"{exc} ({counts.committed})") from None
    except SourceError as exc:
        raise PermanentError(f"{exc} ({counts.committed})") from None
    except SQLAlchemyError as exc:
        first = " ".join(str(getattr(exc, "orig", None) or exc).split())[:300]
        raise PermanentError(
            f"writing to {source.target_table!r} failed: {first} ({counts.committed})"
        ) from None
    done = counts.inserted + counts.updated
    ctx.report(
        progress=100,
        processed=counts.read,
        message=f"{label}: {counts.read} read, {done} written, {counts.deleted} deleted,"
        f" {counts.failed} failed",
    )
    return {"data_source_id": source.id, "interface_id": interface, **counts.as_json()}


async def _source(ctx: TaskContext, incremental: bool) -> DataSourceRecord:
    source_id = ctx.task.data_source_id
    if not source_id:
        raise PermanentError("the task has no data_source_id")
    source = await ctx.stores.data_sources.get(source_id)
    if source is None:
        raise PermanentError(f"no data source {source_id!r}")
    if incremental and not source.watermark_column:
        raise PermanentError(
            f"data source {source_id!r} has no watermark_column; incremental_sync needs one"
        )
    return source


@contextlib.asynccontextmanager
async def _session(connection: Any, policy: SourcePolicy) -> Any:
    """The HTTP session of an `http` source: every connection it makes obeys the egress
    policy (resolved addresses and redirects included)."""
    if not isinstance(connection, HttpSourceConfig):
        yield None
        return
    async with client_session(policy.egress) as session:
        yield session


@dataclass(frozen=True)
class _Reading:
    """What a sync reads: the source's connection (and HTTP session), under the policy."""

    connection: Any
    session: aiohttp.ClientSession | None
    policy: SourcePolicy
    size: int
    mark: Any
    incremental: bool


async def _copy(
    ctx: TaskContext,
    source: DataSourceRecord,
    reading: _Reading,
    writer: TargetWriter,
    counts: Counts,
) -> None:
    """Stream the source into the target; the last batch carries the new watermark.

    A batch is written while the next one is mapped (`_Writes`): the write runs mostly in
    the database driver, outside the interpreter's lock, and the mapping in Python.

    An incremental sync of a file or HTTP source reads every row and keeps those above the
    watermark here (`_Kept`); they are handed on in batches of `size` rows, in the source's
    order, as a SQL source's watermark query returns them, rather than a few rows of every
    read in a transaction each.
    """
    mapper = RowMapper(dict(source.column_mapping), list(source.key_columns), writer)
    wm = source.watermark_column if reading.incremental else None
    mark = reading.mark
    kept = None
    if reading.incremental and not isinstance(reading.connection, SqlConnection):
        kept = _Kept(wm or "", mark, reading.size)
    new_mark, pending = mark, None
    batches = read_batches(
        reading.connection, reading.size, wm, mark, reading.policy, reading.session
    )
    async with contextlib.aclosing(batches), _Writes(writer, counts) as writes:

        async def step(batch: SourceBatch) -> None:
            """Map a batch, record its errors, and write the batch before it."""
            nonlocal new_mark, pending
            if wm is not None and len(batch):
                new_mark = highest([new_mark, *batch.column(wm)])
            columns, rejects = mapper.map(batch, counts.read)
            counts.read += len(batch)
            counts.failed += len(rejects)
            for position, reason, record in rejects:
                await ctx.record_error(reason, record, position)
            if track_keys := [r for r in (_keys_of(x, mapper) for _, _, x in rejects) if r]:
                await writes.settle()  # one connection: the batch in flight first
                await writer.track_only(track_keys)
            if pending is not None:
                await writes.start(pending)
            pending = columns

        async for read in batches:
            for batch in [read] if kept is None else kept.add(read):
                await step(batch)
            ctx.report(processed=counts.read, message=f"{counts.read} rows read")
            await ctx.checkpoint()
        for batch in [] if kept is None else kept.rest():
            await step(batch)
        await writes.settle()
    stored = None
    if wm is not None and new_mark is not None and new_mark != mark:
        stored = StoredMark(source.id, ctx.task.interface_id, watermark_json(new_mark), ctx.task.id)
    _add(counts, await writer.write(pending or {}, stored))


class _Kept:
    """The rows above the watermark that an incremental sync keeps from what a file or HTTP
    source reads (every row), handed on in batches of `size` rows (the last one shorter)."""

    def __init__(self, watermark: str, mark: Any, size: int) -> None:
        self.watermark = watermark
        self.mark = mark
        self.size = size
        self.parts: list[SourceBatch] = []
        self.count = 0

    def add(self, read: SourceBatch) -> list[SourceBatch]:
        """Keep the rows of `read` above the mark; the batches of `size` now complete."""
        batch = read.take(positions_above(read.column(self.watermark), self.mark))
        if len(batch):
            self.parts.append(batch)
            self.count += len(batch)
        full = []
        while self.count >= self.size:
            rows = SourceBatch.joined(self.parts)
            full.append(rows.take(range(self.size)))
            rest = rows.take(range(self.size, len(rows)))
            self.parts, self.count = ([rest] if len(rest) else []), len(rest)
        return full

    def rest(self) -> list[SourceBatch]:
        """The rows kept after the last complete batch, as one."""
        return [SourceBatch.joined(self.parts)] if self.parts else []


class _Writes:
    """At most one batch write in flight, its counts added once it committed.

    When the sync stops early, the batch in flight is waited for (it commits or fails on
    its own, and the counts say which), unless the sync itself is being cancelled by force:
    then the write is cancelled too, and rolled back if it had not committed.
    """

    def __init__(self, writer: TargetWriter, counts: Counts) -> None:
        self.writer = writer
        self.counts = counts
        self.flight: asyncio.Task[tuple[int, int]] | None = None

    async def start(self, columns: dict[str, list[Any]]) -> None:
        """Wait for the batch in flight, then start writing `columns`."""
        await self.settle()
        self.flight = asyncio.ensure_future(self.writer.write(columns))

    async def settle(self) -> None:
        """Wait for the batch in flight (its error, if it failed, is raised here)."""
        flight, self.flight = self.flight, None
        if flight is not None:
            _add(self.counts, await flight)

    async def __aenter__(self) -> _Writes:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, *exc: object) -> None:
        flight, self.flight = self.flight, None
        if flight is None:
            return
        if kind is not None and issubclass(kind, asyncio.CancelledError):
            flight.cancel()
        with contextlib.suppress(Exception, asyncio.CancelledError):
            _add(self.counts, await flight)


def _keys_of(record: dict[str, Any], mapper: RowMapper) -> dict[str, Any] | None:
    """The target key of a rejected source row, when it can be told."""
    by_target = {t: s for s, t in mapper.pairs}
    out = {}
    for key in mapper.keys:
        value = record.get(by_target.get(key, key))
        if value is None:
            return None
        try:
            out[key] = coerce(value, mapper.writer.column(key), key)
        except ValueError:
            return None
    return out


def _add(counts: Counts, written: tuple[int, int]) -> None:
    counts.inserted += written[0]
    counts.updated += written[1]
    counts.batches += 1


async def _delete_missing(writer: TargetWriter, counts: Counts, source: DataSourceRecord) -> int:
    if counts.read == 0:
        raise PermanentError(
            f"data source {source.id!r} returned no rows; refusing to delete every row of"
            f" {source.target_table!r} (delete_missing)"
        )
    return await writer.delete_missing()
