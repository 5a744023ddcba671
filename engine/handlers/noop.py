"""`noop`: a task that does nothing, slowly if asked; for diagnostics and benchmarks."""

from __future__ import annotations

import asyncio

from pydantic import Field

from engine.context import TaskContext
from engine.exceptions import PermanentError, RetryableError
from engine.handlers.base import HandlerSpec, JsonObject, Parameters


class NoopParams(Parameters):
    """Parameters of `noop`."""

    sleep_s: float = Field(0.0, ge=0, le=86400, description="total time to spend")
    steps: int = Field(0, ge=0, le=100000, description="progress steps (checkpoints)")
    fail_times: int = Field(0, ge=0, le=100, description="fail retryably on the first N attempts")
    fail_permanently: bool = Field(False, description="fail without retry")
    cooperative: bool = Field(True, description="honour cancel requests at checkpoints")


async def run(ctx: TaskContext) -> JsonObject:
    """Sleep `sleep_s` in `steps` steps, reporting progress, then succeed or fail as asked."""
    params = ctx.params
    assert isinstance(params, NoopParams)
    steps = params.steps or (1 if params.sleep_s else 0)
    ctx.report(total=steps, processed=0, message="starting")
    for step in range(1, steps + 1):
        await asyncio.sleep(params.sleep_s / steps)
        ctx.report(processed=step, message=f"step {step}/{steps}")
        if params.cooperative:
            await ctx.checkpoint()
    if params.fail_permanently:
        raise PermanentError("noop: asked to fail permanently")
    if ctx.task.attempt <= params.fail_times:
        raise RetryableError(f"noop: planned failure {ctx.task.attempt}/{params.fail_times}")
    return {"steps": steps, "attempt": ctx.task.attempt}


SPEC = HandlerSpec(
    task_type="noop",
    run=run,
    params=NoopParams,
    description="Does nothing (optionally slowly, or failing); for diagnostics and benchmarks.",
)
