"""`full_sync`: copy a whole data source into its target table (and, when the source says
so, delete target rows the source no longer has).

The work is `engine.sync.run_sync`; the task names its source by `data_source_id` (and an
`interface_id` to pick one endpoint, table or query of it).
"""

from __future__ import annotations

from engine.context import TaskContext
from engine.handlers.base import HandlerSpec, JsonObject
from engine.sync import SyncParams, run_sync


async def run(ctx: TaskContext) -> JsonObject:
    """Run the sync; the result has inserted, updated, deleted and failed counts."""
    return await run_sync(ctx, incremental=False)


SPEC = HandlerSpec(
    task_type="full_sync",
    run=run,
    params=SyncParams,
    needs_data_source=True,
    description="Upserts every row of a data source into its target table.",
)
