"""Schedule routes under /api/schedules (validation and shaping only; docs/schedules.md).

Admins define, replace and delete schedules; operators run, pause, resume and backfill them;
every reader lists and reads them. Schedules declared in the settings file and the built-in
jobs are read-only here (409 naming where they are kept).
"""

from __future__ import annotations

import asyncio
from datetime import UTC

from aiohttp import web

from controllers.auth import caller_role
from controllers.errors import parse, parse_body, parse_query, read_json, validation_error
from controllers.jsonio import json_response
from controllers.keys import SCHEDULER
from controllers.models import (
    BackfillBody,
    BackfillOut,
    PauseBody,
    PreviewBody,
    PreviewOut,
    ScheduleBody,
    ScheduleDetailOut,
    ScheduleListOut,
    ScheduleListQuery,
    ScheduleOut,
    TaskOut,
    iso,
    pagination_json,
    schedule_json,
    task_json,
)
from controllers.openapi import doc
from controllers.roles import ADMINS, OPERATORS, READERS
from schedule.definition import CatchUp, Origin, Overlap, ScheduleSpec
from schedule.periodic import UPCOMING, trigger_from
from schedule.records import Page
from schedule.triggers import Timing, check_bounds, check_zone

routes = web.RouteTableDef()
PATH = "/api/schedules"
TAGS = ["schedules"]


def _spec(schedule_id: str, body: ScheduleBody) -> ScheduleSpec:
    return ScheduleSpec(
        id=schedule_id,
        task_type=body.task_type,
        trigger=trigger_from(body.trigger.spec()),
        name=body.name,
        parameters=body.parameters,
        priority=body.priority,
        data_source_id=body.data_source_id,
        interface_id=body.interface_id,
        max_attempts=body.max_attempts,
        timeout_s=body.timeout_s,
        timezone=body.timezone,
        start_at=body.start_at,
        end_at=body.end_at,
        jitter_s=body.jitter_s,
        overlap=Overlap(body.overlap),
        catch_up=CatchUp(body.catch_up),
        catch_up_window_s=body.catch_up_window_s,
        paused=body.paused,
        pause_note=body.pause_note,
        origin=Origin.API,
    )


@routes.get(PATH)
@doc(
    "List the schedules, a page at a time",
    roles=READERS,
    query=ScheduleListQuery,
    tags=TAGS,
    response=ScheduleListOut,
)
async def list_schedules(request: web.Request) -> web.Response:
    """Built-in, file and API schedules by id: trigger in words, next fire, last run."""
    query = parse_query(request, ScheduleListQuery)
    views, total = await request.app[SCHEDULER].views(Page(query.page, query.size))
    return json_response(
        {
            "schedules": [schedule_json(v) for v in views],
            "pagination": pagination_json(query.page, query.size, total),
        }
    )


@routes.post(PATH)
@doc(
    "Define a schedule",
    roles=ADMINS,
    body=ScheduleBody,
    responses={201: "the schedule", 409: "the id is taken", 422: "a field is invalid"},
    tags=TAGS,
    response=ScheduleOut,
)
async def create_schedule(request: web.Request) -> web.Response:
    """Check the trigger, the zone and the task template, then store the schedule."""
    body = await parse_body(request, ScheduleBody)
    if body.id is None:
        raise validation_error([{"field": "id", "message": "required"}])
    view = await request.app[SCHEDULER].save(
        _spec(body.id, body), create=True, role=caller_role(request)
    )
    return json_response(schedule_json(view), status=201)


@routes.post("/api/schedule-preview")
@doc(
    "Check a trigger and preview its next fires",
    roles=OPERATORS,
    body=PreviewBody,
    responses={200: "the trigger in words and its next fires", 422: "a field is invalid"},
    tags=TAGS,
    response=PreviewOut,
)
async def preview(request: web.Request) -> web.Response:
    """What the form shows as you type: the cron parser's own words when it is wrong."""
    body = await parse_body(request, PreviewBody)
    scheduler = request.app[SCHEDULER]
    trigger = trigger_from(body.trigger.spec())
    zone = scheduler.settings.timezone
    if body.timezone:
        zone = await asyncio.to_thread(check_zone, body.timezone)
    check_bounds(body.start_at, body.end_at)
    now = scheduler.clock()
    timing = Timing(
        trigger, zone, anchor=body.start_at or now, start_at=body.start_at, end_at=body.end_at
    )
    fires = timing.upcoming(now, UPCOMING)
    tz = timing.zone
    return json_response(
        {
            "description": await asyncio.to_thread(trigger.describe),
            "timezone": zone,
            "next_fires": [{"utc": iso(f), "local": f.astimezone(tz).isoformat()} for f in fires],
        }
    )


@routes.get(PATH + "/{id}")
@doc(
    "One schedule with its next 5 fires and last 10 runs",
    roles=READERS,
    responses={200: "the schedule", 404: "no such schedule"},
    tags=TAGS,
    response=ScheduleDetailOut,
)
async def get_schedule(request: web.Request) -> web.Response:
    """The schedule, its next fires (UTC and its zone) and its last runs with their status."""
    view = await request.app[SCHEDULER].view(request.match_info["id"], runs=True)
    return json_response(schedule_json(view))


@routes.put(PATH + "/{id}")
@doc(
    "Replace a schedule's definition",
    roles=ADMINS,
    body=ScheduleBody,
    responses={
        200: "the schedule",
        404: "no such schedule",
        409: "declared in the settings file or built in",
        422: "a field is invalid",
    },
    tags=TAGS,
    response=ScheduleOut,
)
async def replace_schedule(request: web.Request) -> web.Response:
    """Replace every field; the next fire is computed again from now."""
    schedule_id = request.match_info["id"]
    body = await parse_body(request, ScheduleBody)
    if body.id is not None and body.id != schedule_id:
        raise validation_error(
            [{"field": "id", "message": f"does not match the path {schedule_id!r}"}]
        )
    view = await request.app[SCHEDULER].save(
        _spec(schedule_id, body), create=False, role=caller_role(request)
    )
    return json_response(schedule_json(view))


@routes.delete(PATH + "/{id}")
@doc(
    "Delete a schedule (its tasks stay)",
    roles=ADMINS,
    responses={
        204: "deleted",
        404: "no such schedule",
        409: "declared in the settings file or built in",
    },
    tags=TAGS,
)
async def delete_schedule(request: web.Request) -> web.Response:
    """Remove a schedule made over the API."""
    await request.app[SCHEDULER].delete(request.match_info["id"])
    return web.Response(status=204)


@routes.post(PATH + "/{id}/run")
@doc(
    "Enqueue a schedule's task now",
    roles=OPERATORS,
    responses={201: "the task", 404: "no such schedule"},
    tags=TAGS,
    response=TaskOut,
)
async def run_schedule(request: web.Request) -> web.Response:
    """Enqueue the schedule's task now (its fires are unchanged)."""
    task = await request.app[SCHEDULER].run_now(request.match_info["id"], role=caller_role(request))
    return json_response(task_json(task), status=201)


@routes.post(PATH + "/{id}/pause")
@doc(
    "Pause a schedule, with a note (on every daemon, across restarts)",
    roles=OPERATORS,
    body=PauseBody,
    body_required=False,
    responses={200: "the schedule", 404: "no such schedule"},
    tags=TAGS,
    response=ScheduleOut,
)
async def pause_schedule(request: web.Request) -> web.Response:
    """Stop firing the schedule; `note` says why."""
    body = parse(PauseBody, await read_json(request)) if request.can_read_body else PauseBody()
    view = await request.app[SCHEDULER].pause(request.match_info["id"], body.note)
    return json_response(schedule_json(view))


@routes.post(PATH + "/{id}/resume")
@doc(
    "Resume a paused schedule",
    roles=OPERATORS,
    responses={200: "the schedule", 404: "no such schedule"},
    tags=TAGS,
    response=ScheduleOut,
)
async def resume_schedule(request: web.Request) -> web.Response:
    """Fire again from the next fire time (the fires of the pause are not caught up)."""
    view = await request.app[SCHEDULER].resume(request.match_info["id"])
    return json_response(schedule_json(view))


@routes.post(PATH + "/{id}/backfill")
@doc(
    "Enqueue the fires of a past range",
    roles=OPERATORS,
    body=BackfillBody,
    responses={201: "the tasks enqueued", 404: "no such schedule", 422: "a bad range"},
    tags=TAGS,
    response=BackfillOut,
)
async def backfill_schedule(request: web.Request) -> web.Response:
    """Each fire of `[start, end]` without a task gets one, under the overlap policy."""
    body = await parse_body(request, BackfillBody)
    tasks = await request.app[SCHEDULER].backfill(
        request.match_info["id"],
        body.start.astimezone(UTC),
        body.end.astimezone(UTC),
        role=caller_role(request),
    )
    return json_response({"tasks": [task_json(t) for t in tasks]}, status=201)
