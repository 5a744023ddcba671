"""External workers (seed 003): pull a task of a service, then report on it.

`GET /api/crontask?service=&group=` claims the first due `external` task of that service (200
with the task, 204 when there is none); `PUT /api/crontask/{id}` reports progress, `temp`, and
the end. Only validation and shaping here; the claim and the fencing live in the store.
"""

from __future__ import annotations

from aiohttp import web

from controllers.errors import parse_body, parse_query
from controllers.jsonio import json_response
from controllers.keys import SERVICE
from controllers.models import CronTaskQuery, CronTaskReport, TaskOut, task_json
from controllers.openapi import doc
from controllers.roles import WORKERS

routes = web.RouteTableDef()


@routes.get("/api/crontask")
@doc(
    "Claim the next task of a service (external worker)",
    roles=WORKERS,
    query=CronTaskQuery,
    responses={200: "the claimed task, now running", 204: "no task is due for this service"},
    tags=["external workers"],
    response=TaskOut,
)
async def claim(request: web.Request) -> web.Response:
    """Claim the first due external task of `service` (and `group`) for the caller."""
    query = parse_query(request, CronTaskQuery)
    task = await request.app[SERVICE].claim_external(query.service, query.group)
    if task is None:
        return web.Response(status=204)
    return json_response(task_json(task))


@routes.put("/api/crontask/{id}")
@doc(
    "Report progress, intermediate state or the end of a claimed external task",
    roles=WORKERS,
    body=CronTaskReport,
    responses={
        200: "the task after the report",
        404: "no such task, or not an external task",
        409: "the task is not running (pending, or already finished)",
    },
    tags=["external workers"],
    response=TaskOut,
)
async def report(request: web.Request) -> web.Response:
    """Apply a report; `completed`/`failed` end the task, anything else extends its lease."""
    body = await parse_body(request, CronTaskReport)
    task = await request.app[SERVICE].report_external(request.match_info["id"], body.to_report())
    return json_response(task_json(task))
