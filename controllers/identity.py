"""Who is calling: token lookup for the dashboard (`GET /api/whoami`) and the live feed.

The general `/api` auth middleware belongs to issue 6; this module only answers "which role does
this token have" so the dashboard can hide buttons a role may not use, and so `/api/ws` (which a
browser cannot send an `Authorization` header to) can take the token as `?token=`.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Iterable

from aiohttp import web
from aiohttp.web_log import AccessLogger

from config.settings import Role, Settings
from controllers.errors import ApiError
from controllers.keys import SETTINGS

routes = web.RouteTableDef()

TOKEN_IN_QUERY = re.compile(r"([?&]token=)[^&\s]*")

# Roles allowed to read the dashboard's data (the `worker` role only talks to /api/crontask).
READER_ROLES: frozenset[Role] = frozenset({"admin", "operator", "read"})


def role_of(settings: Settings, token: str | None) -> Role | None:
    """The role of `token`, or None when unknown; every configured token is compared in
    constant time so the answer's timing does not tell which one nearly matched."""
    if not token:
        return None
    found: Role | None = None
    given = token.encode()
    for known, role in settings.api_tokens.items():
        if hmac.compare_digest(known.encode(), given):
            found = role
    return found


def bearer_token(request: web.Request) -> str | None:
    """The token of an `Authorization: Bearer ...` header, if any."""
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def caller_role(request: web.Request, *, allow_query: bool = False) -> Role | None:
    """The caller's role; None when no tokens are configured (auth is off).

    Raises a 401 `unauthorized` for a missing or unknown token. `allow_query` accepts
    `?token=` as well (only for `/api/ws`, where browsers cannot set headers).
    """
    settings = request.app[SETTINGS]
    if not settings.api_tokens:
        return None
    token = bearer_token(request)
    if token is None and allow_query:
        token = request.query.get("token")
    role = role_of(settings, token)
    if role is None:
        # The same wording as the /api auth middleware (issue 6), so clients see one language.
        if token:
            message = "unknown bearer token"
        elif allow_query:
            message = "missing token; send Authorization: Bearer <token> or ?token=<token>"
        else:
            message = "missing Authorization header; send Authorization: Bearer <token>"
        raise ApiError(401, "unauthorized", message)
    return role


@routes.get("/api/whoami")
async def whoami(request: web.Request) -> web.Response:
    """The caller's role: `{"role", "auth"}`; `auth` is false when no tokens are configured
    (then everyone on the loopback interface is an admin)."""
    role = caller_role(request)
    if role is None:
        return web.json_response({"role": "admin", "auth": False})
    return web.json_response({"role": role, "auth": True})


def redact_token(text: str) -> str:
    """`GET /api/ws?token=s3cret HTTP/1.1` as `GET /api/ws?token=*** HTTP/1.1`."""
    return TOKEN_IN_QUERY.sub(r"\1***", text)


class RedactingAccessLogger(AccessLogger):
    """The access log without `?token=` values: the dashboard's websocket URL carries one."""

    def _format_line(
        self, request: web.BaseRequest, response: web.StreamResponse, time: float
    ) -> Iterable[tuple[str | tuple[str, str], str]]:
        return [
            (key, redact_token(value) if isinstance(value, str) else value)
            for key, value in super()._format_line(request, response, time)
        ]
