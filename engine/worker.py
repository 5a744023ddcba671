"""Running one attempt of one task and turning how it ended into an `Outcome` (no SQL here)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime

from engine.context import TaskContext
from engine.exceptions import LeaseLost, PermanentError, RetryableError, TaskCancelled
from engine.handlers.base import HandlerSpec, JsonObject
from engine.retry import RetryPolicy, has_attempts_left
from schedule.records import Outcome
from schedule.task import TaskStatus

log = logging.getLogger(__name__)


class AttemptRunner:
    """Runs a handler under the task's timeout and classifies the result.

    Returns None when the attempt must not be written at all: the node is shutting down (the
    engine gives the task back) or lost the lease (another node owns the task now).
    """

    def __init__(self, retry: RetryPolicy, clock: Callable[[], datetime]) -> None:
        self.retry = retry
        self.clock = clock

    async def run(self, spec: HandlerSpec, ctx: TaskContext) -> Outcome | None:
        """Run the attempt to its end; never raises except for the caller's own cancellation."""
        task = ctx.task
        timeout = task.timeout_s or spec.default_timeout_s
        scope: asyncio.Timeout | None = None
        try:
            if timeout is None:  # no timer to arm and disarm per task (the common case)
                result = await _attempt(spec, ctx)
            else:
                async with asyncio.timeout(timeout) as scope:
                    result = await _attempt(spec, ctx)
        except TaskCancelled as exc:
            return self._outcome(ctx, TaskStatus.CANCELLED, "cancelled", error=str(exc))
        except LeaseLost:
            return None
        except asyncio.CancelledError:
            if ctx.cancel.shutdown or ctx.cancel.lease_lost:
                _uncancel()
                return None
            raise
        except TimeoutError as exc:
            if scope is not None and scope.expired():
                return self._failure(ctx, f"timed out after {timeout:g} s", retryable=True)
            return self._failure(ctx, _describe(exc), retryable=False)
        except RetryableError as exc:
            return self._failure(ctx, _describe(exc), retryable=True)
        except PermanentError as exc:
            return self._failure(ctx, _describe(exc), retryable=False)
        except Exception as exc:  # a handler bug must fail its task, never the daemon
            ctx.log.exception("handler raised an unexpected error", extra={"action": "crash"})
            return self._failure(ctx, _describe(exc), retryable=False)
        return self._outcome(ctx, TaskStatus.COMPLETED, "completed", result=result or {})

    def _failure(self, ctx: TaskContext, error: str, *, retryable: bool) -> Outcome:
        task = ctx.task
        if retryable and has_attempts_left(task.attempt, task.max_attempts):
            retry_at = self.retry.next_run(task.attempt, self.clock())
            return self._outcome(ctx, TaskStatus.PENDING, "retry", error=error, retry_at=retry_at)
        return self._outcome(ctx, TaskStatus.FAILED, "failed", error=error)

    @staticmethod
    def _outcome(
        ctx: TaskContext,
        status: TaskStatus,
        outcome: str,
        *,
        result: dict[str, object] | None = None,
        error: str | None = None,
        retry_at: datetime | None = None,
    ) -> Outcome:
        return Outcome(
            task_id=ctx.task.id,
            attempt=ctx.task.attempt,
            status=status,
            outcome=outcome,
            result=result,
            error=error,
            retry_at=retry_at,
            progress=ctx.live.snapshot(),
        )


async def _attempt(spec: HandlerSpec, ctx: TaskContext) -> JsonObject | None:
    """The handler's run plus the final error flush; a cancel request becomes `TaskCancelled`."""
    try:
        result = await spec.run(ctx)
        await ctx.flush_errors()
    except asyncio.CancelledError:
        if ctx.cancel.requested and not (ctx.cancel.shutdown or ctx.cancel.lease_lost):
            _uncancel()
            raise TaskCancelled(ctx.cancel.reason or "cancelled (forced)") from None
        raise
    return result


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    if isinstance(exc, RetryableError | PermanentError):
        return text or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _uncancel() -> None:
    task = asyncio.current_task()
    if task is not None:
        task.uncancel()
