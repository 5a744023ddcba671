"""`reraise_if_cancelling`: a cancellation that came back as a database error still stops the
loop that caught it."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy.exc import OperationalError

from engine.engine import DB_ERRORS, reraise_if_cancelling


async def test_a_cancellation_turned_into_a_database_error_is_raised_again() -> None:
    entered = asyncio.Event()
    rounds = 0

    async def loop() -> None:
        nonlocal rounds
        while True:
            rounds += 1
            try:
                try:
                    entered.set()
                    await asyncio.sleep(30)  # "a database call"
                except asyncio.CancelledError:  # what a driver or pool may do with it
                    raise OperationalError("SELECT 1", None, ConnectionError("gone")) from None
            except DB_ERRORS:
                reraise_if_cancelling()
                await asyncio.sleep(0)  # then the loop would carry on

    task = asyncio.create_task(loop())
    await entered.wait()
    task.cancel()
    async with asyncio.timeout(5):
        with pytest.raises(asyncio.CancelledError):
            await task
    assert rounds == 1


async def test_nothing_is_raised_when_nobody_cancels() -> None:
    reraise_if_cancelling()  # the test's own task is not being cancelled
