"""HTTP routes of the periodic jobs and partnumber books: /api/schedules and seed 000's
partnumber-book and task endpoints."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient
from sqlalchemy.ext.asyncio import AsyncEngine

from config.settings import Settings
from controllers.app import create_app
from tests.helpers import task_json_once
from tests.integration.pnbooks import load, mapping

Client = TestClient[Any, Any]


@pytest.fixture
async def client(aiohttp_client: AiohttpClient, settings: Settings) -> Client:
    return await aiohttp_client(create_app(settings))


async def seed_task(client: Client, task_id: str) -> dict[str, Any]:
    """`GET /api/tasks/{id}` (what QuoteForge polls) once the task has ended."""
    await task_json_once(client, task_id)
    resp = await client.get(f"/api/tasks/{task_id}")
    assert resp.status == 200
    body: dict[str, Any] = await resp.json()
    assert body["status"] != "running"
    return body


async def test_schedules_list_run_pause_resume(client: Client) -> None:
    resp = await client.get("/api/schedules")
    assert resp.status == 200
    schedules = {s["id"]: s for s in (await resp.json())["schedules"]}
    assert set(schedules) == {
        "partnumber_book_create",
        "partnumber_book_retention",
        "task_retention",
    }
    snap = schedules["partnumber_book_create"]
    assert (snap["trigger"], snap["timezone"], snap["paused"]) == (
        {"cron": "0 3 * * *"},
        "UTC",
        False,
    )
    assert (snap["origin"], snap["description"]) == ("builtin", "At 03:00 AM")
    assert snap["next_run_at"].endswith("T03:00:00.000Z")

    resp = await client.post("/api/schedules/task_retention/run")
    assert resp.status == 201
    task = await resp.json()
    assert task["task_type"] == "task_retention" and "reference" in task
    assert (await seed_task(client, task["id"]))["status"] == "completed"

    resp = await client.post("/api/schedules/task_retention/pause")
    assert resp.status == 200
    assert (await resp.json())["paused"] is True
    listed = {s["id"]: s for s in (await (await client.get("/api/schedules")).json())["schedules"]}
    assert listed["task_retention"]["paused"] is True
    assert listed["task_retention"]["next_run_at"] is None
    assert listed["task_retention"]["last_run"]["task_id"] == task["id"]
    resp = await client.post("/api/schedules/task_retention/resume")
    assert (await resp.json())["paused"] is False


@pytest.mark.parametrize("action", ["run", "pause", "resume"])
async def test_unknown_schedule_is_404(client: Client, action: str) -> None:
    resp = await client.post(f"/api/schedules/nope/{action}")
    assert resp.status == 404
    assert (await resp.json())["error"]["code"] == "not_found"


async def test_partnumber_books_seed000_flow(client: Client, db: AsyncEngine) -> None:
    await load(
        db,
        [mapping(f"PN-{i}", "LOT") for i in range(3)] + [mapping("PN-B", "B")],
        bundles={"B": [("C1", 1), ("C2", 2)]},
    )
    resp = await client.get("/api/admin/pricing/partnumber-books")
    assert resp.status == 200 and await resp.json() == {"books": []}

    resp = await client.post("/api/admin/pricing/partnumber-books")
    assert resp.status == 200
    created = await resp.json()
    assert set(created) == {"task_id"}
    task = await seed_task(client, created["task_id"])
    assert set(task) == {
        "id",
        "type",
        "status",
        "progress",
        "message",
        "result",
        "error",
        "created_at",
        "done_at",
    }
    assert (task["type"], task["status"], task["progress"], task["error"]) == (
        "partnumber_book_create",
        "completed",
        100,
        None,
    )
    assert task["done_at"].endswith("Z")
    version = task["result"]["version"]
    books = (await (await client.get("/api/admin/pricing/partnumber-books")).json())["books"]
    assert [(b["version"], b["is_active"], b["item_count"]) for b in books] == [(version, True, 5)]

    url = f"/api/admin/pricing/partnumber-books/{version}/items"
    page = await (await client.get(url, params={"page": "2", "size": "2"})).json()
    assert page["pagination"] == {"page": 2, "size": 2, "total": 5, "total_pages": 3}
    assert len(page["items"]) == 2 and page["book"]["version"] == version
    only = await (await client.get(url, params={"partnumber": "PN-B"})).json()
    assert {(i["lot_name"], i["qty"]) for i in only["items"]} == {("C1", 1), ("C2", 2)}
    assert set(only["items"][0]) == {
        "partnumber",
        "vendor",
        "lot_name",
        "qty",
        "is_primary_pn",
        "description",
    }

    # A second book the same day: it becomes the active one and GFS (newest book per day)
    # deletes the first.
    resp = await client.post("/api/admin/pricing/partnumber-books", json={})
    second = await seed_task(client, (await resp.json())["task_id"])
    assert second["result"]["retention"]["deleted"] == [version]
    books = (await (await client.get("/api/admin/pricing/partnumber-books")).json())["books"]
    assert [(b["version"], b["is_active"], b["item_count"]) for b in books] == [
        (second["result"]["version"], True, 5)
    ]
    assert books[0]["task_id"] == second["id"]
    resp = await client.get(f"/api/admin/pricing/partnumber-books/{version}/items")
    assert resp.status == 404


async def test_seed000_errors(client: Client) -> None:
    resp = await client.post("/api/admin/pricing/partnumber-books")  # source tables are empty
    task = await seed_task(client, (await resp.json())["task_id"])
    assert task["status"] == "error" and "empty" in task["error"]
    assert task["result"] is None

    resp = await client.get("/api/admin/pricing/partnumber-books/PNBOOK-1999-01-01-001/items")
    assert resp.status == 404 and (await resp.json())["error"]["code"] == "not_found"
    resp = await client.get("/api/tasks/00000000-0000-0000-0000-000000000000")
    assert resp.status == 404 and (await resp.json())["error"]["code"] == "not_found"
    resp = await client.get(
        "/api/admin/pricing/partnumber-books/X/items", params={"size": "0", "bogus": "1"}
    )
    body = await resp.json()
    assert resp.status == 422
    assert {d["field"] for d in body["error"]["details"]} == {"size", "bogus"}
    resp = await client.post("/api/admin/pricing/partnumber-books", json={"force": True})
    assert resp.status == 422 and (await resp.json())["error"]["details"][0]["field"] == "force"
    resp = await client.post(
        "/api/admin/pricing/partnumber-books",
        data=b"{nope",
        headers={"Content-Type": "application/json"},
    )
    assert resp.status == 400 and (await resp.json())["error"]["code"] == "invalid_json"
