"""The live feed: WebSocket `/api/ws` pushing task changes to dashboards.

Sources: the engine's listeners (`started`, `finished`, `released`, `lost`, `rescued`), the
service's listeners (`created`, `updated`, `cancelled`, `cancel_requested`) and the engine's
in-memory progress, read once per tick. Everything that happened during a tick goes out as ONE
frame per client, and a task's progress appears at most once per frame, so a thousand busy
tasks cost a browser four frames a second, not thousands of messages. A client that cannot keep
up has its backlog replaced by a `resync` frame (it then reloads what it shows).

Frames (JSON text):
- `{"type": "hello", "node_id", "tick_ms"}` once, on connect;
- `{"type": "tasks", "events": [...]}` where an event is
  `{"event": "progress", "id", "progress", "message", "processed_rows", "total_rows",
  "error_count"}` or `{"event": <latest lifecycle kind>, "kinds": [every kind this tick, in
  order], "id", "task": <task JSON as it is now>}`;
- `{"type": "resync", "reason"}` when events were dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from controllers.errors import UNAVAILABLE, ApiError
from controllers.keys import ENGINE, LIVE, SERVICE
from controllers.models import LiveQuery, task_json
from controllers.openapi import doc
from controllers.roles import READERS
from engine.engine import EngineEvent, SyncEngine, reraise_if_cancelling
from schedule import jsontext
from schedule.service import ScheduleService
from schedule.task import TaskRecord

log = logging.getLogger(__name__)
routes = web.RouteTableDef()

TICK_S = 0.25
CLIENT_BACKLOG = 8  # frames queued for one client before it is told to resync
MAX_LIFECYCLE_PER_FRAME = 200  # beyond this a frame says `resync` instead of listing tasks


@dataclass(eq=False)
class Client:
    """One connected websocket and the frames waiting to be written to it."""

    ws: web.WebSocketResponse
    queue: asyncio.Queue[str] = field(default_factory=lambda: asyncio.Queue(CLIENT_BACKLOG))
    dropped: int = 0
    writer: asyncio.Task[None] | None = None

    def offer(self, frame: str) -> None:
        """Queue a frame; a full backlog is replaced by one `resync` frame."""
        if not self.queue.full():
            self.queue.put_nowait(frame)
            return
        self.dropped += 1
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(_resync("client too slow; events were dropped"))

    async def write_loop(self) -> None:
        """Send queued frames in order until the socket closes."""
        while not self.ws.closed:
            frame = await self.queue.get()
            try:
                await self.ws.send_str(frame)
            except (ConnectionError, RuntimeError):
                return


class LiveHub:
    """Collects task changes and broadcasts one coalesced frame per tick."""

    def __init__(self, service: ScheduleService, engine: SyncEngine, tick_s: float = TICK_S):
        self.service = service
        self.engine = engine
        self.tick_s = tick_s
        self.clients: set[Client] = set()
        self.tick_ms = int(tick_s * 1000)
        self.frames_sent = 0
        self._lifecycle: dict[str, list[str]] = {}  # task id -> kinds within this tick
        self._sent: dict[str, tuple[int, int]] = {}  # task id -> (attempt, version) pushed
        self._wake = asyncio.Event()

    # ---- sources ------------------------------------------------------------------------

    def on_engine(self, event: EngineEvent) -> None:
        """Engine listener: a task started, finished, was released, lost or rescued."""
        self._note(event.kind, event.task)

    def on_service(self, kind: str, task: TaskRecord) -> None:
        """Service listener: a task was created, updated or cancelled on request."""
        self._note(kind, task)

    def _note(self, kind: str, task: TaskRecord) -> None:
        if self.clients:
            kinds = self._lifecycle.setdefault(task.id, [])
            if kind not in kinds:
                kinds.append(kind)

    # ---- clients ------------------------------------------------------------------------

    def attach(self, ws: web.WebSocketResponse, first: str) -> Client:
        """Register a connected socket with its first frame; its writer task starts now."""
        client = Client(ws)
        client.offer(first)
        client.writer = asyncio.create_task(client.write_loop(), name="syncd-ws-writer")
        self.clients.add(client)
        self._wake.set()
        return client

    async def detach(self, client: Client) -> None:
        """Forget a socket and stop its writer."""
        self.clients.discard(client)
        if client.writer is not None:
            client.writer.cancel()
            await asyncio.gather(client.writer, return_exceptions=True)

    async def close_all(self) -> None:
        """Close every socket (daemon shutdown): browsers fall back to polling and reconnect."""
        for client in list(self.clients):
            with contextlib.suppress(ConnectionError, RuntimeError):
                await client.ws.close(code=WSCloseCode.GOING_AWAY, message=b"server stopping")

    # ---- the tick -----------------------------------------------------------------------

    async def run(self) -> None:
        """Every tick with clients connected: build one frame and offer it to each client."""
        while True:
            if not self.clients:
                self._lifecycle.clear()
                self._sent.clear()
                self._wake.clear()
                await self._wake.wait()
            await asyncio.sleep(self.tick_s)
            try:
                frame = await self.build_frame()
            except UNAVAILABLE as exc:
                reraise_if_cancelling()
                log.warning("live feed: database unavailable: %s", exc)
                frame = _resync("database unavailable")
            except Exception:  # a bug here must not stop the feed for good
                log.exception("live feed: could not build a frame")
                frame = _resync("server error in the live feed")
            if frame is not None:
                self.frames_sent += 1
                for client in list(self.clients):
                    client.offer(frame)

    async def build_frame(self) -> str | None:
        """The events since the last tick as one JSON frame, or None when nothing changed."""
        events = self._progress_events()
        lifecycle, self._lifecycle = self._lifecycle, {}
        if len(lifecycle) > MAX_LIFECYCLE_PER_FRAME:
            return _resync(f"{len(lifecycle)} tasks changed at once")
        if lifecycle:
            tasks = {t.id: t for t in await self.service.find_many(list(lifecycle))}
            for task_id, kinds in lifecycle.items():
                task = tasks.get(task_id)
                if task is not None:
                    events.append(
                        {"event": kinds[-1], "kinds": kinds, "id": task_id, "task": task_json(task)}
                    )
        if not events:
            return None
        return jsontext.dumps({"type": "tasks", "events": events})

    def _progress_events(self) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        seen: dict[str, tuple[int, int]] = {}
        for live in self.engine.live_progress():
            mark = (live.attempt, live.version)
            seen[live.task_id] = mark
            if self._sent.get(live.task_id) == mark:
                continue
            events.append(
                {
                    "event": "progress",
                    "id": live.task_id,
                    "progress": live.progress,
                    "message": live.message,
                    "processed_rows": live.processed_rows,
                    "total_rows": live.total_rows,
                    "error_count": live.error_count,
                }
            )
        self._sent = seen
        return events


def _resync(reason: str) -> str:
    return json.dumps({"type": "resync", "reason": reason})


async def live_context(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: the hub, wired to the engine and the service, ticking in the background."""
    hub = LiveHub(app[SERVICE], app[ENGINE])
    app[ENGINE].listeners.append(hub.on_engine)
    app[SERVICE].listeners.append(hub.on_service)
    app[LIVE] = hub
    ticker = asyncio.create_task(hub.run(), name="syncd-live")
    yield
    ticker.cancel()
    await asyncio.gather(ticker, return_exceptions=True)


async def close_sockets(app: web.Application) -> None:
    """on_shutdown: close the dashboards' sockets so shutdown does not wait for them."""
    hub = app.get(LIVE)
    if hub is not None:
        await hub.close_all()


@routes.get("/api/ws")
@doc(
    "Live task events over a WebSocket (see docs/dashboard.md for the frames)",
    roles=READERS,
    query=LiveQuery,
    responses={101: "switching to the WebSocket protocol", 400: "not a WebSocket request"},
    tags=["live"],
)
async def websocket(request: web.Request) -> web.StreamResponse:
    """The live feed. With API tokens configured, `auth_middleware` has checked the token,
    given as a Bearer header or as `?token=` (browsers cannot set headers on a websocket);
    any reading role may connect."""
    ws = web.WebSocketResponse(heartbeat=20.0)
    if not ws.can_prepare(request).ok:
        raise ApiError(400, "websocket_required", "GET /api/ws needs a websocket upgrade")
    await ws.prepare(request)
    hub = request.app[LIVE]
    hello = {"type": "hello", "node_id": request.app[ENGINE].node_id, "tick_ms": hub.tick_ms}
    client = hub.attach(ws, json.dumps(hello))
    try:
        async for message in ws:  # clients only listen; anything they send is ignored
            if message.type is WSMsgType.ERROR:
                break
    finally:
        await hub.detach(client)
    return ws
