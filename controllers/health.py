"""Liveness and readiness probes."""

from __future__ import annotations

import asyncio

from aiohttp import web

from controllers.errors import UNAVAILABLE
from controllers.keys import DB, POOL, SETTINGS
from controllers.models import HealthOut, ReadyOut
from controllers.openapi import doc
from controllers.roles import PUBLIC

routes = web.RouteTableDef()


@routes.get("/healthz")
@doc(
    "Liveness: the process serves HTTP",
    roles=PUBLIC,
    responses={200: "alive"},
    tags=["operations"],
    response=HealthOut,
)
async def healthz(request: web.Request) -> web.Response:
    """The process is alive and its event loop answers."""
    return web.json_response({"status": "ok"})


@routes.get("/readyz")
@doc(
    "Readiness: database reachable, migrated and writable, engine running",
    roles=PUBLIC,
    responses={200: "ready", 503: "not ready (the checks say why)"},
    tags=["operations"],
    response=ReadyOut,
)
async def readyz(request: web.Request) -> web.Response:
    """Ready when the database answers (it was migrated at start-up), a write can be made now
    (no other process holds the write lock, the database and its disk have room) and the
    engine runs. The write check takes the lock only to release it at once."""
    pool, db = request.app[POOL], request.app[DB]
    database = writes = "ok"
    try:
        async with asyncio.timeout(request.app[SETTINGS].db_timeout_s):
            await db.ping()
            writes = await db.write_check() or "ok"
    except UNAVAILABLE as exc:
        database = f"unavailable: {type(exc).__name__}"
        writes = "unknown"
    checks = {
        "database": database,
        "writes": writes,
        "engine": "ok" if pool.running else "stopped",
    }
    ready = all(v == "ok" for v in checks.values())
    return web.json_response(
        {"status": "ready" if ready else "unavailable", "checks": checks},
        status=200 if ready else 503,
    )
