"""The periodic jobs' routes under /api/schedules (validation and shaping only)."""

from __future__ import annotations

from aiohttp import web

from controllers.auth import caller_role
from controllers.jsonio import json_response
from controllers.keys import SCHEDULER
from controllers.models import TaskOut, schedule_json, task_json
from controllers.openapi import doc
from controllers.roles import OPERATORS, READERS

routes = web.RouteTableDef()


@routes.get("/api/schedules")
@doc("List the periodic jobs with their next and last runs", roles=READERS, tags=["schedules"])
async def list_schedules(request: web.Request) -> web.Response:
    """Every periodic job with its cron, next and last run, and whether it is paused."""
    views = await request.app[SCHEDULER].views()
    return json_response({"schedules": [schedule_json(v) for v in views]})


@routes.post("/api/schedules/{id}/run")
@doc(
    "Enqueue a periodic job's task now",
    roles=OPERATORS,
    responses={201: "the task", 404: "no such schedule"},
    tags=["schedules"],
    response=TaskOut,
)
async def run_schedule(request: web.Request) -> web.Response:
    """Enqueue the job's task now (201 with the task)."""
    task = await request.app[SCHEDULER].run_now(request.match_info["id"], role=caller_role(request))
    return json_response(task_json(task), status=201)


@routes.post("/api/schedules/{id}/pause")
@doc(
    "Pause a periodic job (kept across restarts)",
    roles=OPERATORS,
    responses={200: "the schedule", 404: "no such schedule"},
    tags=["schedules"],
)
async def pause_schedule(request: web.Request) -> web.Response:
    """Stop firing the job, on every daemon and across restarts."""
    view = await request.app[SCHEDULER].pause(request.match_info["id"])
    return json_response(schedule_json(view))


@routes.post("/api/schedules/{id}/resume")
@doc(
    "Resume a paused periodic job",
    roles=OPERATORS,
    responses={200: "the schedule", 404: "no such schedule"},
    tags=["schedules"],
)
async def resume_schedule(request: web.Request) -> web.Response:
    """Fire the job again from its next scheduled time."""
    view = await request.app[SCHEDULER].resume(request.match_info["id"])
    return json_response(schedule_json(view))
