"""Why a pending task waits, in terms a person can act on.

- `due_later`: its `run_after` is in the future (`due_at`); nobody may start it before then.
- `retry_backoff`: an attempt failed and the next one waits out its backoff (`due_at`,
  `next_attempt` of `max_attempts`, the last attempt's error in `last_error`).
- `external_worker`: an external worker of its service must claim it (`GET /api/crontask`).
- `no_node`: no daemon on this database is alive to run it.
- `type_limit`: every alive daemon runs as many tasks of its type as the type allows.
- `no_free_slot`: every slot of the alive daemons is busy (`slots`), and `position` tasks
  (itself included) are ahead of it in the claim order.
- `queued`: due, with a slot free: a daemon starts it within its poll interval.

The facts come from the task, the alive daemons' slots (`sync_nodes`) and the running tasks;
`explain` only reads them, so an answer can be stale by one heartbeat.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, func, or_, select

from schedule.clock import Clock, naive, utcnow
from schedule.models import status_is, sync_tasks
from schedule.nodes import ClusterLoad, NodeStore
from schedule.store import Connector
from schedule.task import TaskRecord, TaskStatus

T = sync_tasks


@dataclass(frozen=True)
class TypeRule:
    """What the claim order knows about a task type: claimed by external workers only, and
    how many of it one daemon runs at once (None: only the pool size)."""

    external: bool = False
    per_node: int | None = None


@dataclass(frozen=True)
class Waiting:
    """Why one pending task waits (see the module's docstring for the reasons)."""

    reason: str
    next_attempt: int
    max_attempts: int
    due_at: datetime | None = None
    last_error: str | None = None
    slots_busy: int | None = None
    slots_total: int | None = None
    position: int | None = None
    type_running: int | None = None
    type_limit: int | None = None


def explain(
    task: TaskRecord,
    now: datetime,
    load: ClusterLoad,
    rule: TypeRule,
    position: int | None = None,
) -> Waiting | None:
    """Why `task` waits; None unless it is pending."""
    if task.status is not TaskStatus.PENDING:
        return None
    nxt, most = task.attempt + 1, task.max_attempts
    if task.run_after > now:
        if task.attempt:
            return Waiting("retry_backoff", nxt, most, due_at=task.run_after, last_error=task.error)
        return Waiting("due_later", nxt, most, due_at=task.run_after)
    if rule.external:
        return Waiting("external_worker", nxt, most, position=position)
    busy, total = load.busy, load.slots
    if load.nodes == 0:
        return Waiting("no_node", nxt, most, slots_busy=busy, slots_total=total)
    if rule.per_node is not None:
        limit = rule.per_node * load.nodes
        running = load.running_by_type[task.task_type]
        if running >= limit:
            return Waiting(
                "type_limit",
                nxt,
                most,
                slots_busy=busy,
                slots_total=total,
                type_running=running,
                type_limit=limit,
            )
    reason = "no_free_slot" if busy >= total else "queued"
    return Waiting(reason, nxt, most, slots_busy=busy, slots_total=total, position=position)


async def queue_position(db: Connector, task: TaskRecord, now: datetime) -> int:
    """The task's place in the claim order (priority DESC, run_after, created_at) among the
    pending tasks that are due and claimed like it (the local pool's, or its service's): 1 is
    the next one claimed."""
    run_after, created = naive(task.run_after), naive(task.created_at)
    ahead = or_(
        T.c.priority > task.priority,
        and_(
            T.c.priority == task.priority,
            or_(
                T.c.run_after < run_after,
                and_(T.c.run_after == run_after, T.c.created_at < created),
            ),
        ),
    )
    same_queue = T.c.service.is_(None) if task.service is None else T.c.service == task.service
    query = select(func.count()).where(
        status_is(TaskStatus.PENDING),
        T.c.run_after <= naive(now),
        same_queue,
        ahead,
    )
    async with db.read() as conn:
        return int((await conn.execute(query)).scalar_one()) + 1


class WaitExplainer:
    """Explains the pending tasks of an answer: the daemons' load is read once per call, the
    place in line only when asked (one count per task)."""

    def __init__(
        self,
        db: Connector,
        nodes: NodeStore,
        rules: Mapping[str, TypeRule],
        clock: Clock = utcnow,
    ) -> None:
        self.db = db
        self.nodes = nodes
        self.rules = rules
        self.clock = clock

    async def explain(
        self, tasks: Sequence[TaskRecord], *, positions: bool = False
    ) -> dict[str, Waiting]:
        """`task id -> Waiting` for each pending task of `tasks`."""
        pending = [t for t in tasks if t.status is TaskStatus.PENDING]
        if not pending:
            return {}
        now = self.clock()
        # The daemons' load matters only to tasks that are due (read it only then).
        due = any(t.run_after <= now for t in pending)
        load = await self.nodes.load() if due else ClusterLoad(0, 0, 0, Counter())
        out: dict[str, Waiting] = {}
        for task in pending:
            place = None
            if positions and task.run_after <= now:
                place = await queue_position(self.db, task, now)
            waiting = explain(task, now, load, self.rules.get(task.task_type, TypeRule()), place)
            if waiting is not None:
                out[task.id] = waiting
        return out
