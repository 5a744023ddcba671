"""The completion-callback outbox: which finished tasks still owe a callback, kept in the task
table (`callback_status`, `callback_attempts`, `callback_error`, `callback_next_at`) so that
deliveries survive restarts and are shared by nodes. The sender is `engine.callbacks`.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select, update

from schedule.clock import Clock, naive
from schedule.records import CallbackDelivery
from schedule.store.connector import Connector
from schedule.store.queries import T
from schedule.task import TaskRecord


class CallbackOutbox:
    """Claims due deliveries and records how each attempt ended."""

    def __init__(self, db: Connector, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    async def claim(self, limit: int, claim_s: float) -> list[CallbackDelivery]:
        """Take up to `limit` finished tasks whose callback is due, for one delivery attempt
        each; the claim holds them for `claim_s` so that no other node sends them meanwhile."""
        now = naive(self.clock())
        query = self.db.lock(
            select(T)
            .where(
                T.c.callback_status == "pending",
                T.c.finished_at.is_not(None),
                or_(T.c.callback_next_at.is_(None), T.c.callback_next_at <= now),
            )
            .order_by(T.c.finished_at)
            .limit(limit),
            skip_locked=True,
        )
        out: list[CallbackDelivery] = []
        async with self.db.write() as conn:
            for row in (await conn.execute(query)).mappings().all():
                task = TaskRecord.from_row(row)
                attempt = task.callback_attempts + 1
                await conn.execute(
                    update(T)
                    .where(T.c.id == task.id, T.c.callback_attempts == task.callback_attempts)
                    .values(
                        callback_attempts=attempt,
                        callback_next_at=now + timedelta(seconds=claim_s),
                    )
                )
                out.append(CallbackDelivery(task, attempt))
        return out

    async def settle(
        self, task_id: str, attempt: int, error: str | None, retry_at: datetime | None
    ) -> None:
        """Record how a delivery attempt ended: delivered (no error), to retry at `retry_at`,
        or failed for good (an error and no `retry_at`). A stale attempt changes nothing."""
        if error is None:
            values: dict[str, Any] = {"callback_status": "delivered", "callback_next_at": None}
        elif retry_at is not None:
            values = {"callback_next_at": naive(retry_at)}
        else:
            values = {"callback_status": "failed", "callback_next_at": None}
        async with self.db.write() as conn:
            await conn.execute(
                update(T)
                .where(T.c.id == task_id, T.c.callback_attempts == attempt)
                .values(callback_error=error, **values)
            )
