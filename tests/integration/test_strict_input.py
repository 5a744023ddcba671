"""Every JSON entry point parses strictly, on SQLite and MariaDB: no NaN or Infinity, bounded
nesting, booleans are not numbers, times within range, no null where a value is required,
parameters capped in size; and nothing stored is echoed as bare NaN. Bad input is a 4xx that
names the problem, and leaves nothing written."""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from config.settings import Settings
from controllers import jsonio
from controllers.app import create_app
from controllers.keys import ENGINE
from engine.context import TaskContext
from engine.handlers import default_registry
from engine.handlers.base import HandlerSpec, JsonObject
from tests.conftest import make_settings
from tests.helpers import Events

Client = TestClient[web.Request, web.Application]
AiohttpClient = Callable[[web.Application], Awaitable[Client]]
LATER = "2099-01-01T00:00:00Z"
PARAMETERS_KB = 4


async def not_finite(ctx: TaskContext) -> JsonObject:
    """A handler whose result holds values JSON cannot express."""
    return {"ratio": math.nan, "big": math.inf, "nested": [{"small": -math.inf}], "ok": 1.5}


@pytest.fixture
def dialect_settings(database_url: str, tmp_path: Path) -> Settings:
    return make_settings(database_url, tmp_path, max_parameters_kb=PARAMETERS_KB)


@pytest.fixture
async def client(aiohttp_client: AiohttpClient, dialect_settings: Settings) -> Client:
    registry = default_registry()
    registry.register(HandlerSpec(task_type="not_finite", run=not_finite))
    return await aiohttp_client(create_app(dialect_settings, registry))


async def send(client: Client, method: str, path: str, body: str | bytes) -> tuple[int, Any]:
    resp = await client.request(
        method, path, data=body, headers={"Content-Type": "application/json"}
    )
    raw = await resp.read()
    return resp.status, jsonio.loads(raw) if raw else None  # answers are strict JSON too


async def create(client: Client, **fields: Any) -> Any:
    status, body = await send(
        client, "POST", "/api/sync/tasks", json.dumps({"task_type": "noop", **fields})
    )
    assert status == 201, body
    return body


async def count_tasks(client: Client) -> int:
    resp = await client.get("/api/sync/tasks?size=1")
    return int((await resp.json())["pagination"]["total"])


def nested(depth: int) -> str:
    """A JSON value `depth` arrays deep."""
    return "[" * depth + "]" * depth


BAD_JSON = {
    "nan": ('{"parameters": {"x": NaN}}', "NaN is not a JSON value"),
    "infinity": ('{"parameters": {"x": Infinity}}', "Infinity is not a JSON value"),
    "minus_infinity": ('{"parameters": {"x": -Infinity}}', "-Infinity is not a JSON value"),
    "overflow": ('{"parameters": {"x": 1e999}}', "the number 1e999 is too large"),
    "deep": ('{"parameters": {"x": ' + nested(31) + "}}", "deeper than 32 levels"),
    "very_deep": ('{"parameters": {"x": ' + nested(100_000) + "}}", "deeper than 32 levels"),
}

ENTRY_POINTS = [
    ("POST", "/api/sync/tasks"),
    ("POST", "/api/sync/tasks/batch"),
    ("PUT", "/api/sync/tasks/{task}"),
    ("POST", "/api/sync/tasks/batch/cancel"),
    ("POST", "/api/sync/tasks/batch/retry"),
    ("POST", "/api/sync/data-sources"),
    ("PUT", "/api/sync/data-sources/src"),
    ("POST", "/api/tools/import"),
    ("POST", "/api/imports/tools"),
    ("PUT", "/api/crontask/{task}"),
    ("POST", "/api/admin/pricing/partnumber-books"),
]


@pytest.mark.parametrize(("method", "path"), ENTRY_POINTS)
async def test_every_json_entry_point_refuses_what_is_not_json(
    client: Client, method: str, path: str
) -> None:
    task = await create(client, run_after=LATER)
    before = await count_tasks(client)
    for name, (body, message) in BAD_JSON.items():
        status, answer = await send(client, method, path.format(task=task["id"]), body)
        assert status == 400, (name, answer)
        assert answer["error"]["code"] == "invalid_json", name
        assert message in answer["error"]["message"], (name, answer)
    assert await count_tasks(client) == before


async def test_nesting_up_to_the_limit_is_taken(client: Client) -> None:
    # {"parameters": {"args": [...]}}: two objects, then 30 arrays: 32 levels in all, stored
    # (MariaDB's JSON columns take 32) and read back.
    body = json.dumps({"task_type": "external", "parameters": {"service": "s"}})
    body = body[:-2] + ', "args": ' + nested(30) + "}}"
    status, answer = await send(client, "POST", "/api/sync/tasks", body)
    assert status == 201, answer
    assert answer["parameters"]["args"] == json.loads(nested(30))
    deeper = body.replace(nested(30), nested(31))
    status, answer = await send(client, "POST", "/api/sync/tasks", deeper)
    assert status == 400 and "32" in answer["error"]["message"]


async def test_bodies_of_routes_that_take_none_cannot_cause_a_5xx(client: Client) -> None:
    for path in ("/api/schedules/snapshot/run", "/api/schedules/nope/pause"):
        for body, _ in BAD_JSON.values():
            status, _answer = await send(client, "POST", path, body)
            assert status < 500, (path, status)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"task_type": "noop", "priority": True}, "priority"),
        ({"task_type": "noop", "max_attempts": False}, "max_attempts"),
        ({"task_type": "noop", "timeout_s": True}, "timeout_s"),
        ({"task_type": "noop", "parameters": {"steps": True}}, "parameters.steps"),
        ({"task_type": "noop", "parameters": {"sleep_s": False}}, "parameters.sleep_s"),
    ],
)
async def test_a_boolean_is_not_a_number(client: Client, body: Any, field: str) -> None:
    status, answer = await send(client, "POST", "/api/sync/tasks", json.dumps(body))
    assert status == 422, answer
    assert answer["error"]["details"] == [{"field": field, "message": "a boolean is not a number"}]
    batch = {"tasks": [{"task_type": "noop"}, body]}
    status, answer = await send(client, "POST", "/api/sync/tasks/batch", json.dumps(batch))
    assert status == 422 and answer["error"]["details"][0]["field"] == f"tasks.1.{field}"
    assert await count_tasks(client) == 0


async def test_booleans_are_refused_in_updates_reports_and_data_sources(client: Client) -> None:
    task = await create(client, run_after=LATER)
    status, answer = await send(
        client, "PUT", f"/api/sync/tasks/{task['id']}", '{"priority": true}'
    )
    assert status == 422 and answer["error"]["details"][0]["field"] == "priority"
    status, answer = await send(client, "PUT", f"/api/crontask/{task['id']}", '{"progress": true}')
    assert status == 422 and answer["error"]["details"][0]["field"] == "progress"
    source = {
        "id": "src",
        "name": "a source",
        "kind": "file",
        "connection": {"path": "/srv/in.csv"},
        "target_table": "tools",
        "key_columns": ["tool_id"],
        "batch_size": True,
    }
    status, answer = await send(client, "POST", "/api/sync/data-sources", json.dumps(source))
    assert status == 422 and answer["error"]["details"][0]["field"] == "batch_size"
    detail = await client.get(f"/api/sync/tasks/{task['id']}")
    assert (await detail.json())["priority"] == 0


@pytest.mark.parametrize(
    "moment",
    [
        "0001-01-01T00:00:00+14:00",  # year 0 in UTC: Python cannot even hold it
        "0001-01-01T00:00:00Z",
        "1969-12-31T23:59:59Z",
        "9999-12-31T23:00:00-14:00",  # year 10000 in UTC
        "9999-12-31T00:00:00Z",
    ],
)
async def test_times_out_of_range_are_422(client: Client, moment: str) -> None:
    body = json.dumps({"task_type": "noop", "run_after": moment})
    status, answer = await send(client, "POST", "/api/sync/tasks", body)
    assert status == 422 and answer["error"]["details"][0]["field"] == "run_after", answer
    assert "between 1970-01-01" in answer["error"]["message"]
    batch = json.dumps({"tasks": [{"task_type": "noop", "run_after": moment}]})
    status, answer = await send(client, "POST", "/api/sync/tasks/batch", batch)
    assert status == 422 and answer["error"]["details"][0]["field"] == "tasks.0.run_after"
    task = await create(client, run_after=LATER)
    update = json.dumps({"run_after": moment})
    status, answer = await send(client, "PUT", f"/api/sync/tasks/{task['id']}", update)
    assert status == 422 and answer["error"]["details"][0]["field"] == "run_after"
    resp = await client.get("/api/sync/tasks/statistics", params={"since": moment})
    assert resp.status == 422 and (await resp.json())["error"]["details"][0]["field"] == "since"


@pytest.mark.parametrize("moment", [0, 1700000000, 0.5, "0.5", "-8.7e-63", "1700000000"])
async def test_a_number_is_not_a_time(client: Client, moment: Any) -> None:
    """Times are ISO 8601 text, as the document's `date-time` says; pydantic alone read numbers
    and numeric strings as seconds since 1970 (the API fuzz sent `since=0.5` and got 200)."""
    body = json.dumps({"task_type": "noop", "run_after": moment})
    status, answer = await send(client, "POST", "/api/sync/tasks", body)
    assert status == 422 and answer["error"]["details"][0]["field"] == "run_after", answer
    assert "ISO 8601" in answer["error"]["message"]
    task = await create(client, run_after=LATER)
    update = json.dumps({"run_after": moment})
    status, answer = await send(client, "PUT", f"/api/sync/tasks/{task['id']}", update)
    assert status == 422 and answer["error"]["details"][0]["field"] == "run_after"
    resp = await client.get("/api/sync/tasks/statistics", params={"since": str(moment)})
    assert resp.status == 422 and (await resp.json())["error"]["details"][0]["field"] == "since"
    assert await count_tasks(client) == 1
    resp = await client.get("/api/sync/tasks/statistics", params={"since": "2024-01-31 12:00Z"})
    assert resp.status == 200


@pytest.mark.parametrize(
    "query",
    [
        "/api/sync/tasks?status=pending&status=failed",
        "/api/sync/tasks?page=1&size=5&page=2",
        "/api/sync/tasks/statistics?since=2024-01-01T00:00:00Z&since=2024-02-01T00:00:00Z",
        "/api/sync/tasks/throughput?hours=1&hours=2",
        "/api/crontask?service=a&service=b",
    ],
)
async def test_a_query_field_given_twice_is_422(client: Client, query: str) -> None:
    """Every query field takes one value; a repeated key was answered with one of its values
    picked silently (the API fuzz sent a list where the document allows one string)."""
    resp = await client.get(query)
    assert resp.status == 422, await resp.text()
    error = (await resp.json())["error"]
    field = query.split("?")[1].split("=")[0]
    assert error["details"] == [{"field": field, "message": "given more than once; give it once"}]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ('{"parameters": null}', "parameters"),
        ('{"config": null}', "parameters"),
        ('{"priority": null}', "priority"),
        ('{"run_after": null}', "run_after"),
        ('{"max_attempts": null}', "max_attempts"),
    ],
)
async def test_null_where_an_update_needs_a_value_is_422(
    client: Client, body: str, field: str
) -> None:
    task = await create(client, run_after=LATER, priority=7, parameters={"steps": 2})
    status, answer = await send(client, "PUT", f"/api/sync/tasks/{task['id']}", body)
    assert status == 422, answer
    assert answer["error"]["details"][0]["field"] == field
    assert "may not be null" in answer["error"]["message"]
    after = await (await client.get(f"/api/sync/tasks/{task['id']}")).json()
    assert after["priority"] == 7 and after["parameters"] == {"steps": 2}
    assert after["updated_at"] == task["updated_at"]


async def test_parameters_are_capped_on_create_batch_update_and_reports(client: Client) -> None:
    big = {"service": "s", "input": "x" * (PARAMETERS_KB * 1024)}
    body = json.dumps({"task_type": "external", "parameters": big})
    status, answer = await send(client, "POST", "/api/sync/tasks", body)
    assert status == 422, answer
    (problem,) = answer["error"]["details"]
    assert problem["field"] == "parameters"
    assert f"SYNCD_MAX_PARAMETERS_KB={PARAMETERS_KB}" in problem["message"]

    batch = {"tasks": [{"task_type": "noop"}, {"task_type": "external", "parameters": big}]}
    status, answer = await send(client, "POST", "/api/sync/tasks/batch", json.dumps(batch))
    assert status == 422 and answer["error"]["details"][0]["field"] == "tasks.1.parameters"
    assert await count_tasks(client) == 0  # the whole batch was refused

    small = {"service": "s", "input": "x"}
    task = await create(client, task_type="external", parameters=small)
    update = json.dumps({"parameters": big})
    status, answer = await send(client, "PUT", f"/api/sync/tasks/{task['id']}", update)
    assert status == 422 and answer["error"]["details"][0]["field"] == "parameters"

    claimed = await client.get("/api/crontask", params={"service": "s"})
    assert claimed.status == 200
    for field in ("temp", "output"):
        report = json.dumps({"status": "running", field: big})
        status, answer = await send(client, "PUT", f"/api/crontask/{task['id']}", report)
        assert status == 422 and answer["error"]["details"][0]["field"] == field
    after = await (await client.get(f"/api/sync/tasks/{task['id']}")).json()
    assert after["parameters"] == small and after["temp"] is None


async def test_nothing_stored_is_echoed_as_bare_nan(client: Client) -> None:
    events = Events(client.app[ENGINE])
    task = await create(client, task_type="not_finite")
    await events.wait(task["id"], "finished")
    want = {"ratio": None, "big": None, "nested": [{"small": None}], "ok": 1.5}
    resp = await client.get(f"/api/sync/tasks/{task['id']}")
    raw = await resp.read()
    assert b"NaN" not in raw and b"Infinity" not in raw
    assert jsonio.loads(raw)["result"] == want
    listed = jsonio.loads(await (await client.get("/api/sync/tasks")).read())
    assert listed["tasks"][0]["result"] == want
