"""The Alembic migrations produce exactly the schema the models declare, on every dialect."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine

from schedule.database import head_revision, sync_url
from schedule.models import metadata


def _diff(url: str) -> list[Any]:
    engine = create_engine(sync_url(url))
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn, opts={"compare_type": True, "compare_server_default": False}
            )
            assert context.get_current_heads() == (head_revision(url),)
            return list(compare_metadata(context, metadata))
    finally:
        engine.dispose()


def test_migrations_match_models(database_url: str) -> None:
    assert _diff(database_url) == []


def test_single_head() -> None:
    assert head_revision("sqlite:///unused.db") is not None
