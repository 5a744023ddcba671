"""The web dashboard: static files shipped in the package, served at `/` (no build step).

The page is plain HTML, CSS and ES modules under `controllers/static/`; it talks to the same
JSON API as every other client and to `/api/ws` for live updates.
"""

from __future__ import annotations

import asyncio
from pathlib import Path, PurePosixPath

from aiohttp import web

from controllers.errors import ApiError
from controllers.openapi import doc
from controllers.roles import PUBLIC

routes = web.RouteTableDef()

STATIC_DIR = Path(__file__).resolve().parent / "static"
NO_CACHE = {"Cache-Control": "no-cache"}


@routes.get("/")
@doc("The web dashboard", roles=PUBLIC, content_type="text/html", tags=["dashboard"])
async def index(request: web.Request) -> web.FileResponse:
    """The single page; routing inside it is by URL hash (`#/tasks`, `#/task/ID`, ...)."""
    return web.FileResponse(STATIC_DIR / "index.html", headers=NO_CACHE)


@routes.get("/static/{path:.+}")
@doc(
    "A file of the dashboard",
    roles=PUBLIC,
    responses={200: "the file", 404: "no such file of the dashboard"},
    content_type="*/*",
    tags=["dashboard"],
)
async def static(request: web.Request) -> web.FileResponse:
    """A file of the dashboard; revalidated on every load so an upgrade shows at once."""
    relative = request.match_info["path"]
    target = await asyncio.to_thread(dashboard_file, relative)
    if target is None:
        raise ApiError(404, "not_found", f"no dashboard file {relative[:200]!r}")
    return web.FileResponse(target, headers=NO_CACHE)


def dashboard_file(relative: str) -> Path | None:
    """The file under `STATIC_DIR` that `relative` names, or None: not a file there, outside
    it (`..`, absolute), or a name no file can have (NUL, control characters, too long)."""
    path = PurePosixPath(relative)
    if path.is_absolute() or ".." in path.parts or any(ord(c) < 32 for c in relative):
        return None
    target = STATIC_DIR.joinpath(*path.parts)
    try:
        return target if target.is_file() else None
    except (OSError, ValueError):  # ENAMETOOLONG and the like
        return None
