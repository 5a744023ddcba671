"""Searching the task list (`q`): by reference or id prefix and by dedupe key, on both
dialects, with LIKE's wildcards taken literally, beside the other filters."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from config.settings import Settings
from controllers.app import create_app
from tests.conftest import make_settings

Client = TestClient[Any, Any]
LATER = "2099-01-01T00:00:00Z"


@pytest.fixture
def app_settings(database_url: str, tmp_path: Path) -> Settings:
    return make_settings(database_url, tmp_path)


@pytest.fixture
async def client(aiohttp_client: AiohttpClient, app_settings: Settings) -> Client:
    return await aiohttp_client(create_app(app_settings))


async def found(client: Client, **query: str) -> set[str]:
    resp = await client.get("/api/sync/tasks", params={"size": "500", **query})
    assert resp.status == 200, await resp.text()
    return {t["dedupe_key"] or t["id"] for t in (await resp.json())["tasks"]}


async def test_search_by_reference_id_and_dedupe_key(client: Client) -> None:
    keys = ["erp-parts@2026-03-01", "erp-parts@2026-03-02", "erp_stock", "erp%stock", "crm-1"]
    made = {}
    for key in keys:
        body = {"task_type": "noop", "run_after": LATER, "dedupe_key": key}
        made[key] = await (await client.post("/api/sync/tasks", json=body)).json()
    one = made["crm-1"]
    assert await found(client, q=one["reference"][:6].lower()) >= {"crm-1"}
    assert await found(client, q=one["reference"]) == {"crm-1"}
    assert await found(client, q=one["id"][:13]) == {"crm-1"}
    assert await found(client, q="erp-parts@") == {"erp-parts@2026-03-01", "erp-parts@2026-03-02"}
    assert await found(client, q="ERP-PARTS@2026-03-02") == {"erp-parts@2026-03-02"}
    assert await found(client, q="erp_") == {"erp_stock"}  # not "any one character"
    assert await found(client, q="erp%") == {"erp%stock"}  # not "anything"
    assert await found(client, q="nothing-like-it") == set()
    await client.post(f"/api/sync/tasks/{made['erp-parts@2026-03-01']['id']}/cancel")
    assert await found(client, q="erp-parts", status="pending") == {"erp-parts@2026-03-02"}


@pytest.mark.parametrize("bad", ["", "   ", "x" * 256])
async def test_bad_search_is_a_422_naming_q(client: Client, bad: str) -> None:
    resp = await client.get("/api/sync/tasks", params={"q": bad})
    assert resp.status == 422
    assert [d["field"] for d in (await resp.json())["error"]["details"]] == ["q"]
