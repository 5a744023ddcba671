"""`status_loop`: STATUS= lines from a describe function, also when it fails."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from controllers.systemd import Notifier, status_loop


async def test_status_lines(tmp_path_factory: pytest.TempPathFactory) -> None:
    path = tmp_path_factory.mktemp("st") / "n.sock"
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(str(path))
    receiver.setblocking(False)
    notifier = Notifier({"NOTIFY_SOCKET": str(Path(path))})
    answers: list[str | Exception] = ["running=1 queued=2", RuntimeError("db down")]
    steps = 0

    async def describe() -> str:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def step(_: float) -> None:
        nonlocal steps
        steps += 1
        if steps == 2:
            raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await status_loop(notifier, describe, 5.0, sleep=step)
    got = [receiver.recv(4096), receiver.recv(4096)]
    notifier.close()
    receiver.close()
    assert got == [b"STATUS=running=1 queued=2", b"STATUS=status unavailable: RuntimeError"]
