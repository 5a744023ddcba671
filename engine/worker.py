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
from schedule import jsontext
from schedule.records import Outcome
from schedule.task import TaskStatus

log = logging.getLogger(__name__)

#: An attempt's error is stored (and listed) at most this long: an exception's text can carry a
#: whole statement or source row, and MariaDB's TEXT column takes 64 KB at most, so a longer one
#: could never be written and its outcome would wait for the database forever.
MAX_ERROR_CHARS = 4000


class AttemptRunner:
    """Runs a handler under the task's timeout and classifies the result.

    Returns None when the attempt must not be written at all: the node is shutting down (the
    engine gives the task back) or lost the lease (another node owns the task now).
    """

    def __init__(
        self, retry: RetryPolicy, clock: Callable[[], datetime], max_result_bytes: int
    ) -> None:
        self.retry = retry
        self.clock = clock
        self.max_result_bytes = max_result_bytes

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
        try:
            size = self._result_size(result)
        except ValueError as exc:  # a handler bug: what it did cannot be reported
            ctx.log.error("%s", exc, extra={"action": "crash"})
            return self._failure(ctx, str(exc), retryable=False)
        if size > self.max_result_bytes:  # the work is done, only its report is too long
            note = (
                f"the result was {size:,} bytes as JSON; at most {self.max_result_bytes:,} are "
                "stored (SYNCD_MAX_PARAMETERS_KB)"
            )
            ctx.log.warning("%s", note, extra={"action": "result_omitted"})
            result = {"result_omitted": note}
        return self._outcome(ctx, TaskStatus.COMPLETED, "completed", result=result or {})

    @staticmethod
    def _result_size(result: JsonObject | None) -> int:
        """The handler's result's size as stored JSON; ValueError when it is not JSON (a
        handler bug may return anything). Results larger than the stored-value cap, which the
        API applies to parameters and which every list page carries, are not stored."""
        if not result:
            return 0
        try:
            return len(jsontext.dumps(result))  # ASCII: characters are bytes
        except (TypeError, ValueError, RecursionError) as exc:
            raise ValueError(f"the handler's result is not JSON: {_describe(exc)}") from None

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
            error=clip(error, MAX_ERROR_CHARS) if error is not None else None,
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


def clip(text: str, limit: int) -> str:
    """`text` cut to `limit` characters, saying how many were left out."""
    if len(text) <= limit:
        return text
    note = f" ... ({len(text) - limit:,} more characters)"
    return text[: limit - len(note)] + note


def _uncancel() -> None:
    task = asyncio.current_task()
    if task is not None:
        task.uncancel()
