"""Error mapping in one place: every failure becomes `{"error": {code, message, details}}`."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError
from sqlalchemy.exc import SQLAlchemyError

from controllers import jsonio
from schedule.database import DbFailure, classify_db_error
from schedule.exceptions import (
    Forbidden,
    InvalidInput,
    InvalidState,
    NotFound,
    ScheduleError,
    Unavailable,
)

log = logging.getLogger(__name__)
M = TypeVar("M", bound=BaseModel)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

STATUS_BY_ERROR: dict[type[ScheduleError], int] = {
    Forbidden: 403,
    NotFound: 404,
    InvalidState: 409,
    InvalidInput: 422,
    Unavailable: 503,
}
#: What a failed database call may raise; `classify_db_error` says which answer each gets.
UNAVAILABLE = (SQLAlchemyError, OSError, TimeoutError, ConnectionError)
#: The answer to each kind of database failure: status, code, message (`{detail}`: the
#: driver's first line).
DB_FAILURES: dict[DbFailure, tuple[int, str, str]] = {
    DbFailure.CONFLICT: (409, "conflict", "the request conflicts with stored data: {detail}"),
    DbFailure.INVALID: (422, "validation_error", "a value does not fit the database: {detail}"),
    DbFailure.FULL: (
        507,
        "insufficient_storage",
        "the database or the disk is full: nothing was written; free space, then try again",
    ),
    DbFailure.UNAVAILABLE: (
        503,
        "unavailable",
        "the database is unavailable ({detail}); try again later",
    ),
}


class ApiError(Exception):
    """An HTTP error raised by a controller with its status and code."""

    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details


def error_response(
    status: int,
    code: str,
    message: str,
    details: Any = None,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    """The JSON error body of DESIGN.md."""
    body = {"error": {"code": code, "message": message, "details": details}}
    return jsonio.json_response(body, status=status, headers=headers)


def problems(exc: ValidationError, prefix: str = "") -> list[dict[str, str]]:
    """pydantic errors as `[{field, message}]` with dotted field paths."""
    out = []
    for err in exc.errors():
        path = ".".join(str(p) for p in err["loc"]) or "body"
        out.append({"field": prefix + path, "message": err["msg"].removeprefix("Value error, ")})
    return out


def validation_error(details: list[dict[str, str]]) -> ApiError:
    """A 422 naming each bad field in its message and details."""
    message = "; ".join(f"{d['field']}: {d['message']}" for d in details)
    return ApiError(422, "validation_error", message, details)


async def read_json(request: web.Request) -> Any:
    """The request body as strict JSON (`jsonio.loads`), or a 400 `invalid_json`."""
    return parse_json(await request.read())


def parse_json(raw: bytes) -> Any:
    """`raw` as strict JSON, or a 400 `invalid_json` saying why not."""
    if not raw.strip():
        raise ApiError(400, "invalid_json", "request body is empty; a JSON object is expected")
    try:
        return jsonio.loads(raw)
    except jsonio.JsonRefused as exc:
        raise ApiError(400, "invalid_json", str(exc)) from None


def parse(model: type[M], data: Any) -> M:
    """Validate data into a model, or a 422 naming each field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_error(problems(exc)) from None


async def parse_body(request: web.Request, model: type[M]) -> M:
    """JSON body validated into `model`."""
    return parse(model, await read_json(request))


def parse_query(request: web.Request, model: type[M]) -> M:
    """Query string validated into `model`. Every query field takes one value, so a key given
    twice is a 422 naming it (rather than one of its values silently winning)."""
    repeated = sorted({k for k in request.query if len(request.query.getall(k)) > 1})
    if repeated:
        raise validation_error(
            [{"field": k, "message": "given more than once; give it once"} for k in repeated]
        )
    return parse(model, dict(request.query))


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Map exceptions to the documented codes; never let a 5xx escape for bad input."""
    try:
        return await handler(request)
    except ApiError as exc:
        response = error_response(exc.status, exc.code, exc.message, exc.details)
        if exc.status == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="syncd"'
        return response
    except ScheduleError as exc:
        status = STATUS_BY_ERROR.get(type(exc), 503 if exc.code == "unavailable" else 400)
        return error_response(status, exc.code, str(exc), exc.details)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}.get(
            exc.status, "http_error"
        )
        allow = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return error_response(exc.status, code, exc.reason, headers=allow)
    except UNAVAILABLE as exc:
        return _failure_response(request, exc)
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return error_response(500, "internal", "internal error; see the daemon log")


def _failure_response(request: web.Request, exc: BaseException) -> web.Response:
    """The answer to a database or I/O failure: the request's fault (409/422), a full disk
    (507), an outage (503), or, when the client has gone, nothing it will read."""
    if isinstance(exc, ConnectionError) and _client_gone(request):
        log.debug("client went away during %s %s", request.method, request.path)
        return error_response(400, "connection_closed", "the client closed the connection")
    failure = classify_db_error(exc)
    if failure is None:
        log.error("I/O error in %s %s", request.method, request.path, exc_info=exc)
        return error_response(500, "internal", "internal error; see the daemon log")
    status, code, message = DB_FAILURES[failure]
    text = _first_line(exc)
    if failure is DbFailure.UNAVAILABLE or failure is DbFailure.FULL:
        log.warning("%s during %s %s: %s", code, request.method, request.path, text)
    detail = _outage(exc, text) if failure is DbFailure.UNAVAILABLE else text
    return error_response(status, code, message.format(detail=detail))


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


def _first_line(exc: BaseException) -> str:
    """The driver's own message (for MySQL without its error-code tuple), first line only:
    never the statement or its parameters."""
    orig = getattr(exc, "orig", None) or exc
    args: tuple[Any, ...] = tuple(getattr(orig, "args", ()))
    text = str(args[1]) if len(args) > 1 and isinstance(args[0], int) else str(orig)
    text = text.strip()
    return text.splitlines()[0] if text else type(orig).__name__


def _outage(exc: BaseException, text: str) -> str:
    """What kind of outage, in words that name no host, user or file (those are logged)."""
    if isinstance(exc, TimeoutError):
        return "no answer within SYNCD_DB_TIMEOUT_S"
    if "locked" in text.lower():
        return "locked by another writer"
    return "cannot be reached"
