"""API parts the dashboard and the CLI rely on: priorities of snapshots and uploads."""

from __future__ import annotations

import asyncio
import io
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from openpyxl import Workbook
from pytest_aiohttp import AiohttpClient

from config.settings import Settings
from controllers.app import create_app
from engine.handlers import default_registry

Client = TestClient[Any, Any]
LATER = "2099-01-01T00:00:00Z"


@pytest.fixture
async def client(aiohttp_client: AiohttpClient, settings: Settings) -> Client:
    return await aiohttp_client(create_app(settings))


def workbook() -> bytes:
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["partnumber", "vendor", "description", "qty", "price", "warehouse"])
    sheet.append(["PN-1", "ACME", "a part", 3, 9.5, "main"])
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def upload_form(content: bytes) -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("file", io.BytesIO(content), filename="stock.xlsx")
    return form


async def test_snapshot_takes_a_priority(client: Client) -> None:
    resp = await client.post("/api/admin/pricing/partnumber-books", json={"priority": 42})
    assert resp.status == 200, await resp.text()
    task_id = (await resp.json())["task_id"]
    task = await (await client.get(f"/api/sync/tasks/{task_id}")).json()
    assert (task["task_type"], task["priority"]) == ("partnumber_book_create", 42)

    resp = await client.post("/api/admin/pricing/partnumber-books", json={"priority": 101})
    assert resp.status == 422
    assert [d["field"] for d in (await resp.json())["error"]["details"]] == ["priority"]


async def test_stock_upload_takes_a_priority(client: Client) -> None:
    content = await asyncio.to_thread(workbook)
    resp = await client.post("/api/imports/stock?priority=-7", data=upload_form(content))
    assert resp.status == 202, await resp.text()
    assert (await resp.json())["priority"] == -7

    for bad in ("high", "500", "true"):
        resp = await client.post(f"/api/imports/stock?priority={bad}", data=upload_form(content))
        assert resp.status == 422, bad
        details = (await resp.json())["error"]["details"]
        assert [d["field"] for d in details] == ["priority"], bad


async def test_task_types_lists_every_registered_type(client: Client) -> None:
    resp = await client.get("/api/sync/task-types")
    assert resp.status == 200
    types = (await resp.json())["task_types"]
    names = [t["task_type"] for t in types]
    assert names == sorted(default_registry().names())
    assert {"noop", "stock_import", "full_sync", "incremental_sync"} <= set(names)
    by_name = {t["task_type"]: t for t in types}
    assert by_name["task_retention"]["maintenance"] is True
    assert by_name["noop"]["maintenance"] is False
    assert by_name["noop"]["description"].startswith("Does nothing")
