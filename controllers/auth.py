"""Bearer-token authentication and role checks for `/api`, and the loopback-only rule.

With `SYNCD_API_TOKENS` set, every `/api` request needs `Authorization: Bearer <token>` (the
websocket `/api/ws` may pass it as `?token=` instead, since browsers cannot set headers there): no,
malformed or unknown token is 401 `unauthorized`, a role that may not do this is 403
`forbidden`. Tokens are compared in constant time against every configured token, so neither
the answer nor its timing tells which token came close. Everything outside `/api` (`/healthz`,
`/readyz`, `/metrics`, the dashboard's static files) stays open. Without tokens the API is open
too, which is why `check_exposure` refuses to serve on anything but loopback then.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Mapping

from aiohttp import web

from config.exceptions import SettingsError
from config.settings import ROLES, Role, Settings
from controllers.errors import ApiError, Handler
from controllers.keys import SETTINGS

READERS: frozenset[Role] = frozenset({"admin", "operator", "read"})
WRITERS: frozenset[Role] = frozenset({"admin", "operator"})
WORKERS: frozenset[Role] = frozenset({"admin", "worker"})
ADMINS: frozenset[Role] = frozenset({"admin"})
EVERYONE: frozenset[Role] = frozenset(ROLES)

#: The role of an authenticated request (set by `auth_middleware` when tokens are configured).
ROLE = web.RequestKey("role", str)
#: The dashboard's live feed: the one path that also takes the token as `?token=`.
LIVE_FEED = "/api/ws"


def allowed_roles(method: str, path: str) -> frozenset[Role]:
    """Which roles may make this request.

    `worker` only pulls and reports external tasks (`/api/crontask`); `read` only reads;
    `operator` also creates, cancels and retries (POST); changing a pending task (PUT),
    deleting (DELETE) and anything else is for `admin`. Any token may read the API document.
    """
    if path == "/api/crontask" or path.startswith("/api/crontask/"):
        return WORKERS
    if path in ("/api/openapi.json", "/api/whoami"):
        return EVERYONE
    if method in ("GET", "HEAD", "OPTIONS"):
        return READERS
    if method == "POST":
        return WRITERS
    return ADMINS


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
    """Check the bearer token and role of `/api` requests when tokens are configured."""
    tokens = request.app[SETTINGS].api_tokens
    path = request.path
    if not tokens or not (path == "/api" or path.startswith("/api/")):
        return await handler(request)
    header = request.headers.get("Authorization")
    if header is None and path == LIVE_FEED and "token" in request.query:
        presented = request.query["token"]  # browsers cannot set headers on a websocket
    else:
        presented = bearer(header)
    role = token_role(tokens, presented)
    if role is None:
        raise _unauthorized("unknown bearer token")
    if role not in allowed_roles(request.method, path):
        raise ApiError(
            403, "forbidden", f"role {role!r} may not {request.method} {path}", {"role": role}
        )
    request[ROLE] = role
    return await handler(request)


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
