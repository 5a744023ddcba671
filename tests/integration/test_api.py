"""The task API over real HTTP (aiohttp test server) on a real SQLite file."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from config.settings import Settings
from controllers.app import create_app
from controllers.keys import BUS
from engine.handlers import default_registry
from schedule.records import COUNT_CAP
from tests.helpers import Events, Gates

Client = TestClient[web.Request, web.Application]
AiohttpClient = Callable[[web.Application], Awaitable[Client]]


@pytest.fixture
def gates() -> Gates:
    return Gates()


@pytest.fixture
async def client(aiohttp_client: AiohttpClient, settings: Settings, gates: Gates) -> Client:
    registry = default_registry()
    registry.register(gates.spec())
    app = create_app(settings, registry)
    return await aiohttp_client(app)


@pytest.fixture
def events(client: Client) -> Events:
    return Events(client.app[BUS])


async def post(client: Client, path: str, body: Any, status: int) -> Any:
    resp = await client.post(path, json=body)
    data = await resp.json()
    assert resp.status == status, data
    return data


async def get(client: Client, path: str, status: int = 200) -> Any:
    resp = await client.get(path)
    data = await resp.json()
    assert resp.status == status, data
    return data


def error_fields(body: Any) -> list[str]:
    return [d["field"] for d in body["error"]["details"]]


async def test_create_follow_and_get_by_reference(client: Client, events: Events) -> None:
    task = await post(client, "/api/sync/tasks", {"task_type": "noop", "priority": 5}, 201)
    assert task["status"] == "pending" and len(task["reference"]) == 11
    assert task["created_at"].endswith("Z") and task["attempt"] == 0
    await events.wait(task["id"], "finished")
    done = await get(client, f"/api/sync/tasks/{task['reference']}")
    assert done["id"] == task["id"] and done["status"] == "completed"
    assert done["attempts"][0]["outcome"] == "completed" and done["progress"] == 100


async def test_dedupe_returns_the_unfinished_task(client: Client) -> None:
    body = {"task_type": "noop", "dedupe_key": "k1", "run_after": "2099-01-01T00:00:00Z"}
    first = await post(client, "/api/sync/tasks", body, 201)
    again = await post(client, "/api/sync/tasks", body, 200)
    assert again["id"] == first["id"]


async def test_batch_create_and_list_paging_and_filters(client: Client) -> None:
    later = "2099-01-01T00:00:00Z"
    tasks = [
        {"task_type": "noop", "run_after": later, "data_source_id": f"ds{i % 2}"} for i in range(5)
    ]
    created = await post(client, "/api/sync/tasks/batch", {"tasks": tasks}, 201)
    assert len(created["tasks"]) == 5
    page = await get(client, "/api/sync/tasks?page=2&size=2")
    following = page["pagination"].pop("next_cursor")
    preceding = page["pagination"].pop("prev_cursor")
    assert page["pagination"] == {
        "page": 2,
        "size": 2,
        "total": 5,
        "total_pages": 3,
        "total_exact": True,
    }
    assert len(page["tasks"]) == 2
    last = await get(client, f"/api/sync/tasks?size=2&cursor={following}")
    assert last["tasks"] == (await get(client, "/api/sync/tasks?page=3&size=2"))["tasks"]
    assert len(last["tasks"]) == 1 and last["pagination"]["next_cursor"] is None
    back = await get(client, f"/api/sync/tasks?size=2&before={last['pagination']['prev_cursor']}")
    assert back["tasks"] == page["tasks"]
    assert back["pagination"]["prev_cursor"] == preceding
    first = await get(client, f"/api/sync/tasks?size=2&before={preceding}")
    numbered = await get(client, "/api/sync/tasks?size=2")
    assert first["tasks"] == numbered["tasks"] and numbered["pagination"]["prev_cursor"] is None
    assert first["pagination"]["prev_cursor"] is None
    assert first["pagination"]["next_cursor"] == numbered["pagination"]["next_cursor"]
    ds1 = await get(client, "/api/sync/tasks?data_source_id=ds1&status=pending&task_type=noop")
    assert ds1["pagination"]["total"] == 2


async def test_update_only_while_pending(client: Client, events: Events) -> None:
    later = "2099-01-01T00:00:00Z"
    task = await post(client, "/api/sync/tasks", {"task_type": "noop", "run_after": later}, 201)
    resp = await client.put(f"/api/sync/tasks/{task['id']}", json={"config": {"steps": 2}})
    assert resp.status == 200 and (await resp.json())["parameters"] == {"steps": 2}
    resp = await client.put(
        f"/api/sync/tasks/{task['id']}", json={"run_after": "2020-01-01T00:00:00Z"}
    )
    assert resp.status == 200
    await events.wait(task["id"], "finished")
    resp = await client.put(f"/api/sync/tasks/{task['id']}", json={"priority": 1})
    body = await resp.json()
    assert resp.status == 409 and body["error"]["code"] == "invalid_state"
    assert "completed" in body["error"]["message"]


async def test_cancel_retry_delete(client: Client, events: Events, gates: Gates) -> None:
    later = "2099-01-01T00:00:00Z"
    pending = await post(client, "/api/sync/tasks", {"task_type": "noop", "run_after": later}, 201)
    cancelled = await post(client, f"/api/sync/tasks/{pending['id']}/cancel", None, 200)
    assert cancelled["status"] == "cancelled"
    again = await post(client, f"/api/sync/tasks/{pending['id']}/cancel", None, 409)
    assert "cancelled" in again["error"]["message"]
    running = await post(
        client, "/api/sync/tasks", {"task_type": "gate", "parameters": {"name": "r"}}, 201
    )
    async with asyncio.timeout(5):
        await gates.started["r"].wait()
    asked = await post(client, f"/api/sync/tasks/{running['id']}/cancel", None, 202)
    assert asked["cancel_requested"] is True
    delete_running = await client.delete(f"/api/sync/tasks/{running['id']}")
    assert delete_running.status == 409
    gates.release["r"].set()
    await events.wait(running["id"], "finished")
    retried = await post(client, f"/api/sync/tasks/{running['id']}/retry", None, 201)
    assert retried["retry_of"] == running["id"] and retried["id"] != running["id"]
    assert (await client.delete(f"/api/sync/tasks/{pending['id']}")).status == 204
    await get(client, f"/api/sync/tasks/{pending['id']}", 404)


async def test_retry_of_a_completed_task_is_refused(client: Client, events: Events) -> None:
    task = await post(client, "/api/sync/tasks", {"task_type": "noop"}, 201)
    await events.wait(task["id"], "finished")
    body = await post(client, f"/api/sync/tasks/{task['id']}/retry", None, 409)
    assert body["error"]["code"] == "invalid_state" and "completed" in body["error"]["message"]


async def test_batch_cancel_and_retry(client: Client) -> None:
    later = "2099-01-01T00:00:00Z"
    a = await post(client, "/api/sync/tasks", {"task_type": "noop", "run_after": later}, 201)
    result = await post(client, "/api/sync/tasks/batch/cancel", {"ids": [a["id"], "nope"]}, 200)
    assert result["results"][0] == {"id": a["id"], "ok": True, "status": "cancelled"}
    assert result["results"][1]["ok"] is False and "nope" in result["results"][1]["error"]
    retried = await post(client, "/api/sync/tasks/batch/retry", {"ids": [a["id"]]}, 200)
    assert retried["results"][0]["ok"] and retried["results"][0]["task_id"] != a["id"]


async def test_errors_and_statistics(client: Client, events: Events, gates: Gates) -> None:
    task = await post(
        client,
        "/api/sync/tasks",
        {"task_type": "gate", "parameters": {"name": "e", "report": 10}},
        201,
    )
    async with asyncio.timeout(5):
        await gates.started["e"].wait()
    live = await get(client, f"/api/sync/tasks/{task['id']}")
    assert live["status"] == "running" and live["progress"] == 10
    assert live["attempts"][-1]["outcome"] is None
    gates.release["e"].set()
    await events.wait(task["id"], "finished")
    errors = await get(client, f"/api/sync/tasks/{task['id']}/errors?size=5")
    assert errors["pagination"]["total"] == 1 and errors["errors"][0]["reason"] == "bad row"
    assert errors["pagination"]["next_cursor"] is None
    assert errors["pagination"]["prev_cursor"] is None
    stats = await get(client, "/api/sync/tasks/statistics")
    assert stats["database"]["by_status"]["completed"] == 1
    assert stats["engine"]["node_id"] == "test-node" and stats["engine"]["max_concurrent"] == 4
    await get(client, "/api/sync/tasks/statistics?since=yesterday", 422)


async def test_health_and_readiness(client: Client) -> None:
    assert (await get(client, "/healthz"))["status"] == "ok"
    ready = await get(client, "/readyz")
    assert ready["checks"] == {"database": "ok", "writes": "ok", "engine": "ok"}


@pytest.mark.parametrize(
    ("body", "status", "code", "field"),
    [
        ("{not json", 400, "invalid_json", None),
        ("", 400, "invalid_json", None),
        ("[1, 2]", 422, "validation_error", "body"),
        ('{"parameters": {}}', 422, "validation_error", "task_type"),
        ('{"task_type": "noop", "colour": "red"}', 422, "validation_error", "colour"),
        ('{"task_type": "nope"}', 422, "validation_error", "task_type"),
        ('{"task_type": "noop", "priority": 101}', 422, "validation_error", "priority"),
        ('{"task_type": "noop", "max_attempts": 0}', 422, "validation_error", "max_attempts"),
        ('{"task_type": "noop", "run_after": "soon"}', 422, "validation_error", "run_after"),
        (
            '{"task_type": "noop", "parameters": {"sleep_s": -1}}',
            422,
            "validation_error",
            "parameters.sleep_s",
        ),
        ('{"task_type": "noop", "parameters": {"x": 1}}', 422, "validation_error", "parameters.x"),
    ],
)
async def test_bad_create_input(
    client: Client, body: str, status: int, code: str, field: str | None
) -> None:
    resp = await client.post(
        "/api/sync/tasks", data=body, headers={"Content-Type": "application/json"}
    )
    data = await resp.json()
    assert resp.status == status and data["error"]["code"] == code
    if field is not None:
        assert field in error_fields(data)
        assert field in data["error"]["message"]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("page=0", "page"),
        ("size=0", "size"),
        ("size=501", "size"),
        ("page=x", "page"),
        ("status=done", "status"),
        ("colour=red", "colour"),
        ("cursor=notacursor", "cursor"),
        ("cursor=MjAyNi0wMS0wMVQwMDowMDowMC4wMDAwMDB8Jyk7", "cursor"),  # an id no task has
        (f"cursor={'A' * 201}", "cursor"),
        ("page=2&cursor=MjAyNi0wMS0wMVQwMDowMDowMC4wMDAwMDB8YQ", "cursor"),
        ("before=notacursor", "before"),
        ("page=2&before=MjAyNi0wMS0wMVQwMDowMDowMC4wMDAwMDB8YQ", "before"),
        (
            "cursor=MjAyNi0wMS0wMVQwMDowMDowMC4wMDAwMDB8YQ"
            "&before=MjAyNi0wMS0wMVQwMDowMDowMC4wMDAwMDB8YQ",
            "before",
        ),
        ("page=501", "page"),  # (501 - 1) * 20 tasks before it: past the counted part
        ("page=21&size=500", "page"),
        ("page=10001&size=1", "page"),
        ("page=99999999999999999999", "page"),
    ],
)
async def test_bad_list_query(client: Client, query: str, field: str) -> None:
    data = await get(client, f"/api/sync/tasks?{query}", 422)
    assert field in error_fields(data)


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("page=501", "page"),
        ("page=21&size=500", "page"),
        ("cursor=notacursor", "cursor"),
        ("cursor=MjAyNi0wMS0wMVQwMDowMDowMC4wMDAwMDB8YQ", "cursor"),  # a task list cursor
        ("before=ZXJyb3J8LTE", "before"),  # error|-1
        ("page=2&before=ZXJyb3J8Nw", "before"),
        ("cursor=ZXJyb3J8Nw&before=ZXJyb3J8Nw", "before"),
    ],
)
async def test_bad_record_errors_query(client: Client, query: str, field: str) -> None:
    data = await get(client, f"/api/sync/tasks/nosuchtask/errors?{query}", 422)
    assert error_fields(data) == [field]


async def test_page_numbers_stop_at_the_counted_part(client: Client) -> None:
    """The last page by number starts within the first COUNT_CAP tasks; one further is a 422
    naming `page` that points at the cursor."""
    for size in (1, 20, 500, 3):
        last = (COUNT_CAP - 1) // size + 1
        answer = await get(client, f"/api/sync/tasks?page={last}&size={size}")
        assert answer["tasks"] == [] and answer["pagination"]["page"] == last
        refused = await get(client, f"/api/sync/tasks?page={last + 1}&size={size}", 422)
        assert error_fields(refused) == ["page"]
        message = refused["error"]["message"]
        assert message.startswith("page: ") and "pagination.next_cursor" in message
        assert f"page {last} at most" in message


async def test_unknown_ids_and_routes(client: Client) -> None:
    for path in ("/api/sync/tasks/nope", "/api/sync/tasks/nope/errors"):
        data = await get(client, path, 404)
        assert data["error"]["code"] == "not_found"
    for action in ("cancel", "retry"):
        await post(client, f"/api/sync/tasks/nope/{action}", None, 404)
    assert (await client.delete("/api/sync/tasks/nope")).status == 404
    resp = await client.put("/api/sync/tasks/nope", json={"priority": 1})
    assert resp.status == 404
    data = await get(client, "/api/no/such/route", 404)
    assert data["error"]["code"] == "not_found"
    resp = await client.put("/api/sync/tasks/x", json={"parameters": {}, "config": {}})
    assert resp.status == 422
