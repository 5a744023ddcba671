"""`records_import`: validate a JSON array of records one by one and upsert the valid ones.

The records come from `POST /api/tools/import` (seed 002) or `POST /api/imports/{target}`,
stored as a file under the state directory (see `engine.uploads`) whose name is the `file`
parameter; the first attempt on the daemon that took the request gets them already parsed
(`engine.uploads.PARSED`). Each record is validated with its target's pydantic model (a record
of the plain shape the target's `fast_row` recognises skips the model, with the same outcome);
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
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, ValidationError

from engine.context import TaskContext
from engine.exceptions import PermanentError
from engine.handlers.base import HandlerSpec, JsonObject, Parameters
from engine.sources.streaming import ThreadedIterator
from engine.targets import TARGETS, ImportTarget, get_target
from engine.uploads import FILE_NAME, PARSED, ImportFiles
from schedule.imports import ImportStore
from schedule.records import naive
from schedule.store import utcnow
from schedule.upsert import PreparedInsert

Validated = tuple[
    int,
    list[dict[str, Any]],
    tuple[PreparedInsert, list[tuple[Any, ...]]] | None,
    list[tuple[int, str, Any]],
]
"""Records done so far, the valid rows of a batch, their upsert and its driver parameters
(None when the driver needs the general path), `(index, reason, record)` of the others."""


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


def validate_batch(
    target: ImportTarget, records: list[Any], start: int, seen: set[tuple[Any, ...]]
) -> tuple[list[dict[str, Any]], list[tuple[int, str, Any]]]:
    """Rows of the valid records, and `(index, reason, record)` of the others.

    A record the target's `fast_row` recognises as plainly valid skips the model; every other
    record is decided, and its error worded, by the model.
    """
    rows: list[dict[str, Any]] = []
    errors: list[tuple[int, str, Any]] = []
    fast = target.fast_row
    only = target.keys[0] if len(target.keys) == 1 else None
    for offset, record in enumerate(records):
        index = start + offset
        row = fast(record) if fast is not None else None
        if row is None:
            if not isinstance(record, dict):
                errors.append((index, f"record {index} is not an object", record))
                continue
            try:
                row = target.to_row(target.model.model_validate(record))
            except ValidationError as exc:
                errors.append((index, _reason(exc), record))
                continue
        key = (row[only],) if only is not None else tuple(row[k] for k in target.keys)
        if key in seen:
            shown = ", ".join(f"{k}={v!r}" for k, v in zip(target.keys, key, strict=True))
            errors.append((index, f"duplicate key {shown} (an earlier record has it)", record))
            continue
        seen.add(key)
        rows.append(row)
    return rows, errors


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
    store = ImportStore(ctx.db)
    imported = failed = 0

    def batches() -> Iterator[Validated]:
        seen: set[tuple[Any, ...]] = set()
        prepared: PreparedInsert | None = None
        for start in range(0, total, params.batch_size):
            chunk = records[start : start + params.batch_size]
            rows, errors = validate_batch(target, chunk, start, seen)
            values = None
            if rows:
                _stamp(rows, target, ctx.task.id)
                if prepared is None:
                    prepared = store.prepare_upsert(target.table, target.keys, list(rows[0]))
                if prepared is not None:
                    values = (prepared, prepared.parameters(rows))
            yield start + len(chunk), rows, values, errors

    # Validation and the driver parameters are made in a worker thread a batch or two ahead of
    # the writes.
    async with ThreadedIterator(batches) as validated:
        async for done, rows, values, errors in validated:
            for index, reason, record in errors:
                await ctx.record_error(reason, record, index)
            failed += len(errors)
            if values is not None:
                imported += await store.upsert_prepared(*values)
            elif rows:
                imported += await store.upsert_records(target.table, target.keys, rows)
            ctx.report(processed=done, message=f"{done}/{total} records, {failed} rejected")
            await ctx.checkpoint()
    ctx.report(progress=100, message=f"imported {imported} of {total} records, {failed} rejected")
    return {"target": target.name, "total": total, "imported": imported, "failed": failed}


def _stamp(rows: list[dict[str, Any]], target: ImportTarget, task_id: str) -> None:
    now = naive(utcnow())
    values = {"task_id": task_id, "updated_at": now}
    for column in target.stamp_columns:
        for row in rows:
            row[column] = values[column]


SPEC = HandlerSpec(
    task_type="records_import",
    run=run,
    params=RecordsImportParams,
    description="Validates JSON records against a declared target and upserts the valid ones.",
)
