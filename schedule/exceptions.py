"""Errors of the task service; controllers map each class to one HTTP status."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class ScheduleError(Exception):
    """The task service could not do what was asked."""

    code = "error"

    def __init__(self, message: str | None = None, details: object = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())
        self.details = details


class NotFound(ScheduleError):
    """No such task."""

    code = "not_found"


class Forbidden(ScheduleError):
    """The caller's role may not do this."""

    code = "forbidden"


class InvalidState(ScheduleError):
    """The task's current status does not allow this."""

    code = "invalid_state"


@dataclass(frozen=True)
class FieldProblem:
    """One invalid field: its dotted path and what is wrong."""

    field: str
    message: str


class InvalidInput(ScheduleError):
    """The request has invalid fields."""

    code = "validation_error"

    def __init__(self, problems: Sequence[FieldProblem], message: str | None = None) -> None:
        text = message or "; ".join(f"{p.field}: {p.message}" for p in problems)
        super().__init__(text, [{"field": p.field, "message": p.message} for p in problems])
        self.problems = tuple(problems)


class Unavailable(ScheduleError):
    """The database cannot be reached right now; try again later."""

    code = "unavailable"


class SchemaError(ScheduleError):
    """The database schema is missing or outdated: run `syncd migrate`."""

    code = "unavailable"


# ---- partnumber books -------------------------------------------------------------------------


class SnapshotError(ScheduleError):
    """The partnumber book could not be created; nothing was written."""

    code = "snapshot_failed"


class LockBusy(ScheduleError):
    """Another node holds the lock for this work; try again later."""


class DatabaseUnreachable(ScheduleError):
    """The database could not be reached or refused the connection."""

    code = "unavailable"


class UnsupportedDatabase(ScheduleError):
    """The database server lacks what syncd needs (MariaDB >= 10.6 or MySQL >= 8.0)."""

    code = "unavailable"
