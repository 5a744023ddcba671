"""The aiohttp application: composed with cleanup contexts, torn down in reverse order."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import datetime

from aiohttp import web

from config.settings import Settings
from controllers import (
    crontask,
    dashboard,
    datasources,
    health,
    identity,
    imports,
    live,
    metrics,
    openapi,
    pricing,
    schedules,
    tasks,
)
from controllers.auth import auth_middleware
from controllers.errors import error_middleware
from controllers.keys import (
    BOOKS,
    CALLBACKS,
    DATA_SOURCES,
    DB,
    ENGINE,
    IMPORT_FILES,
    METRICS,
    REGISTRY,
    SCHEDULER,
    SERVICE,
    SETTINGS,
    STORE,
)
from controllers.models import task_json
from engine.callbacks import CallbackSender
from engine.engine import SyncEngine
from engine.handlers import default_registry
from engine.handlers.base import Registry
from engine.metrics import Metrics
from engine.uploads import IMPORT_TYPES, ImportFiles
from schedule.books import BookStore
from schedule.clock import utcnow
from schedule.database import check_database, create_engine
from schedule.datasources import DataSourceStore
from schedule.imports import live_import_files
from schedule.periodic import PeriodicScheduler
from schedule.schedules import ScheduleStore
from schedule.service import ScheduleService
from schedule.store import connect, make_store


def create_app(
    settings: Settings,
    registry: Registry | None = None,
    clock: Callable[[], datetime] = utcnow,
) -> web.Application:
    """Build the daemon's app; nothing connects until the app starts."""
    app = web.Application(
        middlewares=[error_middleware, auth_middleware],
        client_max_size=settings.max_upload_mb * 1024 * 1024,
    )
    app[SETTINGS] = settings
    app[REGISTRY] = registry or default_registry()
    app[METRICS] = Metrics()
    app.cleanup_ctx.append(_database)
    app.cleanup_ctx.append(_engine(clock))
    app.cleanup_ctx.append(_callbacks(clock))
    app.cleanup_ctx.append(_imports)
    app.cleanup_ctx.append(_periodic(clock))
    app.cleanup_ctx.append(live.live_context)
    app.on_shutdown.append(live.close_sockets)
    _add_routes(app)
    return app


#: Every route table of the daemon, in the order routes are matched.
ROUTE_TABLES = (
    health.routes,
    tasks.routes,
    schedules.routes,
    pricing.routes,
    crontask.routes,
    imports.routes,
    datasources.routes,
    metrics.routes,
    openapi.routes,
    identity.routes,
    live.routes,
    dashboard.routes,
)


def _add_routes(app: web.Application) -> None:
    for table in ROUTE_TABLES:
        app.add_routes(table)


def routes_only() -> web.Application:
    """An app with the daemon's routes and nothing else (no settings, nothing to start): what
    `syncd roles` reads the role table from."""
    app = web.Application()
    _add_routes(app)
    return app


async def _database(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    engine = await asyncio.to_thread(create_engine, settings)  # resolves paths on disk
    try:
        await check_database(engine, settings.database_url, settings.db_timeout_s)
    except BaseException:
        await engine.dispose()
        raise
    app[DB] = connect(engine, settings.db_timeout_s)
    yield
    await app[DB].dispose()


def _engine(clock: Callable[[], datetime]) -> Callable[[web.Application], AsyncIterator[None]]:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        settings = app[SETTINGS]
        store = make_store(app[DB], clock)
        engine = SyncEngine(store, app[REGISTRY], settings, app[DB], clock)
        app[STORE] = store
        app[ENGINE] = engine
        app[SERVICE] = ScheduleService(store, app[REGISTRY], settings, engine)
        _observe(app[METRICS], engine, app[SERVICE])
        await engine.start()
        yield
        await engine.stop()

    return ctx


def _periodic(clock: Callable[[], datetime]) -> Callable[[web.Application], AsyncIterator[None]]:
    """The book store and the periodic jobs; stopped before the engine."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        settings = app[SETTINGS]
        app[BOOKS] = BookStore(app[DB], clock)
        scheduler = PeriodicScheduler(
            app[SERVICE], ScheduleStore(app[DB], clock), settings, clock=clock
        )
        scheduler.on_fire.append(app[METRICS].scheduler_fire)
        app[SCHEDULER] = scheduler
        await scheduler.start()
        yield
        await scheduler.stop()

    return ctx


def _observe(metrics: Metrics, engine: SyncEngine, service: ScheduleService) -> None:
    """Feed the metrics from the engine's events and the service's creations."""
    engine.listeners.append(metrics.observe)
    service.on_created.append(metrics.task_created)
    metrics.watch_engine_db_errors(lambda: engine.db_errors)


def _callbacks(clock: Callable[[], datetime]) -> Callable[[web.Application], AsyncIterator[None]]:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        sender = CallbackSender(
            app[STORE],
            app[SETTINGS],
            task_json,
            observe=app[METRICS].callback_attempt,
            poll_s=max(1.0, app[SETTINGS].poll_interval_s * 10),
            clock=clock,
        )
        app[ENGINE].listeners.append(sender.on_event)
        app[CALLBACKS] = sender
        await sender.start()
        yield
        await sender.stop()

    return ctx


async def _imports(app: web.Application) -> AsyncIterator[None]:
    """The upload directory: files of ended import tasks are removed, now and as they end."""
    files = ImportFiles(app[SETTINGS].state_dir)
    app[IMPORT_FILES] = files
    app[DATA_SOURCES] = DataSourceStore(app[DB])
    db = app[DB]
    await files.sweep(lambda: live_import_files(db, IMPORT_TYPES))
    app[ENGINE].listeners.append(files.on_event)
    yield
    await files.drain()
