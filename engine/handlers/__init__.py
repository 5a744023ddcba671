"""Task types: one module per type, each exposing a `SPEC`; `default_registry` lists them."""

from __future__ import annotations

from engine.handlers.base import Registry


def default_registry() -> Registry:
    """Every built-in task type (imported here so that handler modules load lazily)."""
    from engine.handlers import (
        external,
        full_sync,
        incremental_sync,
        noop,
        partnumber_book_create,
        partnumber_book_retention,
        records_import,
        stock_import,
        task_retention,
    )

    registry = Registry()
    modules = (
        noop,
        external,
        partnumber_book_create,
        partnumber_book_retention,
        task_retention,
        stock_import,
        records_import,
        full_sync,
        incremental_sync,
    )
    for module in modules:
        registry.register(module.SPEC)
    return registry
