"""Shared fixtures: settings, a migrated SQLite database per test, stores, bus, service, pool.

`db`/`ddb` are SQLAlchemy engines (for a test's own SQL); `connector`/`dialect_connector` are
what the stores take (`schedule.store.Connector`) on the same databases."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from blockbuster import BlockBuster, blockbuster_ctx
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy.ext.asyncio import AsyncEngine

from config.settings import Settings
from engine.engine import SyncEngine
from engine.handlers import default_registry
from engine.handlers.base import Registry
from schedule.database import alembic_config, create_engine, sync_url
from schedule.events import EventBus
from schedule.service import ScheduleService
from schedule.store import Connector, TaskStore, connect
from schedule.stores import Stores, open_stores

pytest_plugins = ["tests.mariadb", "tests.zips"]

FAST = {
    "poll_interval_s": 0.05,
    "lease_s": 5.0,
    "rescue_interval_s": 0.5,
    "progress_flush_s": 0.05,
    "cancel_grace_s": 0.5,
    "shutdown_grace_s": 2.0,
    "retry_backoff_s": 0.0,
    "log_format": "text",
}


def migrate_url(url: str) -> None:
    """Run the Alembic migrations on a database."""
    from alembic import command

    cfg = alembic_config(url)
    engine = create_sync_engine(sync_url(url))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
    engine.dispose()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One migrated SQLite file per session; tests get copies (fast fresh databases)."""
    path = tmp_path_factory.mktemp("template") / "template.db"
    migrate_url(f"sqlite:///{path}")
    return path


@pytest.fixture
def sqlite_url(sqlite_template: Path, tmp_path: Path) -> str:
    """A fresh migrated SQLite database for this test."""
    path = tmp_path / "syncd.db"
    shutil.copyfile(sqlite_template, path)
    return f"sqlite:///{path}"


@pytest.fixture(params=["sqlite", pytest.param("mariadb", marks=pytest.mark.mariadb)])
def database_url(request: pytest.FixtureRequest) -> str:
    """A fresh migrated database of each dialect (the integration suite runs on both)."""
    if request.param == "sqlite":
        url: str = request.getfixturevalue("sqlite_url")
        return url
    url = request.getfixturevalue("mariadb_url")
    migrate_url(url)
    return url


@pytest.fixture
def dialect_settings(database_url: str, tmp_path: Path) -> Settings:
    """Test settings on a fresh database of each dialect (override to change settings)."""
    return make_settings(database_url, tmp_path)


@pytest.fixture
def dialect_engine(dialect_settings: Settings) -> AsyncEngine:
    """The async engine of `dialect_settings`, created outside the event loop."""
    return create_engine(dialect_settings)


@pytest.fixture
async def ddb(dialect_engine: AsyncEngine) -> AsyncIterator[AsyncEngine]:
    """The dialect engine, disposed after the test."""
    yield dialect_engine
    await dialect_engine.dispose()


def make_settings(url: str, tmp_path: Path, **overrides: Any) -> Settings:
    """Settings for tests: fast intervals, no retry backoff, state in tmp_path."""
    values: dict[str, Any] = {
        **FAST,
        "database_url": url,
        "state_dir": tmp_path / "state",
        "node_id": "test-node",
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def settings(sqlite_url: str, tmp_path: Path) -> Settings:
    """Test settings on a fresh SQLite database."""
    return make_settings(sqlite_url, tmp_path)


@pytest.fixture
def dialect_connector(ddb: AsyncEngine) -> Connector:
    """The stores' connector on `ddb` (each dialect)."""
    return connect(ddb)


@pytest.fixture
def unstarted_db(settings: Settings) -> AsyncEngine:
    """The async engine, created outside the event loop (it resolves paths on disk)."""
    return create_engine(settings)


@pytest.fixture
async def db(unstarted_db: AsyncEngine) -> AsyncIterator[AsyncEngine]:
    """The async engine of the test database, disposed after the test."""
    yield unstarted_db
    await unstarted_db.dispose()


@pytest.fixture
def connector(db: AsyncEngine) -> Connector:
    """The stores' connector on the test database."""
    return connect(db)


@pytest.fixture
def stores(connector: Connector) -> Stores:
    """Every store on the test database."""
    return open_stores(connector)


@pytest.fixture
def store(stores: Stores) -> TaskStore:
    """The task store for the test database's dialect."""
    return stores.tasks


@pytest.fixture
def bus() -> EventBus:
    """The event bus the pool and the service publish on."""
    return EventBus()


@pytest.fixture
def registry() -> Registry:
    """Built-in task types."""
    return default_registry()


@pytest.fixture
async def pool(
    stores: Stores, registry: Registry, settings: Settings, bus: EventBus
) -> AsyncIterator[SyncEngine]:
    """A started worker pool (`SyncEngine`), stopped after the test."""
    started = SyncEngine(stores, registry, settings, bus=bus)
    await started.start()
    yield started
    await started.stop()


@pytest.fixture
def service(
    store: TaskStore, registry: Registry, settings: Settings, pool: SyncEngine, bus: EventBus
) -> ScheduleService:
    """The service wired to a running pool."""
    return ScheduleService(store, registry, settings, pool, bus)


@pytest.fixture(autouse=True)
def no_blocking_calls(request: pytest.FixtureRequest) -> Iterator[BlockBuster | None]:
    """Fail any blocking call made on the event loop in async tests."""
    if not request.node.get_closest_marker("asyncio") and not _is_async(request):
        yield None
        return
    with blockbuster_ctx(["config", "controllers", "schedule", "engine"]) as bb:
        yield bb


def _is_async(request: pytest.FixtureRequest) -> bool:
    import inspect

    function = getattr(request.node, "function", None)
    return function is not None and inspect.iscoroutinefunction(function)
