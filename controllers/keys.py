"""Typed application keys: what the app composes at start-up.

`DB` is the database's connector (its read and write paths; `DB.engine` is SQLAlchemy's engine);
`POOL` is syncd's `SyncEngine` (the worker pool).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from config.settings import Settings
from engine.callbacks import CallbackSender
from engine.engine import SyncEngine
from engine.handlers.base import Registry
from engine.metrics import Metrics
from engine.uploads import ImportFiles
from schedule.books import BookStore
from schedule.datasources import DataSourceStore
from schedule.events import EventBus
from schedule.nodes import NodeStore
from schedule.periodic import PeriodicScheduler
from schedule.service import ScheduleService
from schedule.store import Connector, TaskStore
from schedule.stores import Stores
from schedule.waiting import WaitExplainer

if TYPE_CHECKING:
    from controllers.live import LiveHub

SETTINGS = web.AppKey("settings", Settings)
REGISTRY = web.AppKey("registry", Registry)
BUS = web.AppKey("bus", EventBus)
DB = web.AppKey("db", Connector)
STORES = web.AppKey("stores", Stores)
STORE = web.AppKey("store", TaskStore)
POOL = web.AppKey("pool", SyncEngine)
SERVICE = web.AppKey("service", ScheduleService)
LIVE: web.AppKey[LiveHub] = web.AppKey("live")
BOOKS = web.AppKey("books", BookStore)
SCHEDULER = web.AppKey("scheduler", PeriodicScheduler)

METRICS = web.AppKey("metrics", Metrics)
CALLBACKS = web.AppKey("callbacks", CallbackSender)
IMPORT_FILES = web.AppKey("import_files", ImportFiles)
DATA_SOURCES = web.AppKey("data_sources", DataSourceStore)
NODES = web.AppKey("nodes", NodeStore)
WAITING = web.AppKey("waiting", WaitExplainer)
