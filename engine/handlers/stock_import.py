"""`stock_import` (seed 000): a stock workbook's rows into `stock_log`, in batches.

The workbook was uploaded by `POST /api/imports/stock` and stored under the state directory
(the `file` parameter). It is read and every row parsed in a worker thread that runs at most a
couple of batches ahead of the writes (`ThreadedIterator`), so a million-row sheet imports with
bounded memory while the event loop stays free. Each batch is one transaction: its valid rows
go to `stock_log` and its unmapped, not ignored partnumbers to `qt_vendor_partnumber_seen`.
Invalid rows become record errors with their sheet row number. A missing required column, a
damaged or empty workbook fail the task with a message saying so (and how many rows earlier
batches committed, which stay); so does a workbook past the `SYNCD_XLSX_*` limits, before
anything is parsed (`engine.sources.workbook`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

from pydantic import Field

from engine.context import TaskContext
from engine.exceptions import PermanentError
from engine.handlers.base import HandlerSpec, JsonObject, Parameters
from engine.sources.dimension import declared_rows
from engine.sources.exceptions import RowError, SourceError
from engine.sources.sheets import STOCK_COLUMNS, batched_records, parse_stock_row
from engine.sources.streaming import ThreadedIterator
from engine.sources.workbook import UnpackLimits, check_file
from engine.uploads import ImportFiles
from schedule.imports import StockEntry

RowProblem = tuple[int, str, dict[str, object]]
Batch = tuple[list[StockEntry], list[RowProblem]]


class StockImportParams(Parameters):
    """The stored upload, its original name (for messages) and the rows per transaction."""

    file: Annotated[str, Field(pattern=r"^[0-9a-f]{32}\.xlsx$")]
    filename: str = Field("", max_length=255)
    batch_size: int = Field(5000, ge=1, le=50_000)


def parse_batches(path: Path, size: int, limits: UnpackLimits) -> Iterator[Batch]:
    """Each batch of the sheet as (valid entries, invalid rows); runs in the worker thread."""
    for records in batched_records(path, STOCK_COLUMNS, size, limits=limits):
        entries: list[StockEntry] = []
        problems: list[RowProblem] = []
        for number, record in records:
            try:
                row = parse_stock_row(record)
            except RowError as exc:
                problems.append((number, exc.reason, record))
                continue
            entries.append(
                StockEntry(
                    number,
                    row.partnumber,
                    row.vendor,
                    row.description,
                    row.qty,
                    row.price,
                    row.warehouse,
                )
            )
        yield entries, problems


async def run(ctx: TaskContext) -> JsonObject:
    """Import every row; the result counts rows read, written and rejected."""
    params = ctx.params
    assert isinstance(params, StockImportParams)
    path = ImportFiles(ctx.settings.state_dir).path(params.file)
    name = params.filename or params.file
    if not await asyncio.to_thread(path.is_file):
        raise PermanentError(f"{name}: the uploaded file is no longer stored; upload it again")
    limits = UnpackLimits.from_settings(ctx.settings)
    try:  # checked at upload too; a workbook bomb fails here before anything is parsed
        await asyncio.to_thread(check_file, path, limits, name)
    except SourceError as exc:
        raise PermanentError(str(exc)) from None
    declared = await asyncio.to_thread(declared_rows, path)
    total = declared - 1 if declared is not None else None  # less the header row
    ctx.report(processed=0, total=total, progress=0, message=f"reading {name}")
    store = ctx.stores.imports
    globs = await store.ignore_globs()
    read = written = failed = unmapped = 0
    try:
        async with ThreadedIterator(
            lambda: parse_batches(path, params.batch_size, limits), name="stock-sheet"
        ) as batches:
            async for entries, problems in batches:
                for number, reason, record in problems:
                    await ctx.record_error(reason, _json_record(record), number)
                failed += len(problems)
                outcome = await store.write_stock_batch(ctx.task.id, entries, globs)
                written += outcome.written
                unmapped += outcome.unmapped_seen
                read += len(entries) + len(problems)
                shown_total = max(total, read) if total is not None else None
                ctx.report(
                    processed=read,
                    total=shown_total,
                    message=f"{name}: {read} rows read, {written} written, {failed} rejected",
                )
                await ctx.checkpoint()
    except SourceError as exc:
        raise PermanentError(f"{exc} ({written} rows were written before the error)") from None
    if read == 0:
        raise PermanentError(f"{name}: the sheet has a header but no data rows")
    ctx.report(processed=read, total=read, message=f"{name}: {written} rows, {failed} rejected")
    return {
        "file": name,
        "rows_total": read,
        "inserted": written,
        "failed": failed,
        "unmapped_partnumbers": unmapped,
    }


def _json_record(record: dict[str, object]) -> dict[str, object]:
    """A sheet record as JSON-safe values (dates and decimals as text)."""
    return {
        k: v if v is None or isinstance(v, str | int | float | bool) else str(v)
        for k, v in record.items()
    }


SPEC = HandlerSpec(
    task_type="stock_import",
    run=run,
    params=StockImportParams,
    concurrency=2,
    description="Imports an uploaded stock .xlsx into stock_log (seed 000).",
)
