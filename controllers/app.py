"""The aiohttp application: composed with cleanup contexts, torn down in reverse order."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from datetime import datetime

from aiohttp import web

from config.settings import Settings
from config.version import installed_version
from controllers import (
    crontask,
    dashboard,
    datasources,
    health,
    identity,
    imports,
    live,
    metrics,
    nodes,
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
    NODES,
    REGISTRY,
    SCHEDULER,
    SERVICE,
    SETTINGS,
    STORE,
    WAITING,
)
from controllers.models import task_json
from engine.callbacks import CallbackSender
from engine.engine import DB_ERRORS, SyncEngine
from engine.handlers import default_registry
from engine.handlers.base import Registry
from engine.metrics import Metrics
from engine.uploads import IMPORT_TYPES, ImportFiles
from schedule.books import BookStore
from schedule.database import check_database, create_engine
from schedule.datasources import DataSourceStore
from schedule.imports import live_import_files
from schedule.nodes import NodeBeat, NodeStore
from schedule.periodic import PeriodicScheduler
from schedule.schedules import ScheduleStore
from schedule.service import ScheduleService
from schedule.store import make_store, utcnow
from schedule.waiting import TypeRule, WaitExplainer

log = logging.getLogger(__name__)


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
    app.cleanup_ctx.append(_nodes(clock))  # stamped stopped after the engine has drained
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
    nodes.routes,
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
    db = await asyncio.to_thread(create_engine, settings)  # resolves paths on disk
    try:
        await check_database(db, settings.database_url, settings.db_timeout_s)
    except BaseException:
        await db.dispose()
        raise
    app[DB] = db
    yield
    await db.dispose()


def _engine(clock: Callable[[], datetime]) -> Callable[[web.Application], AsyncIterator[None]]:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        settings = app[SETTINGS]
        store = make_store(app[DB], clock, timeout=settings.db_timeout_s)
        engine = SyncEngine(store, app[REGISTRY], settings, app[DB], clock)
        app[STORE] = store
        app[ENGINE] = engine
        app[SERVICE] = ScheduleService(store, app[REGISTRY], settings, engine)
        _observe(app[METRICS], engine, app[SERVICE])
        await engine.start()
        yield
        await engine.stop()

    return ctx


def _nodes(clock: Callable[[], datetime]) -> Callable[[web.Application], AsyncIterator[None]]:
    """This daemon's row in `sync_nodes`, written at start and on every heartbeat (a third of
    the lease), stamped stopped at the end; and the explanations of why tasks wait."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        settings = app[SETTINGS]
        interval = settings.lease_s / 3
        store = NodeStore(app[DB], alive_s=3 * interval, clock=clock)
        app[NODES] = store
        rules = {s.task_type: TypeRule(s.external, s.concurrency) for s in app[REGISTRY]}
        app[WAITING] = WaitExplainer(app[DB], store, rules, clock)
        version = await asyncio.to_thread(installed_version)
        started = clock()

        def beat() -> NodeBeat:
            return NodeBeat(settings.node_id, version, started, settings.concurrency)

        loop = asyncio.create_task(heartbeats(store, beat, interval, settings.db_timeout_s))
        yield
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)
        with contextlib.suppress(*DB_ERRORS, TimeoutError):
            async with asyncio.timeout(settings.db_timeout_s):
                await store.stopped(settings.node_id)

    return ctx


async def heartbeats(
    store: NodeStore, beat: Callable[[], NodeBeat], interval: float, write_within_s: float
) -> None:
    """Beat now and every `interval`; a database outage is logged once and ridden out."""
    failing = False
    while True:
        try:
            async with asyncio.timeout(write_within_s):
                await store.beat(beat())
            if failing:
                log.info("node heartbeat written again", extra={"action": "node_beat"})
            failing = False
        except (*DB_ERRORS, TimeoutError) as exc:
            if not failing:
                log.warning("node heartbeat not written: %s", exc, extra={"action": "node_beat"})
            failing = True
        await asyncio.sleep(interval)


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
