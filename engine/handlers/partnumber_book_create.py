"""`partnumber_book_create`: snapshot the vendor partnumber mappings into a new active book.

The SQL lives in `schedule.books`; this module turns its errors into task outcomes and runs
retention after the snapshot has committed (in the same task, so one request leaves the book
history bounded). A retention failure does not undo the book: it is reported in the result as
`retention_error` and logged, and the next retention run catches up.
"""

from __future__ import annotations

from engine.context import TaskContext
from engine.exceptions import PermanentError, RetryableError
from engine.handlers.base import HandlerSpec, JsonObject, Parameters
from engine.handlers.partnumber_book_retention import apply_retention, retention_json
from schedule.exceptions import LockBusy, SnapshotError


async def run(ctx: TaskContext) -> JsonObject:
    """Create the book, then apply retention; the result names the version and the counts."""
    ctx.report(progress=0, message="checking source tables")

    def progress(message: str, items: int, percent: int) -> None:
        ctx.report(progress=percent, message=message, processed=items)

    try:
        created = await ctx.stores.books.snapshot(
            ctx.settings.tz, ctx.task.id, holder=ctx.settings.node_id, progress=progress
        )
    except SnapshotError as exc:
        raise PermanentError(str(exc)) from None
    except LockBusy as exc:
        raise RetryableError(str(exc)) from None
    book = created.book
    ctx.report(progress=85, message=f"{book.version} active; applying retention")
    result: JsonObject = {
        "version": book.version,
        "book_id": book.id,
        "item_count": book.item_count,
        "ignore_patterns": created.ignore_patterns,
    }
    try:
        result["retention"] = retention_json(await apply_retention(ctx))
    except Exception as exc:  # the book is committed; report, don't fail it
        ctx.log.warning("retention after snapshot failed: %s", exc, extra={"action": "retention"})
        result["retention_error"] = f"{type(exc).__name__}: {exc}"
    ctx.report(progress=100, message=f"{book.version}: {book.item_count} items")
    return result


SPEC = HandlerSpec(
    task_type="partnumber_book_create",
    run=run,
    params=Parameters,
    concurrency=1,
    default_max_attempts=3,
    description="Snapshots lot_partnumbers into a new active partnumber book, then retention.",
)
