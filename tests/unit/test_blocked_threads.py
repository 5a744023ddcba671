"""Threads that block for good never hold up a cancelled task nor the daemon's exit.

`ThreadedIterator` (every source read) leaves a blocked producer thread behind when its
consumer is cancelled, and waits a bounded time otherwise; `controllers.process.run` (the
daemon's event loop) exits without joining threads still blocked once the daemon stopped.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator

import pytest

from engine.sources import streaming
from engine.sources.streaming import ThreadedIterator


class Blocking:
    """An iterator factory whose second item blocks until `release` is set."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.blocked = threading.Event()
        self.closed = threading.Event()

    def __call__(self) -> Iterator[int]:
        try:
            yield 1
            self.blocked.set()
            self.release.wait(30)  # a read that does not return
            yield 2
        finally:
            self.closed.set()


async def test_a_cancelled_consumer_leaves_a_blocked_thread_at_once() -> None:
    source = Blocking()
    reader = ThreadedIterator(source)
    got: list[int] = []
    entered = asyncio.Event()

    async def consume() -> None:
        async with reader as items:
            async for item in items:
                got.append(item)
                entered.set()

    task = asyncio.create_task(consume())
    async with asyncio.timeout(5):
        await entered.wait()
        await asyncio.to_thread(source.blocked.wait, 5)
    task.cancel()
    started = time.monotonic()
    async with asyncio.timeout(5):
        with pytest.raises(asyncio.CancelledError):
            await task
    assert time.monotonic() - started < streaming.STOP_WAIT_S  # not waited for
    assert got == [1]
    assert reader.thread_alive and not source.closed.is_set()
    # Once its read returns, the thread stops by itself and closes its iterator.
    source.release.set()
    assert await asyncio.to_thread(source.closed.wait, 5)
    async with asyncio.timeout(5):
        while reader.thread_alive:  # noqa: ASYNC110 (a thread, nothing to await on)
            await asyncio.sleep(0.01)


async def test_an_ending_consumer_waits_a_bounded_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(streaming, "STOP_WAIT_S", 0.2)
    source = Blocking()
    reader = ThreadedIterator(source)
    started = 0.0
    with pytest.raises(RuntimeError, match="the write failed"):
        async with reader as items:
            async for _ in items:
                await asyncio.to_thread(source.blocked.wait, 5)
                started = time.monotonic()
                raise RuntimeError("the write failed")
    waited = time.monotonic() - started
    assert 0.2 <= waited < 5
    assert reader.thread_alive
    source.release.set()
    assert await asyncio.to_thread(source.closed.wait, 5)


async def test_an_ending_consumer_waits_for_a_thread_that_stops() -> None:
    closed = threading.Event()

    def numbers() -> Iterator[int]:
        try:
            yield from range(100)
        finally:
            closed.set()

    reader = ThreadedIterator(numbers)
    with pytest.raises(RuntimeError):
        async with reader as items:
            async for _ in items:
                raise RuntimeError("stop")
    assert closed.is_set()  # closed before the block was left
    assert not reader.thread_alive


async def test_reader_threads_are_daemon_threads() -> None:
    gate = threading.Event()

    def held() -> Iterator[int]:
        gate.wait(10)  # the thread is alive while the test looks at it
        yield 1

    async with ThreadedIterator(held, name="daemonic") as items:
        (thread,) = [t for t in threading.enumerate() if t.name.startswith("syncd-daemonic-")]
        assert thread.daemon
        gate.set()
        assert [i async for i in items] == [1]


SCRIPT = """
import asyncio, logging, sys, threading
from controllers import process

logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="%(message)s")
never = threading.Event()

async def main() -> None:
    asyncio.get_running_loop().run_in_executor(None, never.wait)  # blocks for good
    await asyncio.sleep(0)
    print("main done", flush=True)

process.run(main(), exit_wait_s=0.3)
print("not reached", flush=True)
"""


def test_the_daemon_loop_exits_without_a_blocked_executor_thread() -> None:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(SCRIPT)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert time.monotonic() - started < 20
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["main done"]
    assert "exiting without waiting for 1 blocked thread(s): syncd-executor" in done.stderr


def test_the_daemon_loop_exits_normally_when_no_thread_is_blocked() -> None:
    script = SCRIPT.replace("never.wait", "never.wait, 0.01")
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["main done", "not reached"]
    assert "blocked" not in done.stderr


STUBBORN = """
import asyncio, logging, sys
from controllers import process

logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="%(message)s")

async def stubborn() -> None:
    while True:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:  # a bug: the cancellation is swallowed
            continue

async def main() -> None:
    asyncio.create_task(stubborn(), name="stubborn")
    await asyncio.sleep(0)

process.run(main(), exit_wait_s=0.3)
print("exited", flush=True)
"""


def test_the_daemon_loop_does_not_wait_for_a_task_that_ignores_its_cancellation() -> None:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(STUBBORN)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["exited"]
    assert "exiting with 1 task(s) that ignored their cancellation: stubborn" in done.stderr
