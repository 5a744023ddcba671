"""Tests of `HttpPager` against a real aiohttp server: pagination, retries, bad pages."""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from pydantic import ValidationError

from engine.sources.exceptions import (
    HttpStatusError,
    MalformedPageError,
    SourceError,
    SourceUnavailableError,
)
from engine.sources.http import HttpPager, HttpSourceConfig, redact_url

ServerFactory = Callable[..., Awaitable[TestServer]]
RECORDS = [{"id": i, "name": f"item {i}"} for i in range(1, 26)]
FAST_RETRY: dict[str, Any] = {"retry_wait_s": 0.001, "retry_max_wait_s": 0.01}


class Api:
    """A small JSON API with every pagination style and a few ways to fail."""

    def __init__(self) -> None:
        self.hits: collections.Counter[str] = collections.Counter()
        self.auth: list[str | None] = []
        self.never = asyncio.Event()

    def app(self) -> web.Application:
        app = web.Application()
        app.middlewares.append(self.count)
        app.router.add_get("/page", self.page)
        app.router.add_get("/cursor", self.cursor)
        app.router.add_get("/link", self.link)
        app.router.add_get("/link-header", self.link_header)
        app.router.add_get("/flaky", self.flaky)
        app.router.add_get("/down", self.down)
        app.router.add_get("/malformed", self.malformed)
        app.router.add_get("/shape", self.shape)
        app.router.add_get("/slow", self.slow)
        app.router.add_get("/loop", self.loop)
        app.router.add_get("/away", self.away)
        return app

    @web.middleware
    async def count(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        self.hits[request.path] += 1
        self.auth.append(request.headers.get("Authorization"))
        return await handler(request)

    async def page(self, request: web.Request) -> web.Response:
        page, size = int(request.query["page"]), int(request.query.get("size", "10"))
        total = int(request.query.get("total", len(RECORDS)))
        chunk = RECORDS[:total][(page - 1) * size : page * size]
        return web.json_response({"data": {"items": chunk, "page": page}})

    async def cursor(self, request: web.Request) -> web.Response:
        start = int(request.query.get("cursor", "0"))
        chunk = RECORDS[start : start + 10]
        following = start + 10 if start + 10 < len(RECORDS) else None
        return web.json_response({"items": chunk, "meta": {"next": following}})

    async def link(self, request: web.Request) -> web.Response:
        after = int(request.query.get("after", "0"))
        chunk = RECORDS[after : after + 10]
        following = f"/link?after={after + 10}" if after + 10 < len(RECORDS) else None
        return web.json_response({"results": chunk, "links": {"next": following}})

    async def link_header(self, request: web.Request) -> web.Response:
        after = int(request.query.get("after", "0"))
        headers = {}
        if after + 10 < len(RECORDS):
            headers["Link"] = f'<{request.url.with_query(after=after + 10)}>; rel="next"'
        return web.json_response(RECORDS[after : after + 10], headers=headers)

    async def flaky(self, request: web.Request) -> web.Response:
        if self.hits["/flaky"] == 1:
            return web.Response(status=500, text="try again")
        return web.json_response(RECORDS[:3])

    async def down(self, request: web.Request) -> web.Response:
        return web.Response(status=503, text="maintenance")

    async def malformed(self, request: web.Request) -> web.Response:
        if request.query.get("page") == "2":
            return web.Response(text="<html>Internal proxy page</html>", content_type="text/html")
        return web.json_response(RECORDS[:10])

    async def shape(self, request: web.Request) -> web.Response:
        bodies: dict[str, object] = {
            "object": {"data": {"items": {"id": 1}}},
            "scalars": {"data": {"items": [{"id": 1}, 2]}},
            "missing": {"data": {}},
        }
        return web.json_response(bodies[request.query["kind"]])

    async def slow(self, request: web.Request) -> web.Response:
        async with asyncio.timeout(10):
            await self.never.wait()  # released by the client's timeout, bounded anyway
        return web.json_response([])  # pragma: no cover

    async def loop(self, request: web.Request) -> web.Response:
        return web.json_response({"items": [{"id": 1}], "next": "same"})

    async def away(self, request: web.Request) -> web.Response:
        return web.json_response({"items": [{"id": 1}], "next": "http://elsewhere.test/x"})


@pytest.fixture
def api() -> Api:
    return Api()


@pytest.fixture
async def server(api: Api, aiohttp_server: ServerFactory) -> TestServer:
    return await aiohttp_server(api.app())


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


async def collect(pager: HttpPager) -> list[list[dict[str, object]]]:
    async with asyncio.timeout(20):
        return [page async for page in pager.pages()]


def config(server: TestServer, path: str, **fields: Any) -> HttpSourceConfig:
    return HttpSourceConfig.model_validate({"url": str(server.make_url(path)), **fields})


# --- pagination --------------------------------------------------------------------------------


async def test_page_pagination_stops_on_a_short_page(
    server: TestServer, session: aiohttp.ClientSession, api: Api
) -> None:
    cfg = config(
        server,
        "/page",
        items_path="data.items",
        headers={"Authorization": "Bearer s3cret"},
        pagination={"mode": "page", "size": 10},
    )
    pager = HttpPager(cfg, session)
    pages = await collect(pager)
    assert [len(p) for p in pages] == [10, 10, 5]
    assert [item for page in pages for item in page] == RECORDS
    assert api.hits["/page"] == 3
    assert api.auth == ["Bearer s3cret"] * 3
    assert (pager.requests_made, pager.pages_read) == (3, 3)


async def test_page_pagination_stops_on_an_empty_page(
    server: TestServer, session: aiohttp.ClientSession, api: Api
) -> None:
    cfg = config(
        server,
        "/page",
        params={"total": 20},
        items_path="data.items",
        pagination={"mode": "page", "page_param": "page", "size_param": "size", "size": 10},
    )
    pages = await collect(HttpPager(cfg, session))
    assert [len(p) for p in pages] == [10, 10]
    assert api.hits["/page"] == 3


async def test_page_pagination_without_short_page_stop(
    server: TestServer, session: aiohttp.ClientSession, api: Api
) -> None:
    # The server caps pages at 10 though 50 were asked for: only an empty page ends it.
    cfg = config(
        server,
        "/page",
        items_path="data.items",
        pagination={"mode": "page", "size_param": None, "stop_on_short_page": False},
    )
    pages = await collect(HttpPager(cfg, session))
    assert [len(p) for p in pages] == [10, 10, 5]
    assert api.hits["/page"] == 4


async def test_cursor_pagination(
    server: TestServer, session: aiohttp.ClientSession, api: Api
) -> None:
    cfg = config(
        server,
        "/cursor",
        items_path="items",
        pagination={"mode": "cursor", "next_cursor_path": "meta.next"},
    )
    pages = await collect(HttpPager(cfg, session))
    assert [item for page in pages for item in page] == RECORDS
    assert api.hits["/cursor"] == 3


async def test_link_pagination_in_the_body(
    server: TestServer, session: aiohttp.ClientSession, api: Api
) -> None:
    cfg = config(
        server,
        "/link",
        items_path="results",
        pagination={"mode": "link", "next_url_path": "links.next"},
    )
    pages = await collect(HttpPager(cfg, session))
    assert [item for page in pages for item in page] == RECORDS
    assert api.hits["/link"] == 3


async def test_link_pagination_in_the_link_header(
    server: TestServer, session: aiohttp.ClientSession
) -> None:
    cfg = config(server, "/link-header", pagination={"mode": "link", "next_url_path": None})
    pages = await collect(HttpPager(cfg, session))
    assert [item for page in pages for item in page] == RECORDS


async def test_no_pagination(server: TestServer, session: aiohttp.ClientSession) -> None:
    pages = await collect(HttpPager(config(server, "/link-header"), session))
    assert pages == [RECORDS[:10]]


async def test_a_cursor_that_comes_back_is_refused(
    server: TestServer, session: aiohttp.ClientSession, api: Api
) -> None:
    cfg = config(server, "/loop", items_path="items", pagination={"mode": "cursor"})
    with pytest.raises(SourceError, match="cursor 'same' came back"):
        await collect(HttpPager(cfg, session))
    assert api.hits["/loop"] == 2


async def test_a_link_to_another_origin_is_refused(
    server: TestServer, session: aiohttp.ClientSession
) -> None:
    cfg = config(server, "/away", items_path="items", pagination={"mode": "link"})
    with pytest.raises(SourceError, match=r"next link http://elsewhere.test/x leaves .*refused"):
        await collect(HttpPager(cfg, session))


async def test_max_pages_bounds_the_listing(
    server: TestServer, session: aiohttp.ClientSession, api: Api
) -> None:
    cfg = config(
        server,
        "/page",
        items_path="data.items",
        max_pages=2,
        pagination={"mode": "page", "size": 10},
    )
    pager = HttpPager(cfg, session)
    with pytest.raises(SourceError, match="more than max_pages=2 pages"):
        await collect(pager)
    assert api.hits["/page"] == 2
    assert pager.pages_read == 2


# --- failures ----------------------------------------------------------------------------------


async def test_a_500_is_retried(
    server: TestServer,
    session: aiohttp.ClientSession,
    api: Api,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="engine.sources.http"):
        pages = await collect(HttpPager(config(server, "/flaky", **FAST_RETRY), session))
    assert pages == [RECORDS[:3]]
    assert api.hits["/flaky"] == 2
    assert "HTTP 500" in caplog.text


async def test_a_source_always_failing_gives_up_after_max_retries(
    server: TestServer, session: aiohttp.ClientSession, api: Api
) -> None:
    cfg = config(server, "/down", params={"api_key": "hunter2"}, max_retries=3, **FAST_RETRY)
    with pytest.raises(SourceUnavailableError) as caught:
        await collect(HttpPager(cfg, session))
    assert api.hits["/down"] == 4
    message = str(caught.value)
    assert "failed after 4 attempt(s): HTTP 503 Service Unavailable" in message
    assert "/down?api_key=***" in message
    assert "hunter2" not in message


async def test_a_malformed_page_fails_without_retry(
    server: TestServer, session: aiohttp.ClientSession, api: Api
) -> None:
    cfg = config(server, "/malformed", pagination={"mode": "page", "size": 10}, **FAST_RETRY)
    pager = HttpPager(cfg, session)
    pages: list[list[dict[str, object]]] = []
    with pytest.raises(MalformedPageError) as caught:
        async with asyncio.timeout(20):
            async for page in pager.pages():
                pages.append(page)
    assert pages == [RECORDS[:10]]
    assert caught.value.page == 2
    assert "page 2 (" in str(caught.value)
    assert "not JSON" in str(caught.value)
    assert "<html>Internal" in str(caught.value)
    assert api.hits["/malformed"] == 2


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("object", "'data.items' is an object, not a list"),
        ("scalars", "item 1 of 'data.items' is a number, not an object"),
        ("missing", "no 'data.items' in the response ('items' is missing)"),
    ],
)
async def test_a_page_of_the_wrong_shape_fails(
    server: TestServer, session: aiohttp.ClientSession, api: Api, kind: str, reason: str
) -> None:
    cfg = config(server, "/shape", params={"kind": kind}, items_path="data.items")
    with pytest.raises(MalformedPageError) as caught:
        await collect(HttpPager(cfg, session))
    assert caught.value.reason == reason
    assert api.hits["/shape"] == 1


async def test_a_404_fails_without_retry(
    server: TestServer, session: aiohttp.ClientSession, api: Api
) -> None:
    with pytest.raises(HttpStatusError) as caught:
        await collect(HttpPager(config(server, "/nowhere", **FAST_RETRY), session))
    assert caught.value.status == 404
    assert str(caught.value).startswith(f"GET {server.make_url('/nowhere')} answered HTTP 404")
    assert api.hits["/nowhere"] == 1


async def test_a_timeout_is_retried_then_fails(
    server: TestServer, session: aiohttp.ClientSession, api: Api
) -> None:
    cfg = config(server, "/slow", timeout_s=0.2, max_retries=1, **FAST_RETRY)
    with pytest.raises(SourceUnavailableError, match="failed after 2 attempt"):
        await collect(HttpPager(cfg, session))
    assert api.hits["/slow"] == 2


async def test_an_unreachable_host_fails_after_retries(
    session: aiohttp.ClientSession, unused_tcp_port: int
) -> None:
    url = f"http://127.0.0.1:{unused_tcp_port}/items"
    cfg = HttpSourceConfig(url=url, max_retries=2, **FAST_RETRY)
    with pytest.raises(SourceUnavailableError, match=r"failed after 3 attempt\(s\): Client"):
        await collect(HttpPager(cfg, session))


# --- configuration -----------------------------------------------------------------------------


def test_config_defaults_and_validation() -> None:
    cfg = HttpSourceConfig(url="https://api.example.com/v1/items")
    assert cfg.pagination.mode == "none"
    assert (cfg.timeout_s, cfg.max_retries) == (30.0, 5)
    with pytest.raises(ValidationError, match="extra"):
        HttpSourceConfig.model_validate({"url": "https://x.test", "verbose": True})
    with pytest.raises(ValidationError, match="http"):
        HttpSourceConfig(url="ftp://x.test/file")
    with pytest.raises(ValidationError, match="mode"):
        HttpSourceConfig.model_validate({"url": "https://x.test", "pagination": {"mode": "odd"}})
    with pytest.raises(ValidationError, match="extra"):
        HttpSourceConfig.model_validate(
            {"url": "https://x.test", "pagination": {"mode": "cursor", "page_param": "p"}}
        )


def test_redacted_config_hides_secrets() -> None:
    cfg = HttpSourceConfig.model_validate(
        {
            "url": "https://user:pw@api.example.com/items?token=abc&x=1",
            "headers": {"Authorization": "Bearer abc", "Accept": "application/json"},
            "params": {"api_key": "abc", "limit": 5},
        }
    )
    shown = cfg.redacted()
    assert shown["url"] == "https://api.example.com/items?token=***&x=1"
    assert shown["headers"] == {"Authorization": "***", "Accept": "application/json"}
    assert shown["params"] == {"api_key": "***", "limit": 5}
    assert "abc" not in repr(shown)
    assert cfg.headers["Authorization"] == "Bearer abc"


def test_redact_url_leaves_plain_urls_alone() -> None:
    from yarl import URL

    assert redact_url(URL("https://h.test/a?page=2")) == "https://h.test/a?page=2"
