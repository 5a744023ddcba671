"""The event bus: what happened to tasks and jobs, told to whoever subscribed at start-up.

The service, the engine, the periodic scheduler and the callback sender publish here; the
metrics, the callback sender, the dashboard's live feed and the upload clean-up subscribe.
Publishers do not know their subscribers, and `schedule/` never has to import `engine/` or
`controllers/` to tell them something.

Every event has a kind (`EventKind`) and a payload type (`TaskEvent`, `FireEvent`,
`CallbackEvent`, `ProgressEvent`, `NodeEvent`); `PAYLOADS` says which payload each kind
carries. A subscriber names the payload type and the kinds it wants, and gets exactly those
(`EventBus.subscribe`).
Handlers are plain functions called in the publisher's turn of the event loop, in subscription
order: they must be quick and must not block (start an asyncio task for slow work). One that
raises is logged and skipped; it never breaks the publisher nor the other subscribers.

Adding a kind: a member of `EventKind`, its payload in `PAYLOADS` (a new payload type joins
`Event`), the `publish` call where it happens, and a line in docs/architecture.md.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Iterable
from typing import NamedTuple, TypeVar

from schedule.records import Outcome
from schedule.task import TaskRecord

log = logging.getLogger(__name__)


class EventKind(enum.StrEnum):
    """What happened. The values are what the live feed shows as `event` and `kinds`."""

    CREATED = "created"
    """The service created a task (a create, a batch create, a retry, a periodic fire)."""
    UPDATED = "updated"
    """The service changed a pending task on request."""
    CANCEL_REQUESTED = "cancel_requested"
    """A running task was asked to stop (cooperatively, then by force)."""
    CANCELLED = "cancelled"
    """A pending task was cancelled on request (published after its `FINISHED`)."""
    STARTED = "started"
    """An attempt began: claimed by this node's pool, or by an external worker."""
    FINISHED = "finished"
    """An attempt's outcome is written; `outcome` says which (a pending retry included)."""
    RELEASED = "released"
    """This node gave a task back untouched (shutdown, or stuck past its cancellation)."""
    LOST = "lost"
    """This node lost a task's lease; another node owns the task now."""
    RESCUED = "rescued"
    """A task whose lease expired (its node or worker went silent) was taken back."""
    SCHEDULE_FIRED = "schedule_fired"
    """A schedule's fire was handled: enqueued, caught up, skipped, queued, missed or failed."""
    CALLBACK_ATTEMPTED = "callback_attempted"
    """A completion callback delivery attempt ended: delivered, retry or failed."""
    PROGRESS_SAVED = "progress_saved"
    """The pool wrote the live progress of running tasks to the database (at most once per
    `SYNCD_PROGRESS_FLUSH_S`, only when some changed)."""
    DATABASE_DOWN = "database_down"
    """The pool's first database error after it last reached the database."""
    DATABASE_UP = "database_up"
    """The pool reached the database again after `DATABASE_DOWN`."""


class TaskEvent(NamedTuple):
    """A change to one task (a named tuple: the engine makes two per task it runs)."""

    kind: EventKind
    task: TaskRecord
    outcome: Outcome | None = None


class FireEvent(NamedTuple):
    """One fire of a schedule: its `outcome` (`schedule.definition.FireOutcome`: enqueued,
    caught_up, skipped_overlap, queued, missed, failed) and, when it enqueued a task, its lag
    (the task's creation minus the scheduled time, seconds)."""

    kind: EventKind
    job_id: str
    outcome: str
    lag_s: float | None = None

    @property
    def ok(self) -> bool:
        """Whether the fire went as its policies say (it did not fail)."""
        return self.outcome != "failed"


class CallbackEvent(NamedTuple):
    """One completion callback delivery attempt and how it ended."""

    kind: EventKind
    task: TaskRecord
    result: str  # delivered | retry | failed


class ProgressEvent(NamedTuple):
    """The tasks whose live progress was just written."""

    kind: EventKind
    task_ids: tuple[str, ...]


class NodeEvent(NamedTuple):
    """A change in this node's own state (`detail` says what went wrong, if anything)."""

    kind: EventKind
    node_id: str
    detail: str = ""


Event = TaskEvent | FireEvent | CallbackEvent | ProgressEvent | NodeEvent

PAYLOADS: dict[EventKind, type[Event]] = {
    EventKind.CREATED: TaskEvent,
    EventKind.UPDATED: TaskEvent,
    EventKind.CANCEL_REQUESTED: TaskEvent,
    EventKind.CANCELLED: TaskEvent,
    EventKind.STARTED: TaskEvent,
    EventKind.FINISHED: TaskEvent,
    EventKind.RELEASED: TaskEvent,
    EventKind.LOST: TaskEvent,
    EventKind.RESCUED: TaskEvent,
    EventKind.SCHEDULE_FIRED: FireEvent,
    EventKind.CALLBACK_ATTEMPTED: CallbackEvent,
    EventKind.PROGRESS_SAVED: ProgressEvent,
    EventKind.DATABASE_DOWN: NodeEvent,
    EventKind.DATABASE_UP: NodeEvent,
}
"""The payload type each kind is published with."""

TASK_KINDS: frozenset[EventKind] = frozenset(k for k, p in PAYLOADS.items() if p is TaskEvent)
"""Every kind whose payload is a `TaskEvent`."""

E = TypeVar("E", bound=Event)
Handler = Callable[[E], None]


class EventBus:
    """Delivers each published event to the handlers subscribed to its kind."""

    def __init__(self) -> None:
        # Tuples, replaced on each change: a handler may subscribe or unsubscribe while an
        # event is being delivered without disturbing that delivery.
        self._handlers: dict[EventKind, tuple[Callable[[Event], None], ...]] = {}

    def subscribe(
        self, payload: type[E], kinds: Iterable[EventKind], handler: Handler[E]
    ) -> Callable[[], None]:
        """Call `handler` with every event of `kinds` (each must carry `payload`); returns a
        function that unsubscribes it. Subscribe at start-up, before anything is published."""
        chosen: tuple[EventKind, ...] = tuple(dict.fromkeys(kinds))
        for kind in chosen:
            if PAYLOADS[kind] is not payload:
                raise TypeError(
                    f"{kind.name} events carry {PAYLOADS[kind].__name__}, not {payload.__name__}"
                )
        call: Callable[[Event], None] = handler  # type: ignore[assignment]
        for kind in chosen:
            self._handlers[kind] = (*self._handlers.get(kind, ()), call)

        def unsubscribe() -> None:
            for each in chosen:
                rest = list(self._handlers.get(each, ()))
                if call in rest:
                    rest.remove(call)
                if rest:
                    self._handlers[each] = tuple(rest)
                else:
                    self._handlers.pop(each, None)

        return unsubscribe

    def wants(self, kind: EventKind) -> bool:
        """Whether anyone subscribed to `kind`: a publisher on a hot path may skip building
        an event nobody reads."""
        return kind in self._handlers

    def publish(self, event: Event) -> None:
        """Hand `event` to its kind's handlers, in subscription order; a handler that raises
        is logged and the others still run."""
        for handler in self._handlers.get(event.kind, ()):
            try:
                handler(event)
            except Exception:
                log.exception(
                    "event subscriber failed",
                    extra={"action": "event", "event": event.kind.value, **_ids(event)},
                )

    def subscribers(self, kind: EventKind) -> int:
        """How many handlers `kind` has (for start-up checks and tests)."""
        return len(self._handlers.get(kind, ()))


def _ids(event: Event) -> dict[str, str]:
    if isinstance(event, FireEvent):
        return {"job": event.job_id}
    if isinstance(event, ProgressEvent):
        return {}
    if isinstance(event, NodeEvent):
        return {"node_id": event.node_id}
    return {"task_id": event.task.id}
