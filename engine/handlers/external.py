"""`external`: a task done by a program outside syncd that pulls it over HTTP (seed 003).

The worker claims the first due task of its `service` (and `group`) with `GET /api/crontask`,
reports progress, intermediate state (`temp`) and the end with `PUT /api/crontask/{id}`; each
report extends the lease, and a worker that stops reporting loses the task to the lease rescue
like any other. The local worker pool never claims this type (`HandlerSpec.external`).
"""

from __future__ import annotations

from pydantic import Field

from engine.context import TaskContext
from engine.exceptions import PermanentError
from engine.handlers.base import HandlerSpec, JsonObject, Parameters

Name = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")


class ExternalParams(Parameters):
    """Parameters of `external`: who may claim it, and anything the worker needs."""

    service: str = Name
    group: str | None = Field(None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")
    input: object = Field(None, description="what the worker works on (seed 003 `input`)")
    args: object = Field(None, description="free-form arguments for the worker (seed 003 `args`)")


async def run(ctx: TaskContext) -> JsonObject:
    """Never called: the engine does not claim external tasks. Fails loudly if it ever is."""
    raise PermanentError("external tasks are done by external workers via /api/crontask")


SPEC = HandlerSpec(
    task_type="external",
    run=run,
    params=ExternalParams,
    external=True,
    description="Done by an external worker that pulls it from /api/crontask (seed 003).",
)
