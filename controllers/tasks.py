"""SyncController: the task routes under /api/sync/tasks (validation and shaping only)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from aiohttp import web

from controllers.auth import caller_role
from controllers.errors import parse_body, parse_query, validation_error
from controllers.jsonio import json_response
from controllers.keys import POOL, REGISTRY, SERVICE, WAITING
from controllers.models import (
    BatchCreateBody,
    BatchOut,
    CreateTaskBody,
    ErrorListOut,
    ErrorsQuery,
    IdsBody,
    ListQuery,
    StatisticsOut,
    StatsQuery,
    TaskBatchOut,
    TaskDetailOut,
    TaskListOut,
    TaskOut,
    TaskTypesOut,
    ThroughputOut,
    ThroughputQuery,
    UpdateTaskBody,
    attempt_json,
    batch_json,
    errors_pagination_json,
    record_error_json,
    task_json,
    task_pagination_json,
    throughput_json,
    waiting_json,
)
from controllers.openapi import doc
from controllers.roles import ADMINS, OPERATORS, READERS
from schedule.records import Page, TaskFilter
from schedule.task import TaskStatus

routes = web.RouteTableDef()
#: The routes of one task: `{id}` is a task id or reference, but never the name of a route beside
#: it (`batch`, `statistics`, `throughput`), which is not a task. Without the exclusion, `PUT
#: /api/sync/tasks/statistics` reached `update_task` (404, no such task) and a 405 there listed
#: PUT and DELETE in `Allow`; the document, where a concrete path wins over a templated one,
#: offers only GET at that path.
TASK = "/api/sync/tasks/{id:(?!(?:batch|statistics|throughput)(?:/|$))[^{}/]+}"


@routes.post("/api/sync/tasks")
@doc(
    "Create a task",
    roles=OPERATORS,
    body=CreateTaskBody,
    responses={201: "the new task", 200: "the unfinished task that holds this dedupe_key"},
    tags=["tasks"],
    response=TaskOut,
)
async def create_task(request: web.Request) -> web.Response:
    """Create a task (201), or return the unfinished task holding its dedupe key (200)."""
    body = await parse_body(request, CreateTaskBody)
    task, created = await request.app[SERVICE].create(body.to_request(), role=caller_role(request))
    return json_response(task_json(task), status=201 if created else 200)


@routes.post("/api/sync/tasks/batch")
@doc(
    "Create many tasks (all validated before any is written)",
    roles=OPERATORS,
    body=BatchCreateBody,
    responses={201: "`{tasks: [...]}`"},
    tags=["tasks"],
    response=TaskBatchOut,
)
async def create_tasks(request: web.Request) -> web.Response:
    """Create many tasks at once; all are validated before any is written."""
    body = await parse_body(request, BatchCreateBody)
    pairs = await request.app[SERVICE].create_many(
        [t.to_request() for t in body.tasks], role=caller_role(request)
    )
    return json_response({"tasks": [task_json(t) for t, _ in pairs]}, status=201)


@routes.get("/api/sync/tasks")
@doc(
    "List tasks, newest first",
    roles=READERS,
    query=ListQuery,
    responses={200: "`{tasks, pagination}`"},
    tags=["tasks"],
    response=TaskListOut,
)
async def list_tasks(request: web.Request) -> web.Response:
    """Newest first, paged and filtered."""
    query = parse_query(request, ListQuery)
    flt = TaskFilter(
        query.status,
        query.task_type,
        query.data_source_id,
        schedule_id=query.schedule_id,
        search=query.q,
    )
    found = await request.app[SERVICE].list_tasks(flt, query.to_page())
    waiting = await request.app[WAITING].explain(found.tasks)
    return json_response(
        {
            "tasks": [
                {**task_json(t), "waiting": waiting_json(waiting.get(t.id))} for t in found.tasks
            ],
            "pagination": task_pagination_json(query.page, query.size, found),
        }
    )


@routes.get("/api/sync/task-types")
@doc(
    "The task types this daemon runs (the dashboard's type filter)",
    roles=READERS,
    responses={200: "`{task_types: [{task_type, description, maintenance}]}`, by name"},
    tags=["tasks"],
    response=TaskTypesOut,
)
async def task_types(request: web.Request) -> web.Response:
    """Every registered task type with its description; `maintenance` types are admin's to
    enqueue by hand."""
    registry = request.app[REGISTRY]
    specs = sorted(registry, key=lambda spec: spec.task_type)
    return json_response(
        {
            "task_types": [
                {
                    "task_type": spec.task_type,
                    "description": spec.description,
                    "maintenance": spec.maintenance,
                }
                for spec in specs
            ]
        }
    )


@routes.get("/api/sync/tasks/statistics")
@doc(
    "Task statistics and this node's engine counters",
    roles=READERS,
    query=StatsQuery,
    responses={200: "`{database, engine}`"},
    tags=["tasks"],
    response=StatisticsOut,
)
async def statistics(request: web.Request) -> web.Response:
    """Database aggregates and this node's engine counters."""
    query = parse_query(request, StatsQuery)
    since = query.since or datetime.now(UTC) - timedelta(days=7)
    stats = await request.app[SERVICE].statistics(since)
    node = request.app[POOL].stats()
    return json_response(
        {
            "database": {
                "total": stats.total,
                "by_status": stats.by_status,
                "by_type": stats.by_type,
                "success_rate": stats.success_rate,
                "avg_duration_s": stats.avg_duration_s,
                "since": since.astimezone(UTC).isoformat().replace("+00:00", "Z"),
                "running_by_node": stats.running_by_node,
            },
            "engine": {
                "node_id": node.node_id,
                "running_tasks": node.running_tasks,
                "queue_length": stats.queue_length,
                "max_concurrent": node.max_concurrent,
                "uptime_s": node.uptime_s,
                "database_ok": node.database_ok,
                "running_by_type": node.running_by_type,
            },
        }
    )


@routes.get("/api/sync/tasks/throughput")
@doc(
    "Tasks finished per hour, by final status (the dashboard's chart)",
    roles=READERS,
    query=ThroughputQuery,
    responses={200: "`{hours, since, buckets: [{hour, completed, failed, cancelled}]}`"},
    tags=["tasks"],
    response=ThroughputOut,
)
async def throughput(request: web.Request) -> web.Response:
    """Tasks finished per hour over the last `hours` hours, by final status (dashboard chart)."""
    query = parse_query(request, ThroughputQuery)
    hours = await request.app[SERVICE].throughput(query.hours)
    return json_response(throughput_json(hours))


@routes.post("/api/sync/tasks/batch/cancel")
@doc(
    "Cancel many tasks",
    roles=OPERATORS,
    body=IdsBody,
    responses={200: "`{results: [...]}`"},
    response=BatchOut,
    tags=["tasks"],
)
async def batch_cancel(request: web.Request) -> web.Response:
    """Cancel many tasks; each succeeds or fails on its own."""
    body = await parse_body(request, IdsBody)
    results = await request.app[SERVICE].batch("cancel", body.ids)
    return json_response({"results": [batch_json(r) for r in results]})


@routes.post("/api/sync/tasks/batch/retry")
@doc(
    "Retry many tasks",
    roles=OPERATORS,
    body=IdsBody,
    responses={200: "`{results: [...]}`"},
    response=BatchOut,
    tags=["tasks"],
)
async def batch_retry(request: web.Request) -> web.Response:
    """Retry many tasks; each succeeds or fails on its own."""
    body = await parse_body(request, IdsBody)
    results = await request.app[SERVICE].batch("retry", body.ids, role=caller_role(request))
    return json_response({"results": [batch_json(r) for r in results]})


@routes.get(TASK)
@doc(
    "One task with its attempts and live progress",
    roles=READERS,
    responses={200: "the task", 404: "no such task"},
    tags=["tasks"],
    response=TaskDetailOut,
)
async def get_task(request: web.Request) -> web.Response:
    """One task by id or reference, with attempts and live progress."""
    detail = await request.app[SERVICE].get(request.match_info["id"])
    body = task_json(detail.task)
    waiting = await request.app[WAITING].explain([detail.task], positions=True)
    body["waiting"] = waiting_json(waiting.get(detail.task.id))
    body["attempts"] = [attempt_json(a) for a in detail.attempts]
    return json_response(body)


@routes.put(TASK)
@doc(
    "Change a pending task",
    roles=ADMINS,
    body=UpdateTaskBody,
    responses={200: "the task", 404: "no such task", 409: "the task is not pending"},
    tags=["tasks"],
    response=TaskOut,
)
async def update_task(request: web.Request) -> web.Response:
    """Change a pending task."""
    body = await parse_body(request, UpdateTaskBody)
    changes = body.changes()
    if not changes:
        raise validation_error([{"field": "body", "message": "nothing to update"}])
    task = await request.app[SERVICE].update(request.match_info["id"], changes)
    return json_response(task_json(task))


@routes.post(TASK + "/cancel")
@doc(
    "Cancel a task",
    roles=OPERATORS,
    responses={
        200: "cancelled (it was pending)",
        202: "stop requested (it is running)",
        404: "no such task",
        409: "already finished",
    },
    tags=["tasks"],
    response=TaskOut,
)
async def cancel_task(request: web.Request) -> web.Response:
    """Pending: cancelled (200). Running: stop requested (202)."""
    task = await request.app[SERVICE].cancel(request.match_info["id"])
    status = 202 if task.status is TaskStatus.RUNNING else 200
    return json_response(task_json(task), status=status)


@routes.post(TASK + "/retry")
@doc(
    "Retry a failed or cancelled task as a new task",
    roles=OPERATORS,
    responses={201: "the new task", 404: "no such task", 409: "not failed or cancelled"},
    tags=["tasks"],
    response=TaskOut,
)
async def retry_task(request: web.Request) -> web.Response:
    """A new task from a failed or cancelled one."""
    task = await request.app[SERVICE].retry(request.match_info["id"], role=caller_role(request))
    return json_response(task_json(task), status=201)


@routes.delete(TASK)
@doc(
    "Delete a finished task",
    roles=ADMINS,
    responses={204: "deleted", 404: "no such task", 409: "not finished"},
    tags=["tasks"],
)
async def delete_task(request: web.Request) -> web.Response:
    """Delete a finished task."""
    await request.app[SERVICE].delete(request.match_info["id"])
    return web.Response(status=204)


@routes.get(TASK + "/errors")
@doc(
    "Per-record errors of a task",
    roles=READERS,
    query=ErrorsQuery,
    responses={200: "`{errors, pagination}`", 404: "no such task"},
    tags=["tasks"],
    response=ErrorListOut,
)
async def task_errors(request: web.Request) -> web.Response:
    """Per-record errors in the order they were recorded, paged as the task list is."""
    query = parse_query(request, ErrorsQuery)
    after, before = query.places()
    found = await request.app[SERVICE].errors(
        request.match_info["id"], Page(query.page, query.size), after, before
    )
    return json_response(
        {
            "errors": [record_error_json(e) for e in found.errors],
            "pagination": errors_pagination_json(query.page, query.size, found),
        }
    )
