"""sd_notify and the watchdog loop against real unix datagram sockets."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from controllers.systemd import Notifier, watchdog_interval, watchdog_loop


def _receiver(address: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.setblocking(False)
    return sock


def _pending(sock: socket.socket) -> list[bytes]:
    """Every datagram already queued on `sock`: sends are synchronous, so nothing is in flight."""
    found: list[bytes] = []
    while True:
        try:
            found.append(sock.recv(4096))
        except BlockingIOError:
            return found


@pytest.fixture
def socket_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # A short directory: unix socket paths are limited to 108 bytes.
    return tmp_path_factory.mktemp("sd") / "notify.sock"


@pytest.fixture
def receiver(socket_path: Path) -> Iterator[socket.socket]:
    sock = _receiver(str(socket_path))
    yield sock
    sock.close()


@pytest.fixture
def notifier(socket_path: Path, receiver: socket.socket) -> Iterator[Notifier]:
    found = Notifier({"NOTIFY_SOCKET": str(socket_path)})
    yield found
    found.close()


def test_messages_reach_the_socket(notifier: Notifier, receiver: socket.socket) -> None:
    assert notifier.enabled
    assert notifier.ready()
    assert notifier.status("running=2 queued=5")
    assert notifier.watchdog()
    assert notifier.stopping()
    assert _pending(receiver) == [
        b"READY=1",
        b"STATUS=running=2 queued=5",
        b"WATCHDOG=1",
        b"STOPPING=1",
    ]


def test_send_joins_fields_as_lines(notifier: Notifier, receiver: socket.socket) -> None:
    assert notifier.send(status="line one\nline two", READY=1)
    assert _pending(receiver) == [b"STATUS=line one line two\nREADY=1"]


def test_abstract_namespace_socket() -> None:
    name = f"syncd-test-{uuid.uuid4().hex}"
    sock = _receiver("\0" + name)
    notifier = Notifier({"NOTIFY_SOCKET": "@" + name})
    try:
        assert notifier.ready()
        assert _pending(sock) == [b"READY=1"]
    finally:
        notifier.close()
        sock.close()


def test_without_notify_socket_everything_is_a_no_op() -> None:
    notifier = Notifier({})
    assert not notifier.enabled
    assert not notifier.ready()
    assert not notifier.send(STATUS="x")


def test_unusable_address_disables_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="controllers.systemd"):
        notifier = Notifier({"NOTIFY_SOCKET": "relative/path"})
    assert not notifier.enabled
    assert "NOTIFY_SOCKET" in caplog.text


def test_gone_socket_warns_once_and_recovers(
    socket_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": str(socket_path)})
    try:
        with caplog.at_level(logging.WARNING, logger="controllers.systemd"):
            assert not notifier.ready()
            assert not notifier.watchdog()
        assert len(caplog.records) == 1
        sock = _receiver(str(socket_path))
        try:
            assert notifier.watchdog()
            assert _pending(sock) == [b"WATCHDOG=1"]
        finally:
            sock.close()
            socket_path.unlink()
        with caplog.at_level(logging.WARNING, logger="controllers.systemd"):
            assert not notifier.watchdog()
        assert len(caplog.records) == 2, "a new outage after a success is logged again"
    finally:
        notifier.close()


def test_full_socket_drops_instead_of_blocking(
    notifier: Notifier, receiver: socket.socket, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="controllers.systemd"):
        results = [notifier.status("x" * 1024) for _ in range(5_000)]
    assert False in results, "the receiver never reads, so its queue must fill up"
    warnings = [r for r in caplog.records if "full" in r.getMessage()]
    assert len(warnings) == 1, "a run of drops is logged once at WARNING"
    _pending(receiver)
    assert notifier.ready()


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "30000000"}, 30.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}, 30.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({"WATCHDOG_USEC": "500000", "WATCHDOG_PID": "x"}, None),
    ],
)
def test_watchdog_interval(env: dict[str, str], expected: float | None) -> None:
    assert watchdog_interval(env) == expected


def test_watchdog_interval_for_another_pid() -> None:
    env = {"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "4242"}
    assert watchdog_interval(env, pid=4242) == 2.0


class SteppedSleep:
    """A fake `asyncio.sleep`: each call reports itself and waits until the test wakes it."""

    def __init__(self) -> None:
        self.delays: list[float] = []
        self._asleep: asyncio.Queue[None] = asyncio.Queue()
        self._wake: asyncio.Queue[None] = asyncio.Queue()

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        self._asleep.put_nowait(None)
        await self._wake.get()

    async def step(self) -> None:
        """Let the loop run one iteration and wait (bounded) until it sleeps again."""
        self._wake.put_nowait(None)
        await self.until_asleep()

    async def until_asleep(self) -> None:
        async with asyncio.timeout(5):
            await self._asleep.get()


async def test_watchdog_loop_pings_only_while_healthy(
    notifier: Notifier, receiver: socket.socket, caplog: pytest.LogCaptureFixture
) -> None:
    state = {"healthy": True, "raise": False}

    def healthy() -> bool:
        if state["raise"]:
            raise RuntimeError("engine probe broke")
        return state["healthy"]

    clock = SteppedSleep()
    task = asyncio.create_task(watchdog_loop(notifier, 30.0, healthy, sleep=clock))
    try:
        await clock.until_asleep()
        assert _pending(receiver) == [b"WATCHDOG=1"]
        await clock.step()
        assert _pending(receiver) == [b"WATCHDOG=1"]

        state["healthy"] = False
        await clock.step()
        await clock.step()
        assert _pending(receiver) == []

        state["raise"] = True
        with caplog.at_level(logging.ERROR, logger="controllers.systemd"):
            await clock.step()
        assert _pending(receiver) == []
        assert "health check raised" in caplog.text

        state["raise"] = False
        state["healthy"] = True
        await clock.step()
        assert _pending(receiver) == [b"WATCHDOG=1"]
        assert set(clock.delays) == {15.0}, "pings at half the watchdog interval"
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_watchdog_loop_with_real_sleep(notifier: Notifier, receiver: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    task = asyncio.create_task(watchdog_loop(notifier, 0.02, lambda: True))
    try:
        async with asyncio.timeout(5):
            for _ in range(3):
                assert await loop.sock_recv(receiver, 4096) == b"WATCHDOG=1"
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_watchdog_loop_rejects_a_non_positive_interval(notifier: Notifier) -> None:
    with pytest.raises(ValueError, match="interval_s"):
        await watchdog_loop(notifier, 0, lambda: True)
