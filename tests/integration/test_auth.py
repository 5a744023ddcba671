"""Bearer tokens and roles on /api; open probes; the loopback-only rule without tokens."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from config.exceptions import SettingsError
from config.settings import Settings
from controllers.app import create_app, routes_only
from controllers.auth import check_exposure, is_loopback, token_role
from controllers.openapi import access_table
from tests.conftest import make_settings

Client = TestClient[Any, Any]
TOKENS = {"adm-1": "admin", "ops-1": "operator", "read-1": "read", "wrk-1": "worker"}


@pytest.fixture
def auth_settings(sqlite_url: str, tmp_path: Path) -> Settings:
    return make_settings(sqlite_url, tmp_path, api_tokens=TOKENS)


@pytest.fixture
async def client(aiohttp_client: Any, auth_settings: Settings) -> Client:
    c: Client = await aiohttp_client(create_app(auth_settings))
    return c


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize(
    ("headers", "why"),
    [
        ({}, "missing"),
        ({"Authorization": "adm-1"}, "malformed"),
        ({"Authorization": "Basic YWRtOjE="}, "malformed"),
        ({"Authorization": "Bearer "}, "malformed"),
        ({"Authorization": "Bearer adm-1 extra"}, "malformed"),
        ({"Authorization": "Bearer adm-2"}, "unknown"),
        ({"Authorization": "Bearer adm-"}, "unknown"),
    ],
)
async def test_401(client: Client, headers: dict[str, str], why: str) -> None:
    resp = await client.get("/api/sync/tasks", headers=headers)
    assert resp.status == 401
    body = await resp.json()
    assert body["error"]["code"] == "unauthorized" and why in body["error"]["message"]
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")


async def test_probes_and_metrics_stay_open(client: Client) -> None:
    for path in ("/healthz", "/readyz", "/metrics"):
        assert (await client.get(path)).status == 200, path


async def test_scheme_is_case_insensitive(client: Client) -> None:
    resp = await client.get("/api/sync/tasks", headers={"Authorization": "bearer read-1"})
    assert resp.status == 200


async def test_roles(client: Client) -> None:
    create = {"task_type": "noop", "run_after": "2999-01-01T00:00:00Z"}
    ext = {"task_type": "external", "parameters": {"service": "s"}}

    async def status(method: str, path: str, token: str, body: Any = None) -> int:
        resp = await client.request(method, path, json=body, headers=bearer(token))
        return resp.status

    assert await status("POST", "/api/sync/tasks", "read-1", create) == 403
    assert await status("POST", "/api/sync/tasks", "wrk-1", create) == 403
    resp = await client.post("/api/sync/tasks", json=create, headers=bearer("ops-1"))
    assert resp.status == 201
    task = await resp.json()
    forbidden = await client.post("/api/sync/tasks", json=create, headers=bearer("read-1"))
    assert (await forbidden.json())["error"]["code"] == "forbidden"

    path = f"/api/sync/tasks/{task['id']}"
    assert await status("GET", path, "read-1") == 200
    assert await status("GET", path, "wrk-1") == 403
    assert await status("PUT", path, "ops-1", {"priority": 5}) == 403
    assert await status("PUT", path, "adm-1", {"priority": 5}) == 200
    assert await status("POST", path + "/cancel", "read-1") == 403
    assert await status("POST", path + "/cancel", "ops-1") == 200
    assert await status("POST", path + "/retry", "ops-1") == 201
    assert await status("DELETE", path, "ops-1") == 403
    assert await status("DELETE", path, "adm-1") == 204

    assert await status("POST", "/api/sync/tasks", "adm-1", ext) == 201
    assert await status("GET", "/api/crontask?service=s", "read-1") == 403
    assert await status("GET", "/api/crontask?service=s", "ops-1") == 403
    assert await status("GET", "/api/crontask?service=s", "wrk-1") == 200
    assert await status("GET", "/api/crontask?service=s", "adm-1") == 204
    assert await status("GET", "/api/openapi.json", "wrk-1") == 200


def test_policy_table() -> None:
    declared = {(r.method, r.path): r.access for r in access_table(routes_only())}
    assert declared["GET", "/api/tasks/{id}"] == frozenset({"admin", "operator", "read"})
    assert declared["POST", "/api/tools/import"] == frozenset({"admin", "operator"})
    assert declared["PUT", "/api/sync/tasks/{id}"] == frozenset({"admin"})
    assert declared["PUT", "/api/crontask/{id}"] == frozenset({"admin", "worker"})
    assert declared["POST", "/api/sync/data-sources"] == frozenset({"admin"})
    assert ("GET", "/api/crontaskx") not in declared


def test_token_role_checks_every_token() -> None:
    assert token_role({"a": "read", "b": "admin"}, "b") == "admin"
    assert token_role({"a": "read"}, "A") is None
    assert token_role({}, "a") is None


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.5", False),
        ("example.com", False),
        ("", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_open_api_refuses_non_loopback(sqlite_url: str, tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="SYNCD_API_TOKENS") as err:
        check_exposure(make_settings(sqlite_url, tmp_path, host="0.0.0.0"))
    assert "\n" not in str(err.value)
    check_exposure(make_settings(sqlite_url, tmp_path, host="0.0.0.0", api_tokens={"t": "read"}))
    check_exposure(make_settings(sqlite_url, tmp_path, host="127.0.0.1"))
