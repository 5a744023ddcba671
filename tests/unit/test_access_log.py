"""The logs never show a `?token=` value (the dashboard's websocket URL carries one)."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import aiohttp
import pytest
from aiohttp import web

from config.logging import ACCESS_LOG_FORMAT, configure_logging, redact

TOKEN = "q7-secret-value-0123456789"


@pytest.fixture(autouse=True)
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_redact_query_tokens_and_nothing_else() -> None:
    assert redact("GET /api/ws?token=abc HTTP/1.1") == "GET /api/ws?token=[REDACTED] HTTP/1.1"
    assert redact("/x?a=1&token=t%20x&b=2") == "/x?a=1&token=[REDACTED]&b=2"
    assert redact("/api/sync/tasks?page=2") == "/api/sync/tasks?page=2"
    assert redact("/x?mytoken=keep") == "/x?mytoken=keep"


async def test_access_log_of_the_websocket_url_has_no_token() -> None:
    out = io.StringIO()
    configure_logging("json", stream=out)

    async def ws(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_get("/api/ws", ws)
    runner = web.AppRunner(app, access_log_format=ACCESS_LOG_FORMAT)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        url = f"http://127.0.0.1:{port}/api/ws?token={TOKEN}"
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            assert response.status == 200
    finally:
        await runner.cleanup()
    lines = [json.loads(line) for line in out.getvalue().splitlines() if line.strip()]
    access = [e for e in lines if e["logger"] == "aiohttp.access"]
    assert len(access) == 1
    assert '"GET /api/ws?token=[REDACTED] HTTP/1.1" 200' in access[0]["msg"]
    assert TOKEN not in out.getvalue()
