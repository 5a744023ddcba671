"""Retry decisions: whether a failed attempt runs again, and when (tenacity's waits)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from tenacity import RetryCallState, wait_exponential_jitter


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter: `initial * 2**(n-1)` plus up to `initial` random."""

    initial_s: float = 1.0
    max_s: float = 300.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait before attempt `attempt + 1` (attempt counts from 1)."""
        if self.initial_s <= 0:
            return 0.0
        wait = wait_exponential_jitter(
            multiplier=self.initial_s, max=self.max_s, jitter=self.initial_s
        )
        state = RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
        state.attempt_number = attempt
        return float(wait(state))

    def next_run(self, attempt: int, now: datetime) -> datetime:
        """When the retry of a task whose attempt `attempt` failed becomes due."""
        return now + timedelta(seconds=self.delay(attempt))


def has_attempts_left(attempt: int, max_attempts: int) -> bool:
    """True when another attempt is allowed after attempt number `attempt`."""
    return attempt < max_attempts
