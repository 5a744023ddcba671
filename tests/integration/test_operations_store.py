"""Operations store methods on every dialect: concurrent external claims, callback deliveries."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from schedule.database import create_engine
from schedule.records import NewTask
from schedule.store import TaskStore, make_store
from tests.conftest import make_settings


@pytest.fixture
def any_db(database_url: str, tmp_path: Path) -> AsyncEngine:
    """Settings and engine are built outside the event loop (they touch the disk)."""
    return create_engine(make_settings(database_url, tmp_path))


@pytest.fixture
async def any_store(any_db: AsyncEngine) -> AsyncIterator[TaskStore]:
    yield make_store(any_db)
    await any_db.dispose()


async def test_concurrent_external_claims_never_share(any_store: TaskStore) -> None:
    new = [NewTask("external", {"service": "s"}, 3, service="s") for _ in range(6)]
    new.append(
        NewTask("external", {"service": "s", "group": "g"}, 3, service="s", service_group="g")
    )
    new.append(NewTask("external", {"service": "other"}, 3, service="other"))
    await any_store.create_many(new)
    claims = await asyncio.gather(
        *(any_store.claim_external(f"w{i}", "s", None, 30) for i in range(10))
    )
    got = [c.id for c in claims if c is not None]
    assert len(got) == len(set(got)) == 7  # every task of service s once, "other" never
    assert await any_store.claim_external("w", "other", "g", 30) is None
    assert await any_store.claim_external("w", "other", None, 30) is not None


async def test_callback_deliveries(any_store: TaskStore) -> None:
    hook = "http://127.0.0.1/hook"
    plain: Any
    task, _ = await any_store.create(NewTask("noop", {}, 1, callback_url=hook))
    plain, _ = await any_store.create(NewTask("noop", {}, 1))
    assert task.callback_status == "pending" and plain.callback_status is None
    assert await any_store.claim_callbacks(10, 30) == []  # not finished yet
    await any_store.cancel(task.id)
    await any_store.cancel(plain.id)

    first: Any = await any_store.claim_callbacks(10, 30)
    assert [(d.task.id, d.attempt) for d in first] == [(task.id, 1)]
    assert await any_store.claim_callbacks(10, 30) == []  # held while being sent
    retry_at = datetime.now(UTC) - timedelta(seconds=1)  # already due again
    await any_store.settle_callback(task.id, 1, "receiver answered HTTP 500", retry_at)
    second: Any = await any_store.claim_callbacks(10, 30)
    assert [(d.task.id, d.attempt) for d in second] == [(task.id, 2)]
    await any_store.settle_callback(task.id, 1, None, None)  # a stale attempt changes nothing
    assert (await any_store.require(task.id)).callback_status == "pending"
    await any_store.settle_callback(task.id, 2, None, None)
    done = await any_store.require(task.id)
    assert (done.callback_status, done.callback_attempts, done.callback_error) == (
        "delivered",
        2,
        None,
    )
    assert await any_store.claim_callbacks(10, 0) == []
