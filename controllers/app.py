"""The aiohttp application: composed with cleanup contexts, torn down in reverse order."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import datetime

from aiohttp import web

from config.settings import Settings
from controllers import health, tasks
from controllers.errors import error_middleware
from controllers.keys import DB, ENGINE, REGISTRY, SERVICE, SETTINGS, STORE
from engine.engine import SyncEngine
from engine.handlers import default_registry
from engine.handlers.base import Registry
from schedule.database import check_database, create_engine
from schedule.service import ScheduleService
from schedule.store import make_store, utcnow


def create_app(
    settings: Settings,
    registry: Registry | None = None,
    clock: Callable[[], datetime] = utcnow,
) -> web.Application:
    """Build the daemon's app; nothing connects until the app starts."""
    app = web.Application(
        middlewares=[error_middleware], client_max_size=settings.max_upload_mb * 1024 * 1024
    )
    app[SETTINGS] = settings
    app[REGISTRY] = registry or default_registry()
    app.cleanup_ctx.append(_database)
    app.cleanup_ctx.append(_engine(clock))
    app.add_routes(health.routes)
    app.add_routes(tasks.routes)
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
        await engine.start()
        yield
        await engine.stop()

    return ctx
