"""Typed application keys: what the app composes at start-up."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from config.settings import Settings
from engine.callbacks import CallbackSender
from engine.engine import SyncEngine
from engine.handlers.base import Registry
from engine.metrics import Metrics
from engine.uploads import ImportFiles
from schedule.books import BookStore
from schedule.datasources import DataSourceStore
from schedule.nodes import NodeStore
from schedule.periodic import PeriodicScheduler
from schedule.service import ScheduleService
from schedule.store import TaskStore
from schedule.waiting import WaitExplainer

if TYPE_CHECKING:
    from controllers.live import LiveHub

SETTINGS = web.AppKey("settings", Settings)
REGISTRY = web.AppKey("registry", Registry)
DB = web.AppKey("db", AsyncEngine)
STORE = web.AppKey("store", TaskStore)
ENGINE = web.AppKey("engine", SyncEngine)
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
