"""The dashboard's server side: static files, `/api/whoami`, the throughput endpoint."""

from __future__ import annotations

import posixpath
import re
from pathlib import Path
from typing import Any

from config.settings import Settings
from controllers.app import create_app
from controllers.dashboard import STATIC_DIR
from tests.conftest import make_settings

AiohttpClient = Any


async def test_index_and_every_module_it_imports_are_served(
    aiohttp_client: AiohttpClient, settings: Settings
) -> None:
    client = await aiohttp_client(create_app(settings))
    index = await client.get("/")
    assert index.status == 200 and index.content_type == "text/html"
    html = await index.text()
    assert "/static/app.js" in html and "/static/app.css" in html
    assert "http://" not in html and "https://" not in html  # nothing from a CDN
    modules = ["app.js", *re.findall(r'<script src="/static/([^"]+)"></script>', html)]
    assert "theme.js" in modules  # the classic script that applies the theme before drawing
    seen: set[str] = set()
    while modules:
        name = modules.pop()
        if name in seen:
            continue
        seen.add(name)
        answer = await client.get(f"/static/{name}")
        assert answer.status == 200, name
        assert answer.headers["Cache-Control"] == "no-cache"
        source = await answer.text()
        assert "https://" not in source.replace("http://www.w3.org/2000/svg", "")
        for target in re.findall(r'from "(\.{1,2}/[^"]+)"', source):
            modules.append(posixpath.normpath(posixpath.join(posixpath.dirname(name), target)))
    assert {"api.js", "live.js", "ui.js", "pages/tasks.js", "pages/books.js"} <= seen
    shipped = {p.relative_to(STATIC_DIR).as_posix() for p in STATIC_DIR.rglob("*.js")}
    assert shipped == seen  # no dead module, none missing


async def test_static_refuses_paths_outside_the_folder(
    aiohttp_client: AiohttpClient, settings: Settings
) -> None:
    client = await aiohttp_client(create_app(settings))
    for path in ("/static/../dashboard.py", "/static/%2e%2e/dashboard.py", "/static/nope.js"):
        answer = await client.get(path)
        assert answer.status == 404, path
        assert (await answer.json())["error"]["code"] == "not_found"


async def test_whoami_without_tokens_is_an_admin_without_auth(
    aiohttp_client: AiohttpClient, settings: Settings
) -> None:
    client = await aiohttp_client(create_app(settings))
    answer = await client.get("/api/whoami")
    assert await answer.json() == {"role": "admin", "auth": False}


async def test_whoami_with_tokens(
    aiohttp_client: AiohttpClient, sqlite_url: str, tmp_path: Path
) -> None:
    settings = make_settings(sqlite_url, tmp_path, api_tokens="a-secret:admin,r-secret:read")
    client = await aiohttp_client(create_app(settings))
    read = await client.get("/api/whoami", headers={"Authorization": "Bearer r-secret"})
    assert await read.json() == {"role": "read", "auth": True}
    admin = await client.get("/api/whoami", headers={"Authorization": "bearer a-secret"})
    assert await admin.json() == {"role": "admin", "auth": True}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic r-secret"}):
        answer = await client.get("/api/whoami", headers=headers)
        assert answer.status == 401, headers
        assert (await answer.json())["error"]["code"] == "unauthorized"
    query_only = await client.get("/api/whoami", params={"token": "r-secret"})
    assert query_only.status == 401  # ?token= is accepted on /api/ws only


async def test_throughput_endpoint(aiohttp_client: AiohttpClient, settings: Settings) -> None:
    client = await aiohttp_client(create_app(settings))
    later = {"task_type": "noop", "run_after": "2099-01-01T00:00:00Z"}
    created = await client.post("/api/sync/tasks", json=later)
    task_id = (await created.json())["id"]
    answer = await client.get("/api/sync/tasks/throughput")
    body = await answer.json()
    assert answer.status == 200 and body["hours"] == 24 and len(body["buckets"]) == 24
    assert body["since"] == body["buckets"][0]["hour"]
    assert set(body["buckets"][0]) == {"hour", "completed", "failed", "cancelled"}
    assert all(b["cancelled"] == 0 for b in body["buckets"])
    await client.post(f"/api/sync/tasks/{task_id}/cancel")  # pending: cancelled at once
    body = await (await client.get("/api/sync/tasks/throughput", params={"hours": 2})).json()
    assert len(body["buckets"]) == 2  # (two, in case the hour turns during the test)
    assert sum(b["cancelled"] for b in body["buckets"]) == 1
    assert sum(b["completed"] + b["failed"] for b in body["buckets"]) == 0
    for bad in ("0", "1000", "x"):
        refused = await client.get("/api/sync/tasks/throughput", params={"hours": bad})
        assert refused.status == 422, bad
        assert (await refused.json())["error"]["details"][0]["field"] == "hours"
