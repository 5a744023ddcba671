"""A stock upload whose multipart body cannot be split into parts is a 400 naming the problem,
and leaves no task and no file behind (the API fuzz found 500s here)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from config.settings import Settings
from controllers.app import create_app

Client = TestClient[web.Request, web.Application]
AiohttpClient = Callable[[web.Application], Awaitable[Client]]
BOUNDARY = "b0undary"
FILE_PART = (
    f"--{BOUNDARY}\r\n"
    'Content-Disposition: form-data; name="file"; filename="s.xlsx"\r\n\r\n'
    f"PK\x03\x04\r\n--{BOUNDARY}--\r\n"
)


@pytest.fixture
async def client(aiohttp_client: AiohttpClient, settings: Settings) -> Client:
    return await aiohttp_client(create_app(settings))


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        # a part's header holding a control character (aiohttp: InvalidHeader, was a 500)
        (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="\x18x"\r\n\r\n{{}}\r\n'
            + FILE_PART,
            "Invalid HTTP header",
        ),
        # a line that is no header where a part's headers belong (was a 500)
        (f"--{BOUNDARY}\r\n[]--{BOUNDARY}--\r\n", "Invalid HTTP header"),
        # a part before `file` cut short: skipping it read past the end (was a 500)
        (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="other"\r\n\r\nab', "EOF"),
        # no starting boundary at all (was already a 400)
        ("not multipart at all", "boundary"),
    ],
    ids=["control-character", "junk-line", "cut-short-part", "no-boundary"],
)
async def test_a_multipart_body_that_cannot_be_split_is_400(
    client: Client, settings: Settings, body: str, problem: str
) -> None:
    resp = await client.post(
        "/api/imports/stock",
        data=body.encode("latin-1"),
        headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
    )
    assert resp.status == 400, await resp.text()
    error = (await resp.json())["error"]
    assert error["code"] == "invalid_multipart" and problem in error["message"], error
    tasks = await (await client.get("/api/sync/tasks")).json()
    assert tasks["pagination"]["total"] == 0
    folder = settings.state_dir / "uploads"
    assert await asyncio.to_thread(lambda: list(folder.glob("*"))) == []
