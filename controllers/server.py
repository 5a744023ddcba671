"""The listening socket and the limits aiohttp does not enforce on its own.

aiohttp closes a keep-alive connection that stays idle (`keepalive_timeout`, given the idle
timeout here), but it has no deadline for reading a request's head or body and no cap on open
connections: a client that sends one header byte every few seconds (slow-loris), or thousands of
connections that send nothing, hold file descriptors until the process runs out of them. Then
`accept()` fails with EMFILE, `/healthz` stops answering, and asyncio logs every failure.

`ConnectionGuard` is the protocol factory given to the listening socket in place of aiohttp's
`Server` (which still builds every connection's `RequestHandler`; the guard only sits in front of
it), plus a wrapper around the server's request handler, which tells the guard when a request
starts and when its response has been written. With that it enforces, per connection:

- the head deadline: a request's head must be complete within `SYNCD_HTTP_HEADER_TIMEOUT_S` of
  the connection opening, or of its first byte after an idle keep-alive period;
- the body deadline: while a handler waits for a body, `SYNCD_HTTP_BODY_TIMEOUT_S` may pass
  between two reads (a steady upload of any size goes on; a stalled one is cut);
- the cap: at `SYNCD_HTTP_MAX_CONNECTIONS` open connections, a new one displaces the connection
  that has been waiting longest without a request in progress (idle, or sending a head), as
  nginx reuses idle connections; when every connection is serving a request, the new one is
  closed at once. So a flood of idle connections cannot keep `/healthz` out.

The cap only protects the process if its descriptors outlast it: `fit_open_file_limit` raises
the soft open-file limit to what the limits need, or lowers the cap and the listen backlog to
fit a smaller hard limit. Closed connections are counted and logged once per `LOG_INTERVAL_S`
per reason, as are `accept()` failures (`accept_error_handler`), never once per event.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import logging
import resource
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from config.settings import Settings

log = logging.getLogger(__name__)

#: How often repeated events (closed connections, failed accepts) are summed up in the log.
LOG_INTERVAL_S = 10.0
#: Descriptors for the daemon's own files beside client connections: the database pool and
#: writer, the log, uploads, the event loop's (16 are open when idle).
OWN_FILES = 64
#: asyncio accepts up to the listen backlog at once, and a connection the guard closes frees its
#: descriptor a few loop iterations later: this many backlogs' worth may be open beyond the cap.
ACCEPT_BURSTS = 4
#: The listen backlog (aiohttp's default), lowered with the cap to fit a small open-file limit.
BACKLOG = 128
#: Neither is lowered below these.
MIN_CONNECTIONS = 8
MIN_BACKLOG = 8
ACCEPT_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


@dataclass(frozen=True)
class HttpLimits:
    """The server's limits (`SYNCD_HTTP_*`)."""

    header_timeout_s: float
    body_timeout_s: float
    idle_timeout_s: float
    max_connections: int
    backlog: int = BACKLOG

    @property
    def open_files(self) -> int:
        """Descriptors these limits can need at once (see `ACCEPT_BURSTS`)."""
        return self.max_connections + OWN_FILES + ACCEPT_BURSTS * self.backlog

    @classmethod
    def from_settings(cls, settings: Settings) -> HttpLimits:
        """The limits configured in `settings`."""
        return cls(
            header_timeout_s=settings.http_header_timeout_s,
            body_timeout_s=settings.http_body_timeout_s,
            idle_timeout_s=settings.http_idle_timeout_s,
            max_connections=settings.http_max_connections,
        )


class CountingLog:
    """Logs the first event of a kind at once, then how many more came, once per interval.

    A kind stays "active" while events keep coming: each interval with events ends with one
    line giving their count; the first interval without any ends the period, and the next event
    of that kind is logged at once again.
    """

    def __init__(self, logger: logging.Logger, interval_s: float = LOG_INTERVAL_S) -> None:
        self.logger = logger
        self.interval_s = interval_s
        self.totals: dict[str, int] = {}  # every event ever noted, by kind
        self._active: dict[str, tuple[int, str, int]] = {}  # kind -> (count, message, level)
        self._flush: asyncio.TimerHandle | None = None

    def note(self, kind: str, message: str, level: int = logging.WARNING) -> None:
        """Count an event of `kind`; `message` says what happened."""
        self.totals[kind] = self.totals.get(kind, 0) + 1
        if kind in self._active:
            count, _, _ = self._active[kind]
            self._active[kind] = (count + 1, message, level)
            return
        self.logger.log(level, message, extra={"action": kind, "count": 1})
        self._active[kind] = (0, message, level)
        if self._flush is None:
            self._flush = asyncio.get_running_loop().call_later(self.interval_s, self._report)

    def _report(self) -> None:
        self._flush = None
        for kind, (count, message, level) in list(self._active.items()):
            if not count:
                del self._active[kind]
                continue
            self.logger.log(
                level,
                "%s (%d more in the last %g s)",
                message,
                count,
                self.interval_s,
                extra={"action": kind, "count": count},
            )
            self._active[kind] = (0, message, level)
        if self._active:
            self._flush = asyncio.get_running_loop().call_later(self.interval_s, self._report)

    def close(self) -> None:
        """Stop the pending summary (the daemon is stopping)."""
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None


class ConnectionGuard:
    """The protocol factory of the listening socket: admits, times and caps connections."""

    def __init__(self, server: web.Server, limits: HttpLimits, events: CountingLog) -> None:
        self.server = server
        self.limits = limits
        self.events = events
        self.open: dict[asyncio.BaseTransport, GuardedConnection] = {}
        # Connections without a request in progress, longest-waiting first: eviction order.
        self.waiting: OrderedDict[GuardedConnection, None] = OrderedDict()
        handler = server.request_handler

        async def tracked(request: web.BaseRequest) -> web.StreamResponse:
            connection = self.open.get(request.transport) if request.transport else None
            if connection is not None:
                connection.begin(request)
            return await handler(request)

        # Read by every RequestHandler when it is made, so this must precede the first connection.
        server.request_handler = tracked

    def __call__(self) -> GuardedConnection:
        return GuardedConnection(self)

    def admit(self, connection: GuardedConnection) -> bool:
        """Make room for a new connection (displacing a waiting one at the cap), or refuse it."""
        if len(self.open) < self.limits.max_connections:
            return True
        if self.waiting:
            victim, _ = self.waiting.popitem(last=False)
            victim.close("displaced", "connection cap reached: closed the longest-waiting idle one")
            return True
        self.events.note(
            "refused",
            f"connection refused: {len(self.open)} connections serve requests, the cap is "
            f"SYNCD_HTTP_MAX_CONNECTIONS={self.limits.max_connections}",
        )
        return False


class GuardedConnection(asyncio.Protocol):
    """One client connection: aiohttp's `RequestHandler` behind the guard's deadlines."""

    def __init__(self, guard: ConnectionGuard) -> None:
        self.guard = guard
        self.loop = asyncio.get_running_loop()
        self.inner: RequestHandler | None = None
        self.transport: asyncio.Transport | None = None
        self.request: web.BaseRequest | None = None
        self.last_read = self.loop.time()
        self.timer: asyncio.TimerHandle | None = None

    # ---- the transport's calls -----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Admit (or refuse at once), then hand the connection to aiohttp's handler."""
        transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        if not self.guard.admit(self):
            transport.abort()
            return
        self.transport = transport
        self.guard.open[transport] = self
        self.guard.waiting[self] = None
        self.inner = self.guard.server()
        self.inner.connection_made(transport)
        self._arm(self.guard.limits.header_timeout_s, self._head_overdue)

    def data_received(self, data: bytes) -> None:
        """Note the time (the body deadline counts from the last read) and pass the bytes on."""
        if self.inner is None:
            return
        self.last_read = self.loop.time()
        if self.request is None and self.timer is None:  # the first byte of a new head
            self._arm(self.guard.limits.header_timeout_s, self._head_overdue)
        self.inner.data_received(data)

    def eof_received(self) -> None:
        """Passed on to aiohttp; returning None closes our side too, as aiohttp alone does."""
        if self.inner is not None:
            self.inner.eof_received()

    def pause_writing(self) -> None:
        """Passed on to aiohttp (the client reads slower than we write)."""
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        """Passed on to aiohttp."""
        if self.inner is not None:
            self.inner.resume_writing()

    def connection_lost(self, exc: BaseException | None) -> None:
        """Forget the connection, then let aiohttp clean up."""
        self._disarm()
        if self.transport is not None:
            self.guard.open.pop(self.transport, None)
            self.guard.waiting.pop(self, None)
        if self.inner is not None:
            self.inner.connection_lost(exc)

    # ---- requests ------------------------------------------------------------------------

    def begin(self, request: web.BaseRequest) -> None:
        """A request's handler starts: its head is complete; time its body if one is due."""
        self.request = request
        self.guard.waiting.pop(self, None)
        self._disarm()
        if not request.content.is_eof():
            self._arm(self.guard.limits.body_timeout_s, self._body_stalled)
        task = asyncio.current_task()
        if task is not None:  # done once the response is written, not when the handler returns
            task.add_done_callback(self._end)

    def _end(self, _task: object) -> None:
        self.request = None
        self._disarm()
        if self.transport is not None and self.transport in self.guard.open:
            self.guard.waiting[self] = None  # idle: aiohttp's keep-alive timeout applies

    # ---- deadlines -----------------------------------------------------------------------

    def _arm(self, delay: float, callback: Callable[[], None]) -> None:
        self._disarm()
        self.timer = self.loop.call_later(delay, callback)

    def _disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _head_overdue(self) -> None:
        self.timer = None
        if self.request is None:
            limit = self.guard.limits.header_timeout_s
            self.close("header_timeout", f"no complete request head within {limit:g} s")

    def _body_stalled(self) -> None:
        self.timer = None
        request, transport = self.request, self.transport
        if request is None or transport is None or request.content.is_eof():
            return
        limit = self.guard.limits.body_timeout_s
        quiet = self.loop.time() - self.last_read
        if not transport.is_reading():  # paused because the handler reads slowly: not the client
            self._arm(limit, self._body_stalled)
        elif quiet >= limit:
            self.close("body_timeout", f"no request body bytes for {limit:g} s")
        else:
            self._arm(limit - quiet, self._body_stalled)

    def close(self, reason: str, message: str) -> None:
        """Close the connection for `reason` (counted in the log)."""
        self._disarm()
        self.guard.waiting.pop(self, None)
        self.guard.events.note(reason, f"HTTP connection closed: {message}", logging.INFO)
        if self.inner is not None:
            self.inner.force_close()
        elif self.transport is not None:
            self.transport.abort()


class GuardedSite(web.BaseSite):
    """A TCP site whose connections go through a `ConnectionGuard`."""

    __slots__ = ("_events", "_guard", "_host", "_limits", "_port")

    def __init__(self, runner: web.BaseRunner, host: str, port: int, limits: HttpLimits) -> None:
        super().__init__(runner)
        self._host = host
        self._port = port
        self._limits = limits
        self._events = CountingLog(log)
        self._guard: ConnectionGuard | None = None

    @property
    def name(self) -> str:
        """The URL this site serves."""
        return f"http://{self._host}:{self._port}"

    @property
    def guard(self) -> ConnectionGuard:
        """The guard of the started site (its open connections, for tests and status)."""
        assert self._guard is not None, "the site is not started"
        return self._guard

    async def start(self) -> None:
        """Listen; every accepted connection goes through the guard."""
        await super().start()
        server = self._runner.server
        assert server is not None
        self._guard = ConnectionGuard(server, self._limits, self._events)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._guard, self._host, self._port, backlog=self._limits.backlog
        )

    async def stop(self) -> None:
        """Stop listening (open connections are closed by the runner's cleanup)."""
        self._events.close()
        await super().stop()


def runner_options(limits: HttpLimits) -> dict[str, Any]:
    """Keyword arguments for `web.AppRunner`: the idle keep-alive timeout is aiohttp's own."""
    return {"keepalive_timeout": limits.idle_timeout_s}


def accept_error_handler(
    events: CountingLog | None = None,
) -> Callable[[asyncio.AbstractEventLoop, dict[str, Any]], None]:
    """An event-loop exception handler that counts `accept()` failures (EMFILE and the like)
    instead of logging each: asyncio reports every one, many per second when the process is out
    of file descriptors. Anything else goes to the loop's default handler."""
    counter = events or CountingLog(log)

    def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if isinstance(exc, OSError) and exc.errno in ACCEPT_ERRNOS:
            counter.note(
                "accept_failed",
                f"cannot accept connections: {exc.strerror or exc} (raise LimitNOFILE= or lower "
                "SYNCD_HTTP_MAX_CONNECTIONS)",
            )
            return
        loop.default_exception_handler(context)

    return handle


def fit_open_file_limit(limits: HttpLimits) -> HttpLimits:
    """The limits this process can keep: the soft open-file limit is raised towards what the
    limits need (`HttpLimits.open_files`, never above the hard limit); when even that is too
    little, the cap and the listen backlog are lowered to fit, with a warning, so that the guard
    displaces or refuses connections before `accept()` can fail for want of descriptors."""
    needed = limits.open_files
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return limits
    target = needed if hard == resource.RLIM_INFINITY else min(hard, needed)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    if soft >= needed:
        return limits
    room = max(0, soft - OWN_FILES)
    backlog = max(MIN_BACKLOG, min(limits.backlog, room // (2 * ACCEPT_BURSTS)))
    cap = max(MIN_CONNECTIONS, min(limits.max_connections, room - ACCEPT_BURSTS * backlog))
    log.warning(
        "the open-file limit %d leaves room for %d connections: SYNCD_HTTP_MAX_CONNECTIONS=%d "
        "is lowered to %d (listen backlog %d); raise LimitNOFILE= (or ulimit -n) to %d",
        soft,
        cap,
        limits.max_connections,
        cap,
        backlog,
        needed,
        extra={"action": "limits"},
    )
    return dataclasses.replace(limits, max_connections=cap, backlog=backlog)
