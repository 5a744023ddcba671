"""Errors a handler raises to tell the engine how an attempt ended."""

from __future__ import annotations


class EngineError(Exception):
    """The task failed."""


class RetryableError(EngineError):
    """A transient failure: the task is retried with backoff while it has attempts left."""


class PermanentError(EngineError):
    """A failure that retrying cannot fix: the task fails now."""


class TaskCancelled(EngineError):
    """The task was cancelled; raised by `TaskContext.checkpoint`."""


class LeaseLost(EngineError):
    """This node no longer holds the task's lease; another node may run it."""
