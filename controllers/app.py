"""The aiohttp application: composed with cleanup contexts, torn down in reverse order."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

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
    BUS,
    CALLBACKS,
    DATA_SOURCES,
    DB,
    IMPORT_FILES,
    METRICS,
    NODES,
    POOL,
    REGISTRY,
    SCHEDULER,
    SERVICE,
    SETTINGS,
    STORE,
    STORES,
    WAITING,
)
from controllers.models import task_json
from engine.callbacks import CallbackSender
from engine.engine import DB_ERRORS, SyncEngine
from engine.handlers import default_registry
from engine.handlers.base import Registry
from engine.metrics import Metrics
from engine.uploads import IMPORT_TYPES, ImportFiles
from schedule.clock import Clock, utcnow
from schedule.database import check_database, create_engine
from schedule.events import EventBus
from schedule.imports import live_import_files
from schedule.nodes import NodeBeat, NodeStore
from schedule.periodic import PeriodicScheduler
from schedule.service import ScheduleService
from schedule.store import connect
from schedule.stores import open_stores
from schedule.waiting import TypeRule, WaitExplainer

log = logging.getLogger(__name__)


def create_app(
    settings: Settings,
    registry: Registry | None = None,
    clock: Clock = utcnow,
) -> web.Application:
    """Build the daemon's app; nothing connects until the app starts.

    Start-up, in order: the database and every store on it (one clock, one timeout), the worker
    pool and the service, the callback sender, the upload directory, the periodic jobs, the
    live feed; torn down in reverse. The event bus is made here, and each subscriber subscribes
    as its part starts (the metrics at once).
    """
    app = web.Application(
        middlewares=[error_middleware, auth_middleware],
        client_max_size=settings.max_upload_mb * 1024 * 1024,
    )
    app[SETTINGS] = settings
    app[REGISTRY] = registry or default_registry()
    app[BUS] = EventBus()
    app[METRICS] = Metrics()
    app[METRICS].subscribe(app[BUS])
    app.cleanup_ctx.append(_database(clock))
    app.cleanup_ctx.append(_nodes(clock))  # stamped stopped after the pool has drained
    app.cleanup_ctx.append(_pool(clock))
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


Context = Callable[[web.Application], AsyncIterator[None]]


def _database(clock: Clock) -> Context:
    """The database, checked, its connector and every store on it."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        settings = app[SETTINGS]
        engine = await asyncio.to_thread(create_engine, settings)  # resolves paths on disk
        try:
            await check_database(engine, settings.database_url, settings.db_timeout_s)
        except BaseException:
            await engine.dispose()
            raise
        db = app[DB] = connect(engine, settings.db_timeout_s)
        stores = open_stores(db, clock, alive_s=settings.lease_s)
        app[STORES] = stores
        app[STORE] = stores.tasks
        app[BOOKS] = stores.books
        app[DATA_SOURCES] = stores.data_sources
        yield
        await db.dispose()

    return ctx


def _nodes(clock: Clock) -> Context:
    """This daemon's row in `sync_nodes`, written at start and on every heartbeat (a third of
    the lease), stamped stopped at the end; and the explanations of why tasks wait."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        settings = app[SETTINGS]
        interval = settings.lease_s / 3
        store = app[NODES] = app[STORES].nodes
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


def _pool(clock: Clock) -> Context:
    """The worker pool (`SyncEngine`) and the service that tells it what changed."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        settings = app[SETTINGS]
        pool = SyncEngine(app[STORES], app[REGISTRY], settings, clock=clock, bus=app[BUS])
        app[POOL] = pool
        app[SERVICE] = ScheduleService(app[STORE], app[REGISTRY], settings, pool, app[BUS])
        app[METRICS].watch_engine_db_errors(lambda: pool.db_errors)
        await pool.start()
        yield
        await pool.stop()

    return ctx


def _periodic(clock: Clock) -> Context:
    """The periodic jobs; stopped before the worker pool."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        scheduler = PeriodicScheduler(
            app[SERVICE], app[STORES].schedules, app[SETTINGS], clock=clock
        )
        app[SCHEDULER] = scheduler
        app[METRICS].watch_scheduler_cpu(lambda: scheduler.cpu_s)
        await scheduler.start()
        yield
        await scheduler.stop()

    return ctx


def _callbacks(clock: Clock) -> Context:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        sender = CallbackSender(
            app[STORE],
            app[SETTINGS],
            task_json,
            bus=app[BUS],
            poll_s=max(1.0, app[SETTINGS].poll_interval_s * 10),
            clock=clock,
        )
        sender.subscribe(app[BUS])
        app[CALLBACKS] = sender
        await sender.start()
        yield
        await sender.stop()

    return ctx


async def _imports(app: web.Application) -> AsyncIterator[None]:
    """The upload directory: files of ended import tasks are removed, now and as they end."""
    files = ImportFiles(app[SETTINGS].state_dir)
    app[IMPORT_FILES] = files
    db = app[DB]
    await files.sweep(lambda: live_import_files(db, IMPORT_TYPES))
    files.subscribe(app[BUS])
    yield
    await files.drain()
