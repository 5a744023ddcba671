"""/api/openapi.json covers every registered route and is a valid OpenAPI 3.1 document."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient
from openapi_spec_validator import validate

from config.settings import Settings
from controllers.app import create_app, routes_only
from controllers.models import (
    CreateTaskBody,
    ListQuery,
    TaskDetailOut,
    TaskListOut,
    TaskOut,
    UpdateTaskBody,
)
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


def _spec() -> dict[str, Any]:
    return build_spec(routes_only(), "1")


async def test_a_missing_dashboard_file_is_a_documented_404(
    aiohttp_client: Any, settings: Settings
) -> None:
    """The API fuzz got an undocumented 404 from `GET /static/{path}`."""
    client: Client = await aiohttp_client(create_app(settings))
    resp = await client.get("/static/no-such-file.js")
    assert resp.status == 404
    assert "404" in _spec()["paths"]["/static/{path}"]["get"]["responses"]


async def test_the_snapshot_request_documents_its_body_as_optional(
    aiohttp_client: Any, settings: Settings
) -> None:
    """`POST .../partnumber-books` takes `{}` or no body at all; the document said a body was
    required, so the fuzz's request without one was 'invalid data accepted'."""
    client: Client = await aiohttp_client(create_app(settings))
    resp = await client.post("/api/admin/pricing/partnumber-books")
    assert resp.status == 200
    operation = _spec()["paths"]["/api/admin/pricing/partnumber-books"]["post"]
    assert operation["requestBody"]["required"] is False
    assert _spec()["paths"]["/api/sync/tasks"]["post"]["requestBody"]["required"] is True


async def test_a_new_data_source_documents_its_id_as_required(
    aiohttp_client: Any, settings: Settings
) -> None:
    """The POST body shared the PUT's model, whose `id` may be left out (the path gives it), so
    the document offered a definition without `id` that the POST refuses."""
    client: Client = await aiohttp_client(create_app(settings))
    definition = {
        "name": "n",
        "kind": "file",
        "connection": {"path": "/nowhere.csv"},
        "target_table": "tools",
        "key_columns": ["tool_id"],
    }
    resp = await client.post("/api/sync/data-sources", json=definition)
    assert resp.status == 422
    assert (await resp.json())["error"]["details"][0] == {
        "field": "id",
        "message": "Field required",
    }
    spec = _spec()
    post = spec["paths"]["/api/sync/data-sources"]["post"]["requestBody"]["content"]
    created = spec["components"]["schemas"][post["application/json"]["schema"]["$ref"][21:]]
    assert "id" in created["required"] and created["properties"]["id"]["type"] == "string"
    put = spec["paths"]["/api/sync/data-sources/{id}"]["put"]["requestBody"]["content"]
    assert put["application/json"]["schema"] == {"$ref": "#/components/schemas/DataSourceBody"}


def test_a_task_update_does_not_offer_null() -> None:
    """`PUT /api/sync/tasks/{id}` refuses null in every field (422); the document allowed it."""
    schema = _spec()["components"]["schemas"]["UpdateTaskBody"]
    for name, field in schema["properties"].items():
        assert "anyOf" not in field and field.get("type") != "null", name
        assert "default" not in field, name
    assert UpdateTaskBody.model_validate({"priority": 3}).changes() == {"priority": 3}


def test_the_stock_upload_documents_its_multipart_body() -> None:
    """The upload's body was not in the document at all, so the fuzz could only send none."""
    operation = _spec()["paths"]["/api/imports/stock"]["post"]
    content = operation["requestBody"]["content"]
    assert list(content) == ["multipart/form-data"]
    upload = _spec()["components"]["schemas"]["StockUpload"]
    assert upload["required"] == ["file"]
    assert upload["properties"]["file"]["format"] == "binary"
    assert "malformed multipart body" in operation["responses"]["400"]["description"]
    validate(_spec())
