"""`records_import`: validate a JSON array of records one by one and upsert the valid ones.

The records come from `POST /api/tools/import` (seed 002) or `POST /api/imports/{target}`,
stored as a file under the state directory (see `engine.uploads`) whose name is the `file`
parameter; the first attempt on the daemon that took the request gets them already parsed
(`engine.uploads.PARSED`). Each record is validated with its target's pydantic model (runs of
records of the plain shape the target's `fast_columns` recognises skip it, with the same
outcome);
a record that fails (not an object, a bad field, a key already seen earlier in the same
payload) becomes a record error holding the record as it was sent and its 0-based index in
`data`. Valid records are upserted by the target's key through one compiled statement, one
transaction per batch, with a checkpoint between batches; validation and the driver
parameters of the next batches are made in a worker thread meanwhile.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, ValidationError

from engine.context import TaskContext
from engine.exceptions import PermanentError
from engine.handlers.base import HandlerSpec, JsonObject, Parameters
from engine.sources.streaming import ThreadedIterator
from engine.targets import TARGETS, ImportTarget, get_target
from engine.uploads import FILE_NAME, PARSED, ImportFiles
from schedule.clock import naive
from schedule.upsert import PreparedInsert

Columns = dict[str, list[Any]]
"""Rows column by column: the values of each column, in row order."""
Error = tuple[int, str, Any]
"""`(index, reason, record)` of a rejected record."""
Write = tuple[PreparedInsert | None, list[Any]]
"""A batch's upsert and its driver parameters, or None and the rows (a driver with named
parameters: the general path)."""
Validated = tuple[int, Write | None, list[Error]]
"""Records done so far, the batch's write (None: nothing valid), its rejected records."""


class RecordsImportParams(Parameters):
    """Which target, which stored payload, how many records per transaction."""

    target: str = Field(..., max_length=64)
    file: Annotated[str, Field(pattern=FILE_NAME.pattern)]
    batch_size: int = Field(5000, ge=1, le=50_000)


def load_records(path: Path) -> list[Any]:
    """The `data` array of a stored payload (blocking: call in a thread)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise PermanentError(
            "the import payload is no longer stored (the task ended before); import it again"
        ) from None
    body = json.loads(raw)
    data = body.get("data") if isinstance(body, dict) else body
    if not isinstance(data, list):
        raise PermanentError("the stored payload has no `data` array")
    return data


FAST_SPAN_MIN = 16
"""A batch the target's `fast_columns` refuses is halved and each half tried again, down to
spans of this many records, which go through the model record by record: one odd record costs
the model's time for a few neighbours."""
PROBES = 8
"""Before a refused span is halved, this many of its records, spread over it, are tried one by
one; when two or more are odd, the span is taken to be mostly odd and goes to the model whole.
A payload of odd records (non-ASCII names, say) then costs one refused try per batch and a few
probes, instead of a refused try at every halving, which added about 30% to the model's time."""


def validate_batch(
    target: ImportTarget, records: list[Any], start: int, seen: set[Any]
) -> tuple[Columns, list[Error]]:
    """The rows of the valid records, column by column, and `(index, reason, record)` of the
    others, in record order. `seen` holds the keys of the records accepted so far.

    Spans of records the target's `fast_columns` accepts whole skip the model; every other
    record is decided, and its error worded, by the model.
    """
    columns: Columns = {}
    errors: list[Error] = []
    for lo, hi, fast in _spans(target, records, 0, len(records)):
        if fast is not None:
            _take(target, fast, start + lo, records[lo:hi], seen, columns, errors)
            continue
        for offset in range(lo, hi):
            record, index = records[offset], start + offset
            if not isinstance(record, dict):
                errors.append((index, f"record {index} is not an object", record))
                continue
            try:
                row = target.to_row(target.model.model_validate(record))
            except ValidationError as exc:
                errors.append((index, _reason(exc), record))
                continue
            _take(target, {k: [v] for k, v in row.items()}, index, [record], seen, columns, errors)
    return columns, errors


def _spans(
    target: ImportTarget, records: list[Any], lo: int, hi: int
) -> Iterator[tuple[int, int, Columns | None]]:
    """`(lo, hi, columns)` covering `records[lo:hi]` in order: the columns `fast_columns` made
    of the span, or None for a span the model must check."""
    if target.fast_columns is None or hi <= lo:
        yield lo, hi, None
        return
    fast = target.fast_columns(records[lo:hi])
    if fast is not None or hi - lo <= FAST_SPAN_MIN or _mostly_odd(target, records, lo, hi):
        yield lo, hi, fast
        return
    middle = (lo + hi) // 2
    yield from _spans(target, records, lo, middle)
    yield from _spans(target, records, middle, hi)


def _mostly_odd(target: ImportTarget, records: list[Any], lo: int, hi: int) -> bool:
    """True when at least two of `PROBES` records spread over `records[lo:hi]` are refused by
    the target's `fast_columns` on their own."""
    assert target.fast_columns is not None
    odd = 0
    for probe in range(PROBES):
        at = lo + (hi - lo) * probe // PROBES
        if target.fast_columns(records[at : at + 1]) is None:
            odd += 1
            if odd == 2:
                return True
    return False


def _take(
    target: ImportTarget,
    span: Columns,
    first: int,
    sent: list[Any],
    seen: set[Any],
    columns: Columns,
    errors: list[Error],
) -> None:
    """Append the rows of `span` (made of the records `sent`, from index `first` on) to
    `columns`, but a row whose key an earlier record has, which becomes an error."""
    keys: list[Any] = (
        span[target.keys[0]]
        if len(target.keys) == 1
        else list(zip(*(span[k] for k in target.keys), strict=True))
    )
    if len(set(keys)) != len(keys) or not seen.isdisjoint(keys):
        kept: list[int] = []
        for offset, key in enumerate(keys):
            if key in seen:
                parts = key if len(target.keys) > 1 else (key,)
                shown = ", ".join(f"{k}={v!r}" for k, v in zip(target.keys, parts, strict=True))
                reason = f"duplicate key {shown} (an earlier record has it)"
                errors.append((first + offset, reason, sent[offset]))
                continue
            seen.add(key)
            kept.append(offset)
        span = {name: [values[i] for i in kept] for name, values in span.items()}
    else:
        seen.update(keys)
    if not columns:
        columns.update((name, []) for name in span)
    for name, values in span.items():
        columns[name].extend(values)


def _reason(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "record"
        parts.append(f"{field}: {err['msg']}")
    return "; ".join(parts)


async def run(ctx: TaskContext) -> JsonObject:
    """Validate and upsert every record; the result counts imported and failed ones."""
    params = ctx.params
    assert isinstance(params, RecordsImportParams)
    target = get_target(params.target)
    if target is None:
        raise PermanentError(f"unknown import target {params.target!r}; known: {sorted(TARGETS)}")
    path = ImportFiles(ctx.settings.state_dir).path(params.file)
    ctx.report(progress=0, message="reading the payload")
    records = PARSED.take(params.file)  # parsed by the API on this daemon, if still held
    if records is None:
        records = await asyncio.to_thread(load_records, path)
    total = len(records)
    ctx.report(processed=0, total=total, message=f"importing {total} records into {target.name}")
    store = ctx.stores.imports
    imported = failed = 0

    def batches() -> Iterator[Validated]:
        seen: set[Any] = set()
        prepared: PreparedInsert | None = None
        for start in range(0, total, params.batch_size):
            chunk = records[start : start + params.batch_size]
            columns, errors = validate_batch(target, chunk, start, seen)
            write: Write | None = None
            count = len(columns[target.keys[0]]) if columns else 0
            if count:
                _stamp(columns, count, target, ctx.task.id, ctx.clock())
                if prepared is None:
                    prepared = store.prepare_upsert(target.table, target.keys, list(columns))
                if prepared is not None:
                    write = (prepared, prepared.column_parameters(columns))
                else:
                    write = (
                        None,
                        [
                            dict(zip(columns, row, strict=True))
                            for row in zip(*columns.values(), strict=True)
                        ],
                    )
            yield start + len(chunk), write, errors

    # Validation and the driver parameters are made in a worker thread a batch or two ahead of
    # the writes.
    async with ThreadedIterator(batches) as validated:
        async for done, write, errors in validated:
            for index, reason, record in errors:
                await ctx.record_error(reason, record, index)
            failed += len(errors)
            if write is not None:
                prepared, values = write
                if prepared is not None:
                    imported += await store.upsert_prepared(prepared, values)
                else:
                    imported += await store.upsert_records(target.table, target.keys, values)
            ctx.report(processed=done, message=f"{done}/{total} records, {failed} rejected")
            await ctx.checkpoint()
    ctx.report(progress=100, message=f"imported {imported} of {total} records, {failed} rejected")
    return {"target": target.name, "total": total, "imported": imported, "failed": failed}


def _stamp(columns: Columns, count: int, target: ImportTarget, task_id: str, now: datetime) -> None:
    values = {"task_id": task_id, "updated_at": naive(now)}
    for column in target.stamp_columns:
        columns[column] = [values[column]] * count


SPEC = HandlerSpec(
    task_type="records_import",
    run=run,
    params=RecordsImportParams,
    description="Validates JSON records against a declared target and upserts the valid ones.",
)
