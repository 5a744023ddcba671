"""`partnumber_book_retention`: GFS retention of partnumber books (DESIGN.md, Partnumber books)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from config.settings import Settings
from engine.context import TaskContext
from engine.exceptions import RetryableError
from engine.handlers.base import HandlerSpec, JsonObject, Parameters
from schedule.books import RetentionResult
from schedule.exceptions import LockBusy
from schedule.gfs import BookStamp, GfsDecision, KeepPolicy, select_books


def policy_of(settings: Settings) -> KeepPolicy:
    """The keep counts of the settings (0 disables a tier)."""
    return KeepPolicy(
        daily=settings.keep_daily,
        weekly=settings.keep_weekly,
        monthly=settings.keep_monthly,
        yearly=settings.keep_yearly,
    )


async def apply_retention(ctx: TaskContext, now: datetime | None = None) -> RetentionResult:
    """Run GFS retention with the settings' policy and time zone; shared with the snapshot."""
    settings = ctx.settings
    policy, tz, moment = policy_of(settings), settings.tz, now or ctx.clock()

    def decide(books: Sequence[BookStamp]) -> GfsDecision:
        return select_books(books, policy, tz, moment)

    try:
        return await ctx.stores.books.retain(decide, holder=settings.node_id)
    except LockBusy as exc:
        raise RetryableError(str(exc)) from None


def retention_json(result: RetentionResult) -> dict[str, Any]:
    """The retention part of a task result."""
    return {
        "kept": result.kept,
        "deleted": result.deleted,
        "deleted_items": result.deleted_items,
        "reasons": result.reasons,
    }


async def run(ctx: TaskContext) -> JsonObject:
    """Delete the books GFS does not keep; the result lists kept and deleted versions."""
    ctx.report(progress=0, message="applying retention")
    result = await apply_retention(ctx)
    ctx.report(progress=100, message=f"kept {len(result.kept)}, deleted {len(result.deleted)}")
    return retention_json(result)


SPEC = HandlerSpec(
    task_type="partnumber_book_retention",
    run=run,
    params=Parameters,
    concurrency=1,
    maintenance=True,
    description="Deletes partnumber books that GFS retention does not keep (never the active one).",
)
