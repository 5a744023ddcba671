"""Indexes for the task list: each filter with the list's order (`created_at`, `id`).

The list is newest first with `id` breaking ties (its cursor is the pair); the created,
type and data-source indexes gain `id`, and the status filter (alone, with a type, with a data
source) gets indexes of its own, so a page reads only its rows at any depth.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: name -> (columns before, columns after); None: the index is new
CHANGED: dict[str, tuple[list[str] | None, list[str]]] = {
    "ix_sync_tasks_created": (["created_at"], ["created_at", "id"]),
    "ix_sync_tasks_type_created": (["task_type", "created_at"], ["task_type", "created_at", "id"]),
    "ix_sync_tasks_source_created": (
        ["data_source_id", "created_at"],
        ["data_source_id", "created_at", "id"],
    ),
    "ix_sync_tasks_status_created": (None, ["status", "created_at", "id"]),
    "ix_sync_tasks_status_type_created": (None, ["status", "task_type", "created_at", "id"]),
    "ix_sync_tasks_status_source_created": (
        None,
        ["status", "data_source_id", "created_at", "id"],
    ),
}
#: the partial indexes' WHERE on SQLite
PARTIAL = {
    "ix_sync_tasks_source_created": "data_source_id IS NOT NULL",
    "ix_sync_tasks_status_source_created": "data_source_id IS NOT NULL",
}


def _create(name: str, columns: list[str]) -> None:
    where = PARTIAL.get(name)
    op.create_index(
        name, "sync_tasks", columns, sqlite_where=sa.text(where) if where is not None else None
    )


def upgrade() -> None:
    for name, (before, after) in CHANGED.items():
        if before is not None:
            op.drop_index(name, table_name="sync_tasks")
        _create(name, after)
    _refresh_sqlite_statistics()


def _refresh_sqlite_statistics() -> None:
    """On a SQLite database that was analyzed (it has `sqlite_stat1`), analyze the task table
    again: with statistics for the old indexes and none for the new ones, the planner took a
    new status index for the claim (a sort of every pending row, measured 100-300 ms at a
    million tasks) over the claim index. Without statistics it chooses right by itself."""
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return
    analyzed = bind.exec_driver_sql(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sqlite_stat1'"
    ).first()
    if analyzed is not None:
        bind.exec_driver_sql("ANALYZE sync_tasks")


def downgrade() -> None:
    for name, (before, _) in CHANGED.items():
        op.drop_index(name, table_name="sync_tasks")
        if before is not None:
            _create(name, before)
