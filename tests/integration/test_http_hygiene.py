"""Small HTTP manners, through the daemon's app on a real SQLite file: batch ids are acted on
once, 405 answers say what is allowed, odd static paths are 404."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from yarl import URL

from config.settings import Settings
from controllers.app import create_app
from controllers.keys import ENGINE
from tests.helpers import Events

Client = TestClient[web.Request, web.Application]
AiohttpClient = Callable[[web.Application], Awaitable[Client]]


@pytest.fixture
async def client(aiohttp_client: AiohttpClient, settings: Settings) -> Client:
    return await aiohttp_client(create_app(settings))


async def failed_task(client: Client) -> Any:
    events = Events(client.app[ENGINE])
    resp = await client.post(
        "/api/sync/tasks",
        json={"task_type": "noop", "parameters": {"fail_permanently": True}},
    )
    task = await resp.json()
    await events.wait(task["id"], "finished")
    return task


async def test_a_batch_retry_naming_one_task_many_times_makes_one_task(client: Client) -> None:
    task = await failed_task(client)
    ids = [task["id"]] * 997 + [task["reference"], "nope", "nope"]  # 1,000: the most taken
    resp = await client.post("/api/sync/tasks/batch/retry", json={"ids": ids})
    assert resp.status == 200
    results = (await resp.json())["results"]
    assert [r["id"] for r in results] == [task["id"], task["reference"], "nope"]
    by_id, by_reference, unknown = results
    assert by_id["ok"] and by_reference == {**by_id, "id": task["reference"]}
    assert unknown == {"id": "nope", "ok": False, "error": "no task 'nope'"}
    listed = await (await client.get("/api/sync/tasks?size=100")).json()
    retries = [t for t in listed["tasks"] if t["retry_of"] == task["id"]]
    assert [t["id"] for t in retries] == [by_id["task_id"]]


async def test_a_batch_cancel_names_each_task_once(client: Client) -> None:
    later = {"task_type": "noop", "run_after": "2099-01-01T00:00:00Z"}
    task = await (await client.post("/api/sync/tasks", json=later)).json()
    ids = [task["id"], task["reference"], task["id"]]
    resp = await client.post("/api/sync/tasks/batch/cancel", json={"ids": ids})
    results = (await resp.json())["results"]
    assert [(r["id"], r["ok"], r.get("status")) for r in results] == [
        (task["id"], True, "cancelled"),
        (task["reference"], True, "cancelled"),
    ]


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("DELETE", "/api/sync/tasks", {"GET", "HEAD", "POST"}),
        ("PATCH", "/healthz", {"GET", "HEAD"}),
        ("POST", "/api/sync/tasks/x/errors", {"GET", "HEAD"}),
        ("GET", "/api/sync/tasks/x/cancel", {"POST"}),
    ],
)
async def test_405_answers_carry_allow(
    client: Client, method: str, path: str, allowed: set[str]
) -> None:
    resp = await client.request(method, path)
    assert resp.status == 405
    assert (await resp.json())["error"]["code"] == "method_not_allowed"
    assert set(resp.headers["Allow"].split(",")) == allowed


@pytest.mark.parametrize(
    "path",
    [
        "/static/%0D",
        "/static/%0A",
        "/static/a%0D%0Ab",
        "/static/%00",
        "/static/" + "a" * 5000,
        "/static/..%2F..%2Fcontrollers%2Fapp.py",
        "/static/%2e%2e/app.py",
        "/static/app.js/x",
        "/static/pages",
        "/static/%C0%AF",
        "/static/%FF%FE",
        "/static/\\..\\app.py",
    ],
)
async def test_odd_static_paths_are_404(client: Client, path: str) -> None:
    resp = await client.get(URL(path, encoded=True))
    assert resp.status == 404, await resp.text()
    assert (await resp.json())["error"]["code"] == "not_found"


async def test_dashboard_files_are_still_served(client: Client) -> None:
    resp = await client.get("/static/app.js")
    assert resp.status == 200 and "javascript" in resp.headers["Content-Type"]


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("PUT", "/api/sync/tasks/statistics", {"GET", "HEAD"}),
        ("DELETE", "/api/sync/tasks/throughput", {"GET", "HEAD"}),
        ("GET", "/api/sync/tasks/batch", {"POST"}),
        ("OPTIONS", "/api/sync/tasks/batch", {"POST"}),
        ("OPTIONS", "/api/sync/tasks/statistics", {"GET", "HEAD"}),
    ],
)
async def test_routes_beside_a_task_are_not_task_ids(
    client: Client, method: str, path: str, allowed: set[str]
) -> None:
    """`statistics`, `throughput` and `batch` are routes, not task ids: another method there is
    a 405 that allows only what the document offers at that path (found by the API fuzz: PUT
    and DELETE reached the task routes and were listed in `Allow`)."""
    resp = await client.request(method, path)
    assert resp.status == 405, await resp.text()
    assert set(resp.headers["Allow"].split(",")) == allowed


async def test_a_task_is_still_found_by_id_and_reference(client: Client) -> None:
    later = {"task_type": "noop", "run_after": "2099-01-01T00:00:00Z"}
    task = await (await client.post("/api/sync/tasks", json=later)).json()
    for key in (task["id"], task["reference"]):
        resp = await client.get(f"/api/sync/tasks/{key}")
        assert resp.status == 200 and (await resp.json())["id"] == task["id"]
        errors = await client.get(f"/api/sync/tasks/{key}/errors")
        assert errors.status == 200
    resp = await client.get("/api/sync/tasks/batchx")
    assert resp.status == 404 and "batchx" in (await resp.json())["error"]["message"]
