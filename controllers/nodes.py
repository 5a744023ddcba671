"""`GET /api/nodes`: the daemons sharing this database, and what each runs."""

from __future__ import annotations

from aiohttp import web

from controllers.jsonio import json_response
from controllers.keys import NODES
from controllers.models import NodeListOut, node_json
from controllers.openapi import doc
from controllers.roles import READERS

routes = web.RouteTableDef()


@routes.get("/api/nodes")
@doc(
    "The daemons sharing this database: version, start, last heartbeat, slots, running tasks",
    roles=READERS,
    responses={200: "`{nodes: [...]}`, alive ones first, then by last heartbeat"},
    tags=["nodes"],
    response=NodeListOut,
)
async def list_nodes(request: web.Request) -> web.Response:
    """Every daemon heard of in the last day; `alive` while its heartbeats keep coming."""
    nodes = await request.app[NODES].nodes()
    return json_response({"nodes": [node_json(n) for n in nodes]})
