"""The handler interface: a registered task type, its run function, its limits and defaults."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import ConfigDict, ValidationError

from engine.validation import NoBoolNumbers
from schedule.tasktypes import UnknownTaskType

if TYPE_CHECKING:
    from engine.context import TaskContext

JsonObject = dict[str, Any]
RunFunction = Callable[["TaskContext"], Awaitable[JsonObject | None]]


class Parameters(NoBoolNumbers):
    """Base of a handler's parameter model: unknown parameters are refused, and a boolean is
    not a number."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class HandlerSpec:
    """One task type (the service reads it as `schedule.tasktypes.TaskType`).

    `params` validates `parameters` at create time (a 422 names the bad field) and is what the
    run function reads through `ctx.params`. `concurrency` caps how many tasks of this type a
    node runs at once (None: only the pool size). The defaults apply when a create request
    leaves the field out.
    `external` types are never run here: see the field's comment.
    `maintenance` types delete data (retention): only an admin may enqueue one by hand (create,
    batch create, retry, a schedule's run now); the daemon's own periodic jobs still fire them.
    """

    task_type: str
    run: RunFunction
    params: type[Parameters] = Parameters
    concurrency: int | None = None
    default_priority: int = 0
    default_max_attempts: int | None = None
    default_timeout_s: float | None = None
    description: str = ""
    needs_data_source: bool = False
    # Claimed only by external workers through `GET /api/crontask`, never by the local pool;
    # `params` must then have `service: str` and `group: str | None` (see handlers/external.py).
    external: bool = False
    maintenance: bool = False

    def validate(self, parameters: Mapping[str, Any]) -> Parameters:
        """Parse parameters; raises pydantic's `ValidationError`."""
        return self.params.model_validate(dict(parameters))


class Registry:
    """The task types this daemon knows, by name (the service reads it as
    `schedule.tasktypes.TaskTypes`)."""

    def __init__(self) -> None:
        self._specs: dict[str, HandlerSpec] = {}

    def register(self, spec: HandlerSpec) -> HandlerSpec:
        """Add a task type; a second registration of a name is a programming error."""
        if spec.task_type in self._specs:
            raise ValueError(f"task type {spec.task_type!r} registered twice")
        self._specs[spec.task_type] = spec
        return spec

    def get(self, task_type: str) -> HandlerSpec:
        """The spec of a type, or `UnknownTaskType`."""
        try:
            return self._specs[task_type]
        except KeyError:
            raise UnknownTaskType(task_type) from None

    def __contains__(self, task_type: object) -> bool:
        return task_type in self._specs

    def __iter__(self) -> Iterator[HandlerSpec]:
        return iter(self._specs.values())

    def names(self) -> list[str]:
        """Registered type names, sorted."""
        return sorted(self._specs)


__all__ = ["HandlerSpec", "Parameters", "Registry", "UnknownTaskType", "ValidationError"]
