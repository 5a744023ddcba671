"""/api/openapi.json covers every registered route and is a valid OpenAPI 3.1 document."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient
from openapi_spec_validator import validate

from config.settings import Settings
from controllers.app import create_app
from controllers.models import CreateTaskBody, ListQuery, TaskDetailOut, TaskListOut, TaskOut
from controllers.openapi import build_spec, doc, undocumented
from controllers.roles import READERS

Client = TestClient[Any, Any]


def test_every_route_is_documented(settings: Settings) -> None:
    assert undocumented(create_app(settings)) == []


def test_a_route_without_metadata_is_reported(settings: Settings) -> None:
    app = create_app(settings)

    async def bare(request: web.Request) -> web.Response:
        return web.Response()

    app.router.add_get("/api/bare/{name}", bare)
    assert undocumented(app) == ["GET /api/bare/{name}"]
    spec = build_spec(app, "1")
    assert spec["paths"]["/api/bare/{name}"]["get"]["summary"] == "Undocumented route"


def test_routes_added_later_are_covered(settings: Settings) -> None:
    app = create_app(settings)

    @doc("Later", roles=READERS, query=ListQuery, responses={200: "ok"})
    async def later(request: web.Request) -> web.Response:
        return web.Response()

    app.router.add_get("/api/later", later)
    app.router.add_static("/ui", ".")
    spec = build_spec(app, "1")
    names = [p["name"] for p in spec["paths"]["/api/later"]["get"]["parameters"]]
    assert names == list(ListQuery.model_fields)
    assert "/ui/{filename}" in spec["paths"]
    validate(spec)


async def test_served_document_is_valid(aiohttp_client: Any, settings: Settings) -> None:
    app = create_app(settings)
    client: Client = await aiohttp_client(app)
    resp = await client.get("/api/openapi.json")
    assert resp.status == 200
    spec = await resp.json()
    validate(spec)
    assert spec["openapi"] == "3.1.0"
    registered = {
        (r.method.lower(), r.resource.canonical)
        for r in app.router.routes()
        if r.method != "HEAD" and r.resource is not None
    }
    documented = {(m, p) for p, ops in spec["paths"].items() for m in ops}
    assert registered == documented
    create = spec["paths"]["/api/sync/tasks"]["post"]
    ref = create["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert ref == "#/components/schemas/CreateTaskBody"
    schema = spec["components"]["schemas"]["CreateTaskBody"]
    assert schema == CreateTaskBody.model_json_schema(ref_template="#/components/schemas/{model}")
    assert create["security"] == [{"bearer": []}]
    assert create["x-roles"] == ["admin", "operator"]
    assert spec["paths"]["/healthz"]["get"]["security"] == []
    assert "x-roles" not in spec["paths"]["/healthz"]["get"]
    cron = spec["paths"]["/api/crontask"]["get"]
    assert {p["name"]: p["required"] for p in cron["parameters"]} == {
        "service": True,
        "group": False,
    }
    assert "204" in cron["responses"]


async def test_answers_match_the_documented_models(aiohttp_client: Any, settings: Settings) -> None:
    client: Client = await aiohttp_client(create_app(settings))
    body = {"task_type": "external", "parameters": {"service": "s"}}
    created = await (await client.post("/api/sync/tasks", json=body)).json()
    TaskOut.model_validate(created)
    claimed = await (await client.get("/api/crontask", params={"service": "s"})).json()
    TaskOut.model_validate(claimed)
    done = await client.put(f"/api/crontask/{created['id']}", json={"status": "completed"})
    TaskOut.model_validate(await done.json())
    detail = await (await client.get(f"/api/sync/tasks/{created['id']}")).json()
    assert TaskDetailOut.model_validate(detail).attempts[0].outcome == "completed"
    TaskListOut.model_validate(await (await client.get("/api/sync/tasks")).json())
    spec = await (await client.get("/api/openapi.json")).json()
    answer = spec["paths"]["/api/sync/tasks/{id}"]["get"]["responses"]["200"]
    schema = answer["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/TaskDetailOut"}
    assert set(spec["components"]["schemas"]["TaskOut"]["properties"]) == set(created)
