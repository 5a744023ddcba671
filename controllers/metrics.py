"""`GET /metrics`: Prometheus text format, open like `/healthz` (aggregate counts only)."""

from __future__ import annotations

import asyncio

from aiohttp import web

from controllers.errors import UNAVAILABLE
from controllers.keys import METRICS, POOL, SETTINGS, STORE
from controllers.openapi import doc
from controllers.roles import PUBLIC
from engine.metrics import CONTENT_TYPE

routes = web.RouteTableDef()


@routes.get("/metrics")
@doc(
    "Prometheus metrics",
    roles=PUBLIC,
    responses={200: "metrics in the Prometheus text format"},
    tags=["operations"],
    content_type="text/plain",
)
async def metrics(request: web.Request) -> web.Response:
    """Refresh the gauges from the database and the engine, then render every metric."""
    app = request.app
    depth: int | None
    try:
        async with asyncio.timeout(app[SETTINGS].db_timeout_s):
            depth = await app[STORE].stats.queue_length()
    except UNAVAILABLE:
        depth = None
    app[METRICS].refresh(depth, app[POOL].stats().running_by_type)
    return web.Response(body=app[METRICS].render(), headers={"Content-Type": CONTENT_TYPE})
