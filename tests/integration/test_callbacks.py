"""Completion callbacks against a real local HTTP receiver (aiohttp test server)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from config.settings import Settings
from controllers.app import create_app
from controllers.keys import BUS
from schedule.database import create_engine
from schedule.events import CallbackEvent
from schedule.store import connect, make_store
from schedule.task import NewTask
from tests.conftest import make_settings
from tests.helpers import Events

Client = TestClient[Any, Any]
SECRET = "callback-secret"


class Receiver:
    """Records each POST; answers with the queued statuses (then 200), or hangs if asked."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.statuses: list[int] = []
        self.hang = False
        self.release = asyncio.Event()
        self.arrived = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append((dict(request.headers), await request.read()))
        self.arrived.set()
        if self.hang:
            await self.release.wait()
        return web.Response(status=self.statuses.pop(0) if self.statuses else 200)


class Results:
    """The sender's delivery results as the bus reports them."""

    def __init__(self, client: Client) -> None:
        self.events = Events(client.app[BUS])

    @property
    def seen(self) -> list[str]:
        return [e.result for e in self.events.seen if isinstance(e, CallbackEvent)]

    async def until(self, *expected: str, within: float = 15) -> None:
        await self.events.until(lambda: self.seen[: len(expected)] == list(expected), within)


@pytest.fixture
async def receiver(aiohttp_server: Any) -> AsyncIterator[tuple[Receiver, TestServer]]:
    rec = Receiver()
    app = web.Application()
    app.router.add_post("/hook", rec.handle)
    server: TestServer = await aiohttp_server(app)
    yield rec, server
    rec.release.set()


@pytest.fixture
def cb_settings(sqlite_url: str, tmp_path: Path) -> Settings:
    return make_settings(
        sqlite_url,
        tmp_path,
        callback_secret=SECRET,
        callback_allowed_hosts=["127.0.0.1"],
        callback_backoff_s=0.05,
        callback_timeout_s=0.5,
        callback_max_attempts=3,
    )


@pytest.fixture
async def client(aiohttp_client: Any, cb_settings: Settings) -> Client:
    c: Client = await aiohttp_client(create_app(cb_settings))
    return c


async def create(client: Client, url: str, **params: Any) -> Any:
    body = {"task_type": "noop", "parameters": params, "callback_url": url}
    resp = await client.post("/api/sync/tasks", json=body)
    assert resp.status == 201, await resp.text()
    return await resp.json()


async def test_delivered_once_and_signed(
    client: Client, receiver: tuple[Receiver, TestServer]
) -> None:
    rec, server = receiver
    results = Results(client)
    task = await create(client, str(server.make_url("/hook")))
    assert task["callback_status"] == "pending"
    await results.until("delivered")
    [(headers, body)] = rec.requests
    expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["X-Syncd-Signature"], expected)
    assert headers["Content-Type"] == "application/json"
    sent = json.loads(body)
    assert sent["id"] == task["id"] and sent["status"] == "completed"
    shown = await (await client.get(f"/api/sync/tasks/{task['id']}")).json()
    assert shown["callback_status"] == "delivered" and shown["callback_attempts"] == 1
    assert shown["callback_error"] is None


async def test_retried_after_a_500(client: Client, receiver: tuple[Receiver, TestServer]) -> None:
    rec, server = receiver
    rec.statuses = [500]
    results = Results(client)
    task = await create(client, str(server.make_url("/hook")), fail_permanently=True)
    await results.until("retry", "delivered")
    assert len(rec.requests) == 2
    assert json.loads(rec.requests[1][1])["status"] == "failed"
    shown = await (await client.get(f"/api/sync/tasks/{task['id']}")).json()
    assert shown["status"] == "failed"  # the task's own outcome, untouched by the delivery
    assert shown["callback_status"] == "delivered" and shown["callback_attempts"] == 2


async def test_gives_up_after_the_bound(
    client: Client, receiver: tuple[Receiver, TestServer]
) -> None:
    rec, server = receiver
    rec.statuses = [500, 502, 503]
    results = Results(client)
    task = await create(client, str(server.make_url("/hook")))
    await results.until("retry", "retry", "failed")
    shown = await (await client.get(f"/api/sync/tasks/{task['id']}")).json()
    assert shown["status"] == "completed"
    assert shown["callback_status"] == "failed" and shown["callback_attempts"] == 3
    assert shown["callback_error"] == "receiver answered HTTP 503"


async def test_hanging_receiver_blocks_nothing(
    client: Client, receiver: tuple[Receiver, TestServer]
) -> None:
    rec, server = receiver
    rec.hang = True
    results = Results(client)
    slow = await create(client, str(server.make_url("/hook")))
    async with asyncio.timeout(10):
        await rec.arrived.wait()  # the receiver now holds the first POST open
    # Meanwhile other tasks run and finish normally.
    other = await (await client.post("/api/sync/tasks", json={"task_type": "noop"})).json()
    await results.events.ended(other["id"], within=5)
    shown_other = await (await client.get(f"/api/sync/tasks/{other['id']}")).json()
    assert shown_other["status"] == "completed"
    await results.until("retry", "retry", "failed")
    shown = await (await client.get(f"/api/sync/tasks/{slow['id']}")).json()
    assert shown["status"] == "completed"
    assert shown["callback_status"] == "failed"
    assert shown["callback_error"] == "no answer within 0.5 s"


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("ftp://127.0.0.1/hook", "scheme 'ftp'"),
        ("file:///etc/passwd", "scheme 'file'"),
        ("http://evil.example/hook", "not in SYNCD_CALLBACK_ALLOWED_HOSTS"),
        ("http:///hook", "no host"),
        ("http://127.0.0.1:99999/hook", "not a valid URL"),
    ],
)
async def test_refused_at_create(client: Client, url: str, why: str) -> None:
    resp = await client.post("/api/sync/tasks", json={"task_type": "noop", "callback_url": url})
    assert resp.status == 422
    error = (await resp.json())["error"]
    assert error["details"][0]["field"] == "callback_url" and why in error["message"]


async def test_allowed_hosts_compare_as_hosts(
    aiohttp_client: Any, sqlite_url: str, tmp_path: Path
) -> None:
    """Brackets, case and a trailing dot do not matter; the host must still be listed."""
    settings = await asyncio.to_thread(
        make_settings,
        sqlite_url,
        tmp_path,
        callback_secret=SECRET,
        callback_allowed_hosts=["[::1]", "Hooks.Example."],
    )
    client: Client = await aiohttp_client(create_app(settings))
    for url, status in [
        ("http://[::1]:9/hook", 201),
        ("http://hooks.example/hook", 201),
        ("http://HOOKS.example./hook", 201),
        ("http://[::2]:9/hook", 422),
    ]:
        body = {"task_type": "noop", "callback_url": url, "run_after": "2999-01-01T00:00:00Z"}
        resp = await client.post("/api/sync/tasks", json=body)
        assert resp.status == status, (url, await resp.text())


async def test_refused_without_a_secret(aiohttp_client: Any, settings: Settings) -> None:
    client: Client = await aiohttp_client(create_app(settings))
    resp = await client.post(
        "/api/sync/tasks", json={"task_type": "noop", "callback_url": "http://127.0.0.1/x"}
    )
    assert resp.status == 422 and "SYNCD_CALLBACK_SECRET" in await resp.text()


async def test_pending_delivery_survives_a_restart(
    aiohttp_client: Any, cb_settings: Settings, receiver: tuple[Receiver, TestServer]
) -> None:
    rec, server = receiver
    # A task that ended while no daemon was running its sender (cancelled before it started).
    db = await asyncio.to_thread(create_engine, cb_settings)
    try:
        store = make_store(connect(db))
        task, _ = await store.create(
            NewTask("noop", {}, max_attempts=1, callback_url=str(server.make_url("/hook")))
        )
        await store.cancel(task.id)
    finally:
        await db.dispose()
    app = create_app(cb_settings)
    events = Events(app[BUS])  # subscribed before start-up: the sender may deliver during it
    client: Client = await aiohttp_client(app)
    await events.until(lambda: events.count("callback_attempted"), within=15)
    body = await (await client.get(f"/api/sync/tasks/{task.id}")).json()
    assert body["callback_status"] == "delivered"
    assert json.loads(rec.requests[0][1])["status"] == "cancelled"


def test_signature_helper() -> None:
    from engine.callbacks import sign

    assert sign("k", b"{}") == "sha256=" + hmac.new(b"k", b"{}", hashlib.sha256).hexdigest()


async def test_cancelled_pending_task_is_delivered(
    client: Client, receiver: tuple[Receiver, TestServer]
) -> None:
    rec, server = receiver
    results = Results(client)
    body = {
        "task_type": "noop",
        "run_after": "2999-01-01T00:00:00Z",
        "callback_url": str(server.make_url("/hook")),
    }
    task = await (await client.post("/api/sync/tasks", json=body)).json()
    assert (await client.post(f"/api/sync/tasks/{task['id']}/cancel")).status == 200
    await results.until("delivered", within=5)
    assert json.loads(rec.requests[0][1])["status"] == "cancelled"
