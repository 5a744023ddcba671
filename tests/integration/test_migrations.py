"""The Alembic migrations produce exactly the schema the models declare, on every dialect."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, insert, select

from schedule.database import alembic_config, head_revision, sync_url
from schedule.models import metadata, sync_task_rollups, sync_tasks


def _diff(url: str) -> list[Any]:
    engine = create_engine(sync_url(url))
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn,
                opts={
                    "compare_type": True,
                    "compare_server_default": False,
                    "include_object": _for_dialect(conn.dialect.name),
                },
            )
            assert context.get_current_heads() == (head_revision(url),)
            return list(compare_metadata(context, metadata))
    finally:
        engine.dispose()


def _for_dialect(name: str) -> Callable[..., bool]:
    """Alembic's `include_object`: an index the models declare for one dialect only
    (`Index.ddl_if(dialect=...)`) is compared on that dialect only."""

    def include(obj: Any, _name: str | None, _kind: str, _reflected: bool, _other: Any) -> bool:
        only = getattr(obj, "_ddl_if", None)
        return only is None or only.dialect is None or only.dialect == name

    return include


# SQLAlchemy cannot reflect SQLite's expression indexes, so the comparison skips the search
# index there (saying so); the next test checks it by its SQL.
@pytest.mark.filterwarnings("ignore:.*expression-based index.*ix_sync_tasks_dedupe_search")
@pytest.mark.filterwarnings("ignore:.*expression-based index ix_sync_tasks_dedupe_search")
def test_migrations_match_models(database_url: str) -> None:
    assert _diff(database_url) == []


def test_the_search_index_holds_the_dedupe_key_in_lower_case_on_sqlite(sqlite_url: str) -> None:
    engine = create_engine(sync_url(sqlite_url))
    try:
        with engine.connect() as conn:
            (sql,) = conn.exec_driver_sql(
                "SELECT sql FROM sqlite_master WHERE name = 'ix_sync_tasks_dedupe_search'"
            ).one()
    finally:
        engine.dispose()
    assert " ".join(sql.split()) == (
        "CREATE INDEX ix_sync_tasks_dedupe_search ON sync_tasks (lower(dedupe_key)) "
        "WHERE dedupe_key IS NOT NULL"
    )


def test_single_head() -> None:
    assert head_revision("sqlite:///unused.db") is not None


def test_the_rollups_migration_counts_the_tasks_that_finished_before(database_url: str) -> None:
    """Migration 0009 fills the statistics' rollups from the tasks already there: per hour of
    the finish, type and outcome, with the run times of those that started."""
    from alembic import command

    cfg = alembic_config(database_url)
    engine = create_engine(sync_url(database_url))
    hour = datetime(2026, 3, 1, 6)
    rows = [
        ("completed", "noop", hour + timedelta(minutes=5), 2.0),
        ("completed", "noop", hour + timedelta(minutes=59), 4.0),
        ("completed", "noop", hour + timedelta(hours=1), None),
        ("failed", "records_import", hour + timedelta(minutes=1), 1.5),
        ("cancelled", "noop", hour + timedelta(minutes=2), None),
        ("pending", "noop", None, None),
    ]
    try:
        with engine.begin() as conn:
            command.downgrade(_on(cfg, conn), "0008")
            for index, (status, kind, finished, run_s) in enumerate(rows):
                started = finished - timedelta(seconds=run_s) if finished and run_s else None
                conn.execute(
                    insert(sync_tasks).values(
                        id=f"t{index}",
                        reference=f"R{index:010d}",
                        task_type=kind,
                        status=status,
                        parameters={},
                        message="",
                        max_attempts=1,
                        run_after=hour,
                        created_at=hour,
                        updated_at=hour,
                        started_at=started,
                        finished_at=finished,
                    )
                )
            command.upgrade(_on(cfg, conn), "head")
            got = conn.execute(
                select(sync_task_rollups).order_by(
                    sync_task_rollups.c.hour, sync_task_rollups.c.outcome
                )
            ).all()
    finally:
        engine.dispose()
    assert [tuple(r)[:5] for r in got] == [
        (hour, "noop", "cancelled", 1, 0),
        (hour, "noop", "completed", 2, 2),
        (hour, "records_import", "failed", 1, 1),
        (hour + timedelta(hours=1), "noop", "completed", 1, 0),
    ]
    # SQLite computes run times through julianday(): to some microseconds
    assert [r.duration_s for r in got] == pytest.approx([0.0, 6.0, 1.5, 0.0], abs=1e-3)


def _on(cfg: Any, conn: Any) -> Any:
    cfg.attributes["connection"] = conn
    return cfg


def test_an_analyzed_sqlite_database_keeps_claiming_through_the_claim_index(
    sqlite_url: str,
) -> None:
    """Statistics for the old indexes and none for 0008's would make SQLite's planner claim
    through a new status index, sorting every pending row; 0008 analyzes the table again."""
    from alembic import command

    from schedule.store.sqlite import due_sql

    cfg = alembic_config(sqlite_url)
    engine = create_engine(sync_url(sqlite_url))
    try:
        with engine.begin() as conn:
            command.downgrade(_on(cfg, conn), "0007")
            stamp = "2026-03-01 06:00:00.000000"
            conn.exec_driver_sql(
                "INSERT INTO sync_tasks (id, reference, task_type, status, parameters, message, "
                "max_attempts, run_after, created_at, updated_at) "
                "VALUES (?, ?, 'noop', ?, '{}', '', 1, ?, ?, ?)",
                [
                    (f"t{i}", f"R{i:010d}", "pending" if i % 50 == 0 else "completed")
                    + (stamp,) * 3
                    for i in range(5000)
                ],
            )
            conn.exec_driver_sql("ANALYZE")
            command.upgrade(_on(cfg, conn), "head")
            plan = conn.exec_driver_sql(
                "EXPLAIN QUERY PLAN " + due_sql(1), ("2026-03-01 07:00:00.000000", "noop", 5)
            ).all()
    finally:
        engine.dispose()
    assert "ix_sync_tasks_claim" in " | ".join(str(r[3]) for r in plan), plan
