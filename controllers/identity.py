"""Who is calling: `GET /api/whoami`, for the dashboard.

Authentication itself is `controllers.auth.auth_middleware`; this only tells the dashboard the
caller's role so it can hide the buttons that role may not use. (The `?token=` of the
dashboard's websocket URL is kept out of the logs by `config.logging.redact`.)
"""

from __future__ import annotations

from aiohttp import web

from controllers.auth import ROLE
from controllers.keys import SETTINGS
from controllers.models import WhoamiOut
from controllers.openapi import doc
from controllers.roles import ANY_ROLE

routes = web.RouteTableDef()


@routes.get("/api/whoami")
@doc(
    "The caller's role (any valid token may ask)",
    roles=ANY_ROLE,
    responses={200: "`{role, auth}`; `auth` is false when no tokens are configured"},
    tags=["auth"],
    response=WhoamiOut,
)
async def whoami(request: web.Request) -> web.Response:
    """The caller's role: `{"role", "auth"}`. Without configured tokens everyone (on the
    loopback interface, see `check_exposure`) is an admin and `auth` is false."""
    auth = bool(request.app[SETTINGS].api_tokens)
    return web.json_response({"role": request[ROLE], "auth": auth})
