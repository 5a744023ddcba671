"""What the service needs to know about task types, as protocols of its own.

The task types live in `engine/handlers/` (each a `HandlerSpec`, gathered in a `Registry`);
the service checks a create request against them but must not import the engine. So it states
here what it reads of a task type and of the collection of them, and the engine's `Registry`
and `HandlerSpec` satisfy these protocols without naming them (dependency inversion).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Protocol


class UnknownTaskType(KeyError):
    """No task type of this name is registered."""


class TaskType(Protocol):
    """One registered task type, as the service sees it."""

    @property
    def task_type(self) -> str:
        """Its name, as stored in `sync_tasks.task_type`."""

    @property
    def default_priority(self) -> int:
        """The priority of a create request that leaves it out."""

    @property
    def default_max_attempts(self) -> int | None:
        """The attempts of a create request that leaves them out (None: the setting's)."""

    @property
    def needs_data_source(self) -> bool:
        """True when a create request must name a `data_source_id`."""

    @property
    def external(self) -> bool:
        """True when only external workers claim it; its parameters name `service`/`group`."""

    @property
    def maintenance(self) -> bool:
        """True when it deletes data: only a maintainer may enqueue it by hand."""

    def validate(self, parameters: Mapping[str, Any]) -> Any:
        """The parsed parameters; raises pydantic's `ValidationError` naming bad fields."""


class TaskTypes(Protocol):
    """The task types this daemon knows, by name."""

    def get(self, task_type: str) -> TaskType:
        """The type of that name, or `UnknownTaskType`."""

    def __contains__(self, task_type: object) -> bool: ...

    def __iter__(self) -> Iterator[TaskType]: ...

    def names(self) -> list[str]:
        """Registered names, sorted."""
