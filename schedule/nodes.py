"""The daemons sharing the database (`sync_nodes`): who they are, whether they are alive, and
how busy.

Each daemon writes its row when it starts and again on every heartbeat (its version, start
time, slots and busy slots) and stamps `stopped_at` when it stops gracefully. A node is alive
while its last heartbeat is recent (`alive_s`, three heartbeats); rows not heard of for a day
are deleted by the next heartbeat of any node, so a host whose node id changes with every start
(the default `hostname-pid`) does not pile them up. What a node runs is read from `sync_tasks`
(its leases), not stored twice.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Row, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from schedule.clock import Clock, naive, utc, utcnow
from schedule.models import status_is, sync_nodes, sync_tasks
from schedule.store import Connector
from schedule.task import TaskStatus

N = sync_nodes
T = sync_tasks
FORGET_AFTER = timedelta(days=1)
#: At most this many running tasks are listed per node (a node runs at most 256 at once).
RUNNING_LISTED = 256


@dataclass(frozen=True)
class NodeBeat:
    """What a node says about itself on each heartbeat."""

    node_id: str
    version: str
    started_at: datetime
    slots: int


@dataclass(frozen=True)
class RunningTask:
    """A task a node holds the lease of."""

    id: str
    reference: str
    task_type: str
    progress: int
    started_at: datetime | None


@dataclass(frozen=True)
class NodeRecord:
    """One daemon as the database knows it (times aware UTC)."""

    node_id: str
    version: str
    started_at: datetime
    heartbeat_at: datetime
    stopped_at: datetime | None
    slots: int
    busy: int  # tasks it holds the lease of now
    alive: bool
    running: list[RunningTask] = field(default_factory=list)


@dataclass(frozen=True)
class ClusterLoad:
    """How busy the alive daemons are together: what a waiting task is waiting for."""

    nodes: int
    slots: int
    busy: int
    running_by_type: Counter[str]


class NodeStore:
    """Reads and writes `sync_nodes`; reads the leases of `sync_tasks`."""

    def __init__(self, db: Connector, alive_s: float, clock: Clock = utcnow) -> None:
        self.db = db
        self.alive_s = alive_s
        self.clock = clock

    async def beat(self, beat: NodeBeat) -> None:
        """Write this node's row (insert on its first beat), and forget nodes not heard of
        for a day."""
        now = naive(self.clock())
        values = {
            "version": beat.version[:64],
            "started_at": naive(beat.started_at),
            "heartbeat_at": now,
            "stopped_at": None,
            "slots": beat.slots,
        }
        async with self.db.write() as conn:
            found = await conn.execute(update(N).where(N.c.node_id == beat.node_id).values(values))
            if found.rowcount == 0:
                try:
                    async with conn.begin_nested():
                        await conn.execute(insert(N).values(node_id=beat.node_id, **values))
                except IntegrityError:  # written by a beat of the same id in the meantime
                    await conn.execute(update(N).where(N.c.node_id == beat.node_id).values(values))
            await conn.execute(delete(N).where(N.c.heartbeat_at < now - FORGET_AFTER))

    async def stopped(self, node_id: str) -> None:
        """Say that this node stopped (a graceful stop; a killed one just goes quiet)."""
        now = naive(self.clock())
        async with self.db.write() as conn:
            await conn.execute(update(N).where(N.c.node_id == node_id).values(stopped_at=now))

    async def nodes(self) -> list[NodeRecord]:
        """Every node heard of in the last day, alive ones first, then by last heartbeat,
        each with the tasks it holds leases of."""
        async with self.db.read() as conn:
            rows = (await conn.execute(select(N).order_by(N.c.heartbeat_at.desc()))).all()
            leases = (
                await conn.execute(
                    select(
                        T.c.lease_owner,
                        T.c.id,
                        T.c.reference,
                        T.c.task_type,
                        T.c.progress,
                        T.c.started_at,
                    )
                    .where(status_is(TaskStatus.RUNNING))
                    .order_by(T.c.started_at)
                )
            ).all()
        running: dict[str, list[RunningTask]] = {}
        for owner, *task in leases:
            listed = running.setdefault(str(owner), [])
            if len(listed) < RUNNING_LISTED:
                listed.append(RunningTask(task[0], task[1], task[2], task[3], utc(task[4])))
        nodes = [self._record(row, running.get(row.node_id, [])) for row in rows]
        return sorted(nodes, key=lambda n: not n.alive)  # stable: by heartbeat within each

    def _record(self, row: Row[Any], running: Sequence[RunningTask]) -> NodeRecord:
        heartbeat = utc(row.heartbeat_at)
        started = utc(row.started_at)
        assert heartbeat is not None and started is not None
        stopped = utc(row.stopped_at)
        alive = stopped is None and self.clock() - heartbeat <= timedelta(seconds=self.alive_s)
        return NodeRecord(
            node_id=row.node_id,
            version=row.version,
            started_at=started,
            heartbeat_at=heartbeat,
            stopped_at=stopped,
            slots=row.slots,
            busy=len(running),
            alive=alive,
            running=list(running),
        )

    async def load(self) -> ClusterLoad:
        """The alive nodes' slots, and the running tasks by type (every node's)."""
        since = naive(self.clock() - timedelta(seconds=self.alive_s))
        async with self.db.read() as conn:
            nodes, slots = (
                await conn.execute(
                    select(func.count(), func.coalesce(func.sum(N.c.slots), 0)).where(
                        N.c.heartbeat_at >= since, N.c.stopped_at.is_(None)
                    )
                )
            ).one()
            by_type = (
                await conn.execute(
                    select(T.c.task_type, func.count())
                    .where(status_is(TaskStatus.RUNNING), T.c.service.is_(None))
                    .group_by(T.c.task_type)
                )
            ).all()
        running = Counter({str(kind): int(count) for kind, count in by_type})
        return ClusterLoad(int(nodes), int(slots), sum(running.values()), running)
