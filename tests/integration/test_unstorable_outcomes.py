"""An attempt whose outcome the database could not store (an error longer than MariaDB's TEXT
column, a handler result that is not JSON) fails its task with a short reason, a result over
the stored-value cap is replaced by a note, and the pool goes on finishing the other tasks: on
both dialects."""

from __future__ import annotations

from pathlib import Path

import pytest

from config.settings import Settings
from engine.context import TaskContext
from engine.exceptions import PermanentError
from engine.handlers import default_registry
from engine.handlers.base import HandlerSpec, JsonObject, Registry
from engine.worker import MAX_ERROR_CHARS
from schedule.events import EventBus
from schedule.records import TaskRequest
from schedule.service import ScheduleService
from schedule.task import TaskStatus
from tests.conftest import make_settings
from tests.helpers import Events

LONG = 200_000  # characters: three times what MariaDB's TEXT column holds


async def long_error(ctx: TaskContext) -> JsonObject:
    raise PermanentError("row 7 refused: " + "x" * LONG)


async def crash_with_long_text(ctx: TaskContext) -> JsonObject:
    raise RuntimeError("INSERT INTO tools VALUES " + "(?, ?), " * (LONG // 8))


async def not_json(ctx: TaskContext) -> JsonObject:
    return {"seen": {1, 2, 3}}  # a set: a handler bug


async def too_large(ctx: TaskContext) -> JsonObject:
    return {"rows": ["x" * 1000] * 100}  # about 100 KB, over the 64 KB cap


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return make_settings(database_url, tmp_path, max_parameters_kb=64)


@pytest.fixture
def registry() -> Registry:
    reg = default_registry()
    for run in (long_error, crash_with_long_text, not_json, too_large):
        reg.register(HandlerSpec(task_type=run.__name__, run=run))
    return reg


async def test_an_unstorable_outcome_fails_its_task_and_the_pool_goes_on(
    service: ScheduleService, bus: EventBus
) -> None:
    events = Events(bus)
    kinds = ["long_error", "crash_with_long_text", "not_json", "too_large", "noop"]
    ids = {}
    for kind in kinds:
        task, _ = await service.create(TaskRequest(kind, max_attempts=1))
        ids[kind] = task.id
    for task_id in ids.values():
        await events.wait(task_id, "finished", within=30)
    tasks = {kind: await service.get(task_id) for kind, task_id in ids.items()}

    for kind in ("long_error", "crash_with_long_text"):
        task = tasks[kind].task
        assert task.status is TaskStatus.FAILED
        assert task.error is not None and len(task.error) == MAX_ERROR_CHARS
        assert task.error.endswith(" more characters)")
        (attempt,) = tasks[kind].attempts
        assert attempt.error == task.error
    assert tasks["long_error"].task.error.startswith("row 7 refused: xxx")  # type: ignore[union-attr]
    assert tasks["crash_with_long_text"].task.error.startswith(  # type: ignore[union-attr]
        "RuntimeError: INSERT INTO tools VALUES (?, ?)"
    )
    broken = tasks["not_json"].task
    assert broken.status is TaskStatus.FAILED and broken.result is None
    assert broken.error == (
        "the handler's result is not JSON: TypeError: Object of type set is not JSON serializable"
    )
    large = tasks["too_large"].task
    assert large.status is TaskStatus.COMPLETED and large.result is not None
    assert list(large.result) == ["result_omitted"]
    note = large.result["result_omitted"]
    assert note.startswith("the result was 10") and note.endswith(
        "bytes as JSON; at most 65,536 are stored (SYNCD_MAX_PARAMETERS_KB)"
    )
    assert tasks["noop"].task.status is TaskStatus.COMPLETED
