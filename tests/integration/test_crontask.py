"""External workers (seed 003): claim through GET /api/crontask, report through PUT."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from config.settings import Settings
from controllers.app import create_app
from tests.conftest import make_settings
from tests.helpers import task_json_once

Client = TestClient[Any, Any]


@pytest.fixture
def ext_settings(sqlite_url: str, tmp_path: Path) -> Settings:
    return make_settings(sqlite_url, tmp_path, external_lease_s=30)


@pytest.fixture
async def client(aiohttp_client: Any, ext_settings: Settings) -> Client:
    c: Client = await aiohttp_client(create_app(ext_settings))
    return c


async def _create(client: Client, service: str, group: str | None = None, **more: Any) -> Any:
    params: dict[str, Any] = {"service": service, "input": "oss://in/1"}
    if group is not None:
        params["group"] = group
    resp = await client.post(
        "/api/sync/tasks", json={"task_type": "external", "parameters": params, **more}
    )
    assert resp.status == 201, await resp.text()
    return await resp.json()


async def test_seed_003_flow(client: Client) -> None:
    first = await _create(client, "ocr")
    await _create(client, "ocr", group="gpu")
    await _create(client, "thumbs")

    resp = await client.get("/api/crontask", params={"service": "ocr"})
    assert resp.status == 200
    claimed = await resp.json()
    assert claimed["id"] == first["id"]  # the oldest of that service
    assert claimed["status"] == "running" and claimed["attempt"] == 1
    assert claimed["service"] == "ocr" and claimed["parameters"]["input"] == "oss://in/1"

    resp = await client.put(
        f"/api/crontask/{first['id']}", json={"progress": 40, "temp": {"page": 4}, "status": 20}
    )
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["progress"] == 40 and body["temp"] == {"page": 4} and body["status"] == "running"

    resp = await client.put(
        f"/api/crontask/{first['id']}", json={"status": "completed", "output": "oss://out/1"}
    )
    done = await resp.json()
    assert done["status"] == "completed" and done["result"] == {"output": "oss://out/1"}
    assert done["progress"] == 100 and done["finished_at"] is not None

    resp = await client.put(f"/api/crontask/{first['id']}", json={"progress": 50})
    assert resp.status == 409
    assert (await resp.json())["error"]["code"] == "invalid_state"

    detail = await (await client.get(f"/api/sync/tasks/{first['id']}")).json()
    assert [a["outcome"] for a in detail["attempts"]] == ["completed"]
    assert detail["temp"] == {"page": 4}

    resp = await client.get("/api/crontask", params={"service": "ocr", "group": "gpu"})
    assert (await resp.json())["group"] == "gpu"
    assert (await client.get("/api/crontask", params={"service": "ocr"})).status == 204
    assert (await client.get("/api/crontask", params={"service": "nobody"})).status == 204


async def test_local_pool_never_runs_external_tasks(client: Client) -> None:
    task = await _create(client, "ocr")
    noop = await (await client.post("/api/sync/tasks", json={"task_type": "noop"})).json()
    assert (await task_json_once(client, noop["id"]))["status"] == "completed"
    again = await (await client.get(f"/api/sync/tasks/{task['id']}")).json()
    assert again["status"] == "pending" and again["attempt"] == 0


async def test_failed_report_ends_the_task(client: Client) -> None:
    task = await _create(client, "ocr")
    assert (await client.get("/api/crontask", params={"service": "ocr"})).status == 200
    resp = await client.put(
        f"/api/crontask/{task['id']}", json={"status": "failed", "message": "bad scan"}
    )
    body = await resp.json()
    assert body["status"] == "failed" and body["error"] == "bad scan"


@pytest.mark.parametrize(
    ("query", "field"),
    [({}, "service"), ({"service": "a b"}, "service"), ({"service": "x", "grp": "1"}, "grp")],
)
async def test_bad_claim_queries(client: Client, query: dict[str, str], field: str) -> None:
    resp = await client.get("/api/crontask", params=query)
    assert resp.status == 422
    assert field in (await resp.json())["error"]["message"]


async def test_report_errors(client: Client) -> None:
    assert (await client.put("/api/crontask/nope", json={})).status == 404
    noop = await (await client.post("/api/sync/tasks", json={"task_type": "noop"})).json()
    resp = await client.put(f"/api/crontask/{noop['id']}", json={"progress": 1})
    assert resp.status == 404 and "not an external task" in (await resp.json())["error"]["message"]
    task = await _create(client, "ocr")
    resp = await client.put(f"/api/crontask/{task['id']}", json={"progress": 1})
    assert resp.status == 409 and "claim it" in (await resp.json())["error"]["message"]
    bad = [
        {"status": "done"},
        {"progress": 101},
        {"status": 99},
        {"unknown": 1},
    ]
    for body in bad:
        resp = await client.put(f"/api/crontask/{task['id']}", json=body)
        assert resp.status == 422, body
    resp = await client.post(
        "/api/sync/tasks", json={"task_type": "external", "parameters": {"group": "g"}}
    )
    assert resp.status == 422 and "parameters.service" in (await resp.json())["error"]["message"]


async def test_stale_attempt_is_refused(client: Client) -> None:
    task = await _create(client, "ocr")
    claimed = await (await client.get("/api/crontask", params={"service": "ocr"})).json()
    resp = await client.put(
        f"/api/crontask/{task['id']}", json={"attempt": claimed["attempt"] + 1, "progress": 3}
    )
    assert resp.status == 409
