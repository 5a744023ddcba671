"""`task_retention`: delete finished tasks older than `task_retention_days`, in batches.

Only finished tasks (completed, failed, cancelled) are ever deleted, with their attempts and
record errors; the store's query cannot select a pending or running one. Each batch is its own
short transaction so a large backlog never holds the database's write lock for long.
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field

from engine.context import TaskContext
from engine.handlers.base import HandlerSpec, JsonObject, Parameters


class TaskRetentionParams(Parameters):
    """Parameters of `task_retention` (all optional)."""

    older_than_days: int | None = Field(
        None, ge=1, le=36500, description="override SYNCD_TASK_RETENTION_DAYS"
    )
    batch_size: int = Field(500, ge=1, le=10000, description="tasks deleted per transaction")


async def run(ctx: TaskContext) -> JsonObject:
    """Delete batch after batch until no finished task older than the cutoff is left."""
    params = ctx.params
    assert isinstance(params, TaskRetentionParams)
    days = params.older_than_days or ctx.settings.task_retention_days
    cutoff = ctx.clock() - timedelta(days=days)
    store = ctx.stores.tasks
    deleted = batches = 0
    ctx.report(progress=0, message=f"deleting tasks finished before {cutoff.isoformat()}")
    while True:
        count = await store.delete_finished_before(cutoff, batch=params.batch_size)
        deleted += count
        batches += 1 if count else 0
        ctx.report(processed=deleted, message=f"deleted {deleted} task(s)")
        if count < params.batch_size:
            break
        await ctx.checkpoint()
    ctx.report(progress=100, message=f"deleted {deleted} task(s)")
    return {"deleted": deleted, "batches": batches, "cutoff": cutoff.isoformat(), "days": days}


SPEC = HandlerSpec(
    task_type="task_retention",
    run=run,
    params=TaskRetentionParams,
    concurrency=1,
    maintenance=True,
    description="Deletes finished tasks older than SYNCD_TASK_RETENTION_DAYS with their records.",
)
