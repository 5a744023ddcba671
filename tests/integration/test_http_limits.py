"""The server's own limits, over real sockets: the daemon's app behind `GuardedSite` on a real
SQLite file, driven by raw TCP clients that behave badly on purpose.

Slow clients are simulated by writing a byte at a time with pauses in between (that is their
behaviour, not a wait for the server); the server's reaction is awaited on the socket itself
(EOF or an answer), each read bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from config.settings import Settings
from controllers.app import create_app
from controllers.server import (
    ConnectionGuard,
    CountingLog,
    GuardedSite,
    HttpLimits,
    accept_error_handler,
    runner_options,
)
from tests.conftest import make_settings

Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]
BOUND_S = 10.0  # every wait for the server is bounded by this


@dataclass
class Served:
    """The running site and the raw client connections a test opened to it."""

    site: GuardedSite
    port: int
    clients: list[asyncio.StreamWriter] = field(default_factory=list)

    async def connect(self) -> Stream:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.clients.append(writer)
        return reader, writer

    @property
    def guard(self) -> ConnectionGuard:
        return self.site.guard


@contextlib.asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[Served]:
    """The daemon's app on 127.0.0.1 behind the guard, as `syncd serve` runs it."""
    limits = HttpLimits.from_settings(settings)
    runner = web.AppRunner(create_app(settings), **runner_options(limits))
    await runner.setup()
    site = GuardedSite(runner, "127.0.0.1", 0, limits)
    await site.start()
    served = Served(site, runner.addresses[0][1])
    try:
        yield served
    finally:
        for writer in served.clients:
            writer.close()
        await asyncio.gather(*(w.wait_closed() for w in served.clients), return_exceptions=True)
        await runner.cleanup()


@pytest.fixture
def limited(sqlite_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> Settings:
    """Settings with long limits except those the test names (`indirect` parameters); built
    here, outside the event loop (settings read time zone files)."""
    values: dict[str, Any] = {
        "http_header_timeout_s": 30.0,
        "http_body_timeout_s": 30.0,
        "http_idle_timeout_s": 30.0,
        **request.param,
    }
    return make_settings(sqlite_url, tmp_path, **values)


def limits(**values: Any) -> pytest.MarkDecorator:
    return pytest.mark.parametrize("limited", [values], indirect=True, ids=[""])


async def closed_without_answer(stream: Stream) -> bool:
    """True when the server closes the connection without writing anything."""
    reader, _ = stream
    async with asyncio.timeout(BOUND_S):
        data = await reader.read()
    return data == b""


async def answer(stream: Stream, request: bytes) -> bytes:
    """Send a request; the status line of the answer."""
    reader, writer = stream
    writer.write(request)
    await writer.drain()
    async with asyncio.timeout(BOUND_S):
        status = await reader.readline()
        length = 0
        while (line := await reader.readline()) not in (b"\r\n", b""):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        await reader.readexactly(length)
    return status.strip()


async def until(check: Callable[[], bool]) -> None:
    """Bounded poll of the server's bookkeeping (it changes on the server's own schedule)."""
    async with asyncio.timeout(BOUND_S):
        while not check():  # noqa: ASYNC110 (nothing to wait on: accepting is asyncio's)
            await asyncio.sleep(0.01)


HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"


def create(body: bytes, length: int | None = None) -> bytes:
    size = len(body) if length is None else length
    return (
        b"POST /api/sync/tasks HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(size).encode() + b"\r\n\r\n" + body
    )


TASK = b'{"task_type": "noop", "run_after": "2099-01-01T00:00:00Z"}'


@limits(http_header_timeout_s=0.5)
async def test_a_head_sent_byte_by_byte_is_cut_at_the_header_timeout(limited: Settings) -> None:
    async with serving(limited) as served:
        reader, writer = await served.connect()
        writer.write(b"GET /healthz HTTP/1.1\r\n")
        closed = asyncio.ensure_future(reader.read())
        for _ in range(int(BOUND_S / 0.1)):  # a header byte every 0.1 s: slow-loris
            if closed.done():
                break
            writer.write(b"X")
            await asyncio.sleep(0.1)
        assert closed.done() and closed.result() == b"", "the slow head was not cut"
        assert await answer(await served.connect(), HEALTHZ) == b"HTTP/1.1 200 OK"


@limits(http_header_timeout_s=0.3)
async def test_a_connection_that_sends_nothing_is_closed_at_the_header_timeout(
    limited: Settings,
) -> None:
    async with serving(limited) as served:
        assert await closed_without_answer(await served.connect())
        await until(lambda: not served.guard.open)


@limits(http_body_timeout_s=0.5)
async def test_a_stalled_body_is_cut_and_a_slow_steady_one_is_not(limited: Settings) -> None:
    async with serving(limited) as served:
        reader, writer = await served.connect()
        writer.write(create(TASK[:10], length=len(TASK)))  # then nothing more
        assert await closed_without_answer((reader, writer))

        reader, writer = await served.connect()
        writer.write(create(b"", length=len(TASK)))
        for i in range(15):  # 1.5 s, three body timeouts, a byte every 0.1 s: slow but steady
            writer.write(TASK[i : i + 1])
            await asyncio.sleep(0.1)
        writer.write(TASK[15:])
        async with asyncio.timeout(BOUND_S):
            status = await reader.readline()
        assert status.strip() == b"HTTP/1.1 201 Created"


@limits(http_idle_timeout_s=0.5)
async def test_an_idle_keep_alive_connection_is_closed(limited: Settings) -> None:
    async with serving(limited) as served:
        stream = await served.connect()
        assert await answer(stream, HEALTHZ) == b"HTTP/1.1 200 OK"
        assert await closed_without_answer(stream)
        await until(lambda: not served.guard.open)


@limits(http_max_connections=3)
async def test_at_the_cap_a_new_connection_displaces_the_longest_idle_one(
    limited: Settings,
) -> None:
    async with serving(limited) as served:
        idle = []
        for count in (1, 2, 3):
            idle.append(await served.connect())
            await until(lambda count=count: len(served.guard.open) == count)  # type: ignore[misc]
        # A flood of idle connections does not keep /healthz out: the oldest one makes room.
        assert await answer(await served.connect(), HEALTHZ) == b"HTTP/1.1 200 OK"
        assert await closed_without_answer(idle[0])
        assert await answer(idle[1], HEALTHZ) == b"HTTP/1.1 200 OK"


@limits(http_max_connections=2)
async def test_when_every_connection_serves_a_request_a_new_one_is_closed_at_once(
    limited: Settings,
) -> None:
    async with serving(limited) as served:
        busy = []
        for _ in range(2):  # heads sent, bodies still due: both handlers are waiting
            reader, writer = await served.connect()
            writer.write(create(b"", length=len(TASK)))
            busy.append((reader, writer))
        await until(lambda: len(served.guard.open) == 2 and not served.guard.waiting)
        assert await closed_without_answer(await served.connect())
        assert len(served.guard.open) == 2  # the refused one never counted
        reader, writer = busy[0]
        writer.write(TASK)
        async with asyncio.timeout(BOUND_S):
            assert (await reader.readline()).strip() == b"HTTP/1.1 201 Created"
        await until(lambda: len(served.guard.waiting) == 1)  # its connection is idle now
        assert await answer(await served.connect(), HEALTHZ) == b"HTTP/1.1 200 OK"


async def test_counting_log_logs_the_first_event_then_a_count_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    logger = logging.getLogger("test.counting")
    events = CountingLog(logger, interval_s=0.2)
    with caplog.at_level(logging.INFO, logger="test.counting"):
        for _ in range(500):
            events.note("accept_failed", "cannot accept connections: Too many open files")
        assert [r.getMessage() for r in caplog.records] == [
            "cannot accept connections: Too many open files"
        ]
        async with asyncio.timeout(BOUND_S):
            while len(caplog.records) < 2:  # noqa: ASYNC110 (the summary is on a timer)
                await asyncio.sleep(0.05)
        summary = caplog.records[1]
        assert summary.getMessage() == (
            "cannot accept connections: Too many open files (499 more in the last 0.2 s)"
        )
        assert getattr(summary, "count", None) == 499
        events.note("accept_failed", "again")  # still within an active period: counted
        assert len(caplog.records) == 2
    events.close()
    assert events.totals == {"accept_failed": 501}


async def test_accept_errors_are_counted_and_the_rest_goes_to_the_default_handler(
    caplog: pytest.LogCaptureFixture,
) -> None:
    loop = asyncio.get_running_loop()
    events = CountingLog(logging.getLogger("test.accept"), interval_s=60)
    handle = accept_error_handler(events)
    emfile = OSError(24, "Too many open files")
    with caplog.at_level(logging.INFO):
        for _ in range(100):
            handle(loop, {"message": "socket.accept() out of system resource", "exception": emfile})
        handle(loop, {"message": "something else broke"})
    events.close()
    assert events.totals == {"accept_failed": 100}
    accept = [r for r in caplog.records if r.name == "test.accept"]
    assert len(accept) == 1 and "Too many open files" in accept[0].getMessage()
    assert any(
        r.name == "asyncio" and "something else broke" in r.getMessage() for r in caplog.records
    )


@limits(http_max_connections=10_000)
async def test_a_real_emfile_is_logged_once_then_counted(
    limited: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """This process's own open-file limit is lowered under a flood of connections, so that
    `accept()` fails for real; the loop's exception handler counts the failures."""
    loop = asyncio.get_running_loop()
    events = CountingLog(logging.getLogger("test.emfile"), interval_s=0.3)
    previous = loop.get_exception_handler()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with caplog.at_level(logging.INFO, logger="test.emfile"):
        async with serving(limited) as served:
            loop.set_exception_handler(accept_error_handler(events))
            clients = [socket.socket() for _ in range(60)]  # their descriptors exist already
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")), hard))
                for client in clients:
                    client.setblocking(False)
                    with contextlib.suppress(BlockingIOError):
                        client.connect(("127.0.0.1", served.port))
                await until(lambda: events.totals.get("accept_failed", 0) >= 3)
                await until(lambda: len(caplog.records) >= 2)  # the first, then a summary
            finally:
                resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
                for client in clients:
                    client.close()
                loop.set_exception_handler(previous)
                events.close()
            # asyncio retries accepting a second later: the server serves again.
            assert await answer(await served.connect(), HEALTHZ) == b"HTTP/1.1 200 OK"
    first, summary, *_ = [r.getMessage() for r in caplog.records]
    assert first.startswith("cannot accept connections: Too many open files")
    assert summary.startswith(first) and "more in the last 0.3 s" in summary
    assert len(caplog.records) < events.totals["accept_failed"]
