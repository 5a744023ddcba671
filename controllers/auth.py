"""Bearer-token authentication and role checks, and the loopback-only rule.

With `SYNCD_API_TOKENS` set, every `/api` request needs `Authorization: Bearer <token>` (the
websocket `/api/ws` may pass it as `?token=` instead, since browsers cannot set headers there): no,
malformed or unknown token is 401 `unauthorized`, a role that may not do this is 403
`forbidden`. Who may do what is what the matched route declares (`@doc(roles=...)`, see
`controllers.roles`); a path under `/api` that matches no route (404, 405) still needs a valid
token of any role, and a route that declares nothing is admin's. Tokens are compared in constant
time against every configured token, so neither the answer nor its timing tells which token
came close. Routes declared public (`/healthz`, `/readyz`, `/metrics`, the dashboard's files)
stay open. Without tokens the API is open too (every caller is an admin), which is why
`check_exposure` refuses to serve on anything but loopback then.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Mapping

from aiohttp import web

from config.exceptions import SettingsError
from config.settings import Role, Settings
from controllers.errors import ApiError, Handler
from controllers.keys import SETTINGS
from controllers.openapi import route_doc
from controllers.roles import ANY_ROLE, PUBLIC, UNDECLARED, Access, api_path

#: The role of a request to a token-guarded route (every caller is an admin without tokens).
ROLE = web.RequestKey[Role]("role")
#: The dashboard's live feed: the one path that also takes the token as `?token=`.
LIVE_FEED = "/api/ws"


def caller_role(request: web.Request) -> Role:
    """The role of the caller of a token-guarded route (an admin when no tokens are set)."""
    return request[ROLE]


def route_access(request: web.Request) -> Access | None:
    """What the matched route declares; None for a path that matched no route (404, 405)."""
    match = request.match_info
    if match.http_exception is not None:
        return None
    meta = route_doc(match.route)
    return UNDECLARED if meta is None else meta.roles


def token_role(tokens: Mapping[str, Role], presented: str) -> Role | None:
    """The role of `presented`, comparing with every token in constant time (no early exit)."""
    found: Role | None = None
    given = presented.encode()
    for token, role in tokens.items():
        if hmac.compare_digest(token.encode(), given):
            found = role
    return found


def bearer(header: str | None) -> str:
    """The token of an `Authorization: Bearer <token>` header, or a 401 saying what is wrong."""
    if not header:
        raise _unauthorized("missing Authorization header; send Authorization: Bearer <token>")
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        raise _unauthorized("malformed Authorization header; expected: Bearer <token>")
    return token


def _unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message)


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Check the bearer token and the role the matched route declares, when tokens are set."""
    tokens = request.app[SETTINGS].api_tokens
    if not tokens:
        request[ROLE] = "admin"
        return await handler(request)
    access = route_access(request)
    if access == PUBLIC or (access is None and not api_path(request.path)):
        return await handler(request)
    role = _authenticate(request, tokens)
    allowed = ANY_ROLE if access is None else access
    if role not in allowed:
        raise ApiError(
            403,
            "forbidden",
            f"role {role!r} may not {request.method} {request.path}",
            {"role": role},
        )
    request[ROLE] = role
    return await handler(request)


def _authenticate(request: web.Request, tokens: Mapping[str, Role]) -> Role:
    """The role of the request's token, or a 401 saying what is wrong."""
    header = request.headers.get("Authorization")
    if header is None and request.path == LIVE_FEED and "token" in request.query:
        presented = request.query["token"]  # browsers cannot set headers on a websocket
    else:
        presented = bearer(header)
    role = token_role(tokens, presented)
    if role is None:
        raise _unauthorized("unknown bearer token")
    return role


LOOPBACK_NAMES = frozenset({"localhost", "localhost.", "ip6-localhost"})


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and the name `localhost`; False for anything else."""
    name = host.strip().strip("[]").lower()
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def check_exposure(settings: Settings) -> None:
    """Refuse an open API on a non-loopback address (`SettingsError`, one line)."""
    if not settings.api_tokens and not is_loopback(settings.host):
        raise SettingsError(
            f"SYNCD_HOST={settings.host!r} is not a loopback address and SYNCD_API_TOKENS is "
            "empty: refusing to serve an unauthenticated API beyond this host; set "
            "SYNCD_API_TOKENS or listen on 127.0.0.1"
        )
