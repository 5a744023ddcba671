"""The daemon's event loop from start to exit, with an end that cannot be held up.

`asyncio.run` ends by waiting for every thread of the loop's default executor, and the
interpreter then joins every executor thread and every non-daemon thread before it exits. A
thread blocked for good in a system call (a peer that accepts and never answers, a FIFO with no
writer, a hung network file system) would keep the process alive however cleanly its tasks were
stopped: SIGTERM must end the daemon within `SYNCD_SHUTDOWN_GRACE_S` plus a few seconds, always.

`run` does what `asyncio.run` does, except that threads still running once the daemon has
stopped get `EXIT_WAIT_S` to end; the ones that do not are named in the log and the process
leaves without them (`os._exit`, after flushing the log). By then every task was finished or
given back to the queue and the database closed: a thread left behind can only be blocked in a
read, not half-way through a write of ours. Source readers do not need this (they run on daemon
threads of their own, see `engine.sources.streaming`); it covers everything that runs on the
default executor (`asyncio.to_thread`: file reads, DNS lookups, parsing).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
import time
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import uvloop

log = logging.getLogger(__name__)
EXIT_WAIT_S = 2.0


def run(main: Coroutine[Any, Any, None], exit_wait_s: float = EXIT_WAIT_S) -> None:
    """Run `main` on a new event loop to its end; never wait for a blocked thread past that."""
    loop = uvloop.new_event_loop()
    executor = ThreadPoolExecutor(thread_name_prefix="syncd-executor")
    loop.set_default_executor(executor)
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(main)
    finally:
        try:
            _cancel_remaining(loop, exit_wait_s)
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            asyncio.set_event_loop(None)
            loop.close()
            executor.shutdown(wait=False, cancel_futures=True)
    blocked = blocked_threads(exit_wait_s)
    if blocked:
        log.warning(
            "exiting without waiting for %d blocked thread(s): %s",
            len(blocked),
            ", ".join(blocked),
            extra={"action": "exit_blocked", "threads": blocked},
        )
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def blocked_threads(wait_s: float) -> list[str]:
    """Names of the threads the interpreter would wait for at exit that are still running
    after `wait_s` seconds (waiting for them meanwhile)."""
    deadline = time.monotonic() + wait_s
    for thread in _joined_at_exit():
        thread.join(max(0.0, deadline - time.monotonic()))
    return [t.name for t in _joined_at_exit() if t.is_alive()]


def _joined_at_exit() -> list[threading.Thread]:
    current = threading.current_thread()
    return [t for t in threading.enumerate() if t is not current and not t.daemon]


def _cancel_remaining(loop: asyncio.AbstractEventLoop, wait_s: float) -> None:
    """What `asyncio.run` does with the tasks still pending when its coroutine returns, except
    that a task ignoring its cancellation is waited for `wait_s` only."""
    tasks = asyncio.all_tasks(loop)
    if not tasks:
        return
    for task in tasks:
        task.cancel()
    _, pending = loop.run_until_complete(asyncio.wait(tasks, timeout=wait_s))
    if pending:
        log.warning(
            "exiting with %d task(s) that ignored their cancellation: %s",
            len(pending),
            ", ".join(sorted(t.get_name() for t in pending)),
            extra={"action": "exit_stuck_tasks"},
        )
    for task in tasks - pending:
        if not task.cancelled() and task.exception() is not None:
            loop.call_exception_handler(
                {
                    "message": "unhandled exception while the daemon stopped",
                    "exception": task.exception(),
                    "task": task,
                }
            )
