"""The egress policy of HTTP sources and callbacks, against real servers and real lookups.

Validation refuses what a URL names (422); the sessions refuse what a connection would reach:
IP literals, names resolving to refused addresses (asked of the system's resolver when
connecting, so a changed answer gains nothing) and redirects to either.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pytest_aiohttp import AiohttpClient, AiohttpServer

from controllers.app import create_app
from controllers.keys import DATA_SOURCES
from engine.sources.egress import EgressPolicy, EgressRefused, client_session, refusal_of
from engine.sources.http import HttpPager, HttpSourceConfig
from tests.conftest import make_settings
from tests.helpers import task_json_once

Client = TestClient[Any, Any]


class Api:
    """A JSON API that counts requests; `/jump?to=URL` redirects there."""

    def __init__(self) -> None:
        self.hits = 0

    def app(self) -> web.Application:
        async def items(request: web.Request) -> web.Response:
            self.hits += 1
            return web.json_response([{"pn": "A", "maker": "V", "lot": "L"}])

        async def jump(request: web.Request) -> web.Response:
            self.hits += 1
            raise web.HTTPFound(request.query["to"])

        app = web.Application()
        app.router.add_get("/items", items)
        app.router.add_get("/jump", jump)
        return app


@pytest.fixture
async def api(aiohttp_server: AiohttpServer) -> tuple[Api, TestServer]:
    counter = Api()
    server = await aiohttp_server(counter.app(), host="127.0.0.1")
    return counter, server


def local_name_to_loopback() -> str:
    """This machine's host name when the system resolves it to a refused address (commonly
    via /etc/hosts); the test needing it is skipped otherwise."""
    name = socket.gethostname()
    try:
        infos = socket.getaddrinfo(name, 80, type=socket.SOCK_STREAM)
    except OSError:
        pytest.skip(f"{name} does not resolve here")
    addresses = {ipaddress.ip_address(str(i[4][0])) for i in infos}
    if EgressPolicy().host_problem(name) is not None or not all(
        EgressPolicy().address_problem(a) for a in addresses
    ):
        pytest.skip(f"{name} resolves to {addresses}, not only to refused addresses")
    return name


async def finished(client: Client, task_id: str) -> dict[str, Any]:
    """The task once it has ended."""
    return await task_json_once(client, task_id)


# ---- validation -----------------------------------------------------------------------------


def http_body(url: str, **fields: Any) -> dict[str, Any]:
    return {
        "id": "src",
        "name": "api",
        "kind": "http",
        "connection": {"url": url},
        "target_table": "lot_partnumbers",
        "key_columns": ["vendor", "partnumber"],
        "column_mapping": {"pn": "partnumber", "maker": "vendor", "lot": "lot_name"},
        **fields,
    }


@pytest.fixture
async def client(aiohttp_client: AiohttpClient, sqlite_url: str, tmp_path: Path) -> Client:
    return await aiohttp_client(
        create_app(await asyncio.to_thread(make_settings, sqlite_url, tmp_path))
    )


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://10.0.0.5/api", "private"),
        ("http://[::ffff:a9fe:a9fe]/", "link-local (IPv4 169.254.169.254 inside IPv6)"),
        ("http://metadata.google.internal/computeMetadata/v1/", "cloud metadata service"),
        ("http://127.0.0.1:8080/api/sync/tasks", "loopback"),
        ("http://localhost:8080/", "loopback name"),
        ("http://2130706433/", "legacy numeric form"),
        ("http://100.100.100.200/", "shared CGNAT"),
        ("https://[fe80::1]/", "link-local"),
    ],
)
async def test_http_sources_at_refused_hosts_are_422(client: Client, url: str, says: str) -> None:
    resp = await client.post("/api/sync/data-sources", json=http_body(url))
    assert resp.status == 422, await resp.text()
    details = {d["field"]: d["message"] for d in (await resp.json())["error"]["details"]}
    assert says in details["connection.url"], details
    assert "unless listed in SYNCD_EGRESS_ALLOWED_HOSTS" in details["connection.url"]


async def test_an_interface_at_a_refused_host_is_422(client: Client) -> None:
    body = http_body(
        "https://api.example.com/items", interfaces={"meta": {"url": "http://169.254.169.254/"}}
    )
    resp = await client.post("/api/sync/data-sources", json=body)
    assert resp.status == 422
    fields = [d["field"] for d in (await resp.json())["error"]["details"]]
    assert fields == ["interfaces.meta.url"]


async def test_a_name_resolving_to_a_refused_address_is_422(client: Client) -> None:
    name = local_name_to_loopback()
    resp = await client.post("/api/sync/data-sources", json=http_body(f"http://{name}:9/x"))
    assert resp.status == 422
    message = (await resp.json())["error"]["details"][0]["message"]
    assert message.startswith(f"{name} resolves to ") and "loopback" in message


async def test_listed_hosts_are_accepted(
    aiohttp_client: AiohttpClient, sqlite_url: str, tmp_path: Path
) -> None:
    settings = await asyncio.to_thread(
        make_settings, sqlite_url, tmp_path, egress_allowed_hosts=["10.0.0.0/8", "169.254.169.254"]
    )
    client = await aiohttp_client(create_app(settings))
    for number, url in enumerate(("http://10.0.0.5/api", "http://[::ffff:a9fe:a9fe]/")):
        resp = await client.post("/api/sync/data-sources", json=http_body(url, id=f"s{number}"))
        assert resp.status == 201, await resp.text()


# ---- connect time ---------------------------------------------------------------------------


async def get(policy: EgressPolicy, url: str) -> int:
    async with client_session(policy) as session, session.get(url) as response:
        return response.status


async def test_the_session_refuses_an_unlisted_loopback_server(
    api: tuple[Api, TestServer],
) -> None:
    counter, server = api
    with pytest.raises(aiohttp.ClientConnectorError) as caught:
        await get(EgressPolicy(), str(server.make_url("/items")))
    refused = refusal_of(caught.value)
    assert isinstance(refused, EgressRefused) and "127.0.0.1 is a loopback address" in str(refused)
    assert counter.hits == 0
    assert await get(EgressPolicy.parse(["127.0.0.1"]), str(server.make_url("/items"))) == 200
    assert counter.hits == 1


@pytest.mark.parametrize(
    "target",
    [
        "http://127.0.0.2:{port}/items",
        "http://[::ffff:7f00:2]:{port}/items",  # 127.0.0.2, mapped
        "http://localhost:{port}/items",
        "http://169.254.169.254/latest/meta-data/",
    ],
)
async def test_redirects_are_checked_again(api: tuple[Api, TestServer], target: str) -> None:
    counter, server = api
    policy = EgressPolicy.parse(["127.0.0.1"])
    to = target.format(port=server.port)
    with pytest.raises(aiohttp.ClientConnectorError) as caught:
        await get(policy, str(server.make_url("/jump").with_query(to=to)))
    assert refusal_of(caught.value) is not None, caught.value
    assert counter.hits == 1  # the redirect itself, nothing after it


async def test_a_name_is_checked_on_what_it_resolves_to_when_connecting(
    api: tuple[Api, TestServer],
) -> None:
    name = local_name_to_loopback()
    counter, server = api
    url = f"http://{name}:{server.port}/items"
    with pytest.raises(aiohttp.ClientConnectorError) as caught:
        await get(EgressPolicy(), url)
    assert f"{name}: resolves to " in str(refusal_of(caught.value))
    assert counter.hits == 0
    # The resolved address listed allows it; so does the name itself.
    assert await get(EgressPolicy.parse(["127.0.0.0/8", "::1"]), url) == 200
    assert await get(EgressPolicy.parse([name]), url) == 200


async def test_a_refused_source_fails_at_once_without_retrying(
    api: tuple[Api, TestServer],
) -> None:
    counter, server = api
    config = HttpSourceConfig(
        url=str(server.make_url("/jump").with_query(to="http://169.254.169.254/")),
        max_retries=5,
        retry_wait_s=0,
    )
    async with client_session(EgressPolicy.parse(["127.0.0.1"])) as session:
        pager = HttpPager(config, session)
        with pytest.raises(Exception) as caught:
            async for _ in pager.pages():
                pass
    assert type(caught.value).__name__ == "SourceError"
    assert "169.254.169.254 is a link-local address" in str(caught.value)
    assert "SYNCD_EGRESS_ALLOWED_HOSTS" in str(caught.value)
    assert pager.requests_made == 1 and counter.hits == 1


async def test_a_stored_source_at_a_name_that_now_resolves_inside_fails(
    aiohttp_client: AiohttpClient, sqlite_url: str, tmp_path: Path, api: tuple[Api, TestServer]
) -> None:
    """DNS rebinding: the name passed validation (it is stored), the connection is refused."""
    name = local_name_to_loopback()
    counter, server = api
    client = await aiohttp_client(
        create_app(await asyncio.to_thread(make_settings, sqlite_url, tmp_path))
    )
    body = http_body(f"http://{name}:{server.port}/items")
    values = {k: v for k, v in body.items() if k != "id"}
    values |= {"watermark_column": None, "delete_missing": False, "interfaces": {}}
    await client.app[DATA_SOURCES].create("src", {**values, "batch_size": 100})
    resp = await client.post(
        "/api/sync/tasks",
        json={"task_type": "full_sync", "data_source_id": "src", "max_attempts": 3},
    )
    task = await finished(client, (await resp.json())["id"])
    assert task["status"] == "failed" and task["attempt"] == 1, task
    assert f"{name}: resolves to " in task["error"] and "loopback" in task["error"]
    assert counter.hits == 0
