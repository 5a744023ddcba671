"""Task types: one module per type, each exposing a `SPEC`; `default_registry` lists them."""

from __future__ import annotations

from engine.handlers.base import Registry


def default_registry() -> Registry:
    """Every built-in task type (imported here so that handler modules load lazily)."""
    from engine.handlers import external, noop

    registry = Registry()
    for module in (noop, external):
        registry.register(module.SPEC)
    return registry
