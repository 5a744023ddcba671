"""The live feed `/api/ws`: lifecycle events, coalesced progress, auth, slow clients."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestClient

from config.settings import Settings
from controllers.app import create_app
from controllers.live import CLIENT_BACKLOG, TICK_S, Client
from tests.conftest import make_settings

Frame = dict[str, Any]
AiohttpClient = Any


async def receive(ws: Any, limit_s: float = 10.0) -> Frame:
    """The next text frame as JSON (bounded wait)."""
    async with asyncio.timeout(limit_s):
        message = await ws.receive()
    assert message.type is WSMsgType.TEXT, message
    frame: Frame = json.loads(message.data)
    return frame


async def events_until(ws: Any, done: Any, limit_s: float = 20.0) -> list[tuple[float, Frame]]:
    """Frames (with their arrival time) until `done(frames)` says enough."""
    frames: list[tuple[float, Frame]] = []
    async with asyncio.timeout(limit_s):
        while not done(frames):
            frames.append((time.monotonic(), await receive(ws, limit_s)))
    return frames


def events_of(frames: list[tuple[float, Frame]]) -> list[Frame]:
    return [e for _, f in frames if f["type"] == "tasks" for e in f["events"]]


@pytest.fixture
def busy_settings(sqlite_url: str, tmp_path: Path) -> Settings:
    return make_settings(sqlite_url, tmp_path, concurrency=150)


async def test_hello_then_created_started_and_finished(
    aiohttp_client: AiohttpClient, settings: Settings
) -> None:
    client: TestClient[web.Request, web.Application] = await aiohttp_client(create_app(settings))
    async with client.ws_connect("/api/ws") as ws:
        hello = await receive(ws)
        assert hello == {"type": "hello", "node_id": "test-node", "tick_ms": int(TICK_S * 1000)}
        answer = await client.post(
            "/api/sync/tasks", json={"task_type": "noop", "parameters": {"steps": 3}}
        )
        task_id = (await answer.json())["id"]

        def finished(frames: list[tuple[float, Frame]]) -> bool:
            return any(e.get("event") == "finished" for e in events_of(frames))

        events = events_of(await events_until(ws, finished))
    kinds = [
        k for e in events if e["id"] == task_id and e["event"] != "progress" for k in e["kinds"]
    ]
    assert kinds == ["created", "started", "finished"]
    final = next(e for e in events if e["event"] == "finished")
    assert final["task"]["status"] == "completed" and final["task"]["id"] == task_id


async def test_cancel_of_a_pending_task_is_pushed(
    aiohttp_client: AiohttpClient, settings: Settings
) -> None:
    client = await aiohttp_client(create_app(settings))
    async with client.ws_connect("/api/ws") as ws:
        await receive(ws)
        later = "2099-01-01T00:00:00Z"
        answer = await client.post(
            "/api/sync/tasks", json={"task_type": "noop", "run_after": later}
        )
        task_id = (await answer.json())["id"]
        await client.post(f"/api/sync/tasks/{task_id}/cancel")

        def cancelled(frames: list[tuple[float, Frame]]) -> bool:
            return any(e["event"] == "cancelled" for e in events_of(frames))

        events = events_of(await events_until(ws, cancelled))
    event = next(e for e in events if e["event"] == "cancelled")
    assert event["id"] == task_id and event["task"]["status"] == "cancelled"


async def test_progress_of_many_busy_tasks_is_coalesced(
    aiohttp_client: AiohttpClient, busy_settings: Settings
) -> None:
    """150 tasks each reporting 40 times in 2 s (6,000 updates): the browser gets one frame
    per tick at most, each task at most once per frame, and every task's end."""
    count, steps = 150, 40
    client = await aiohttp_client(create_app(busy_settings))
    async with client.ws_connect("/api/ws") as ws:
        await receive(ws)
        body = {
            "tasks": [
                {"task_type": "noop", "parameters": {"sleep_s": 2.0, "steps": steps}}
                for _ in range(count)
            ]
        }
        answer = await client.post("/api/sync/tasks/batch", json=body)
        ids = {t["id"] for t in (await answer.json())["tasks"]}
        started = time.monotonic()

        def all_finished(frames: list[tuple[float, Frame]]) -> bool:
            done = {e["id"] for e in events_of(frames) if e["event"] == "finished"}
            return done >= ids

        frames = await events_until(ws, all_finished, limit_s=60)
        elapsed = time.monotonic() - started

    assert all(f["type"] == "tasks" for _, f in frames)  # no resync: the client kept up
    ticks = elapsed / TICK_S
    assert len(frames) <= ticks + 3, (len(frames), elapsed)
    per_task: defaultdict[str, int] = defaultdict(int)
    for _, frame in frames:
        in_frame = Counter(e["id"] for e in frame["events"] if e["event"] == "progress")
        assert max(in_frame.values(), default=0) <= 1  # one progress entry per task per frame
        for task_id, n in in_frame.items():
            per_task[task_id] += n
    progress = sum(per_task.values())
    assert set(per_task) == ids  # every task's progress was seen
    assert progress < count * steps / 3, progress  # coalesced, not one message per report
    assert max(per_task.values()) <= ticks + 2
    midway = [e for e in events_of(frames) if e["event"] == "progress" and 0 < e["progress"] < 100]
    assert midway and all(e["message"].startswith("step ") for e in midway)


async def test_auth_with_tokens(
    aiohttp_client: AiohttpClient, tmp_path: Path, sqlite_url: str
) -> None:
    tokens = "admintoken:admin,readtoken:read,workertoken:worker"
    settings = make_settings(sqlite_url, tmp_path, api_tokens=tokens)
    client = await aiohttp_client(create_app(settings))

    refused = await client.get("/api/ws")
    assert refused.status == 401
    assert (await refused.json())["error"]["code"] == "unauthorized"
    wrong = await client.get("/api/ws", params={"token": "nope"})
    assert wrong.status == 401
    assert (await wrong.json())["error"]["message"] == "unknown bearer token"
    worker = await client.get("/api/ws", params={"token": "workertoken"})
    assert worker.status == 403

    async with client.ws_connect("/api/ws", params={"token": "readtoken"}) as ws:
        assert (await receive(ws))["type"] == "hello"
    headers = {"Authorization": "Bearer admintoken"}
    async with client.ws_connect("/api/ws", headers=headers) as ws:
        assert (await receive(ws))["type"] == "hello"


async def test_plain_get_of_the_socket_is_a_clear_400(
    aiohttp_client: AiohttpClient, settings: Settings
) -> None:
    client = await aiohttp_client(create_app(settings))
    answer = await client.get("/api/ws")
    assert answer.status == 400
    assert (await answer.json())["error"]["code"] == "websocket_required"


async def test_a_slow_client_gets_resync_instead_of_a_backlog() -> None:
    client = Client(web.WebSocketResponse())
    for index in range(CLIENT_BACKLOG + 5):
        client.offer(json.dumps({"type": "tasks", "n": index}))
    queued = [json.loads(client.queue.get_nowait()) for _ in range(client.queue.qsize())]
    assert queued[0]["type"] == "resync"
    assert [f["n"] for f in queued[1:]] == list(range(CLIENT_BACKLOG + 1, CLIENT_BACKLOG + 5))
    assert client.dropped == 1
