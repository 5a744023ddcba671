"""Partial task indexes on SQLite: each status-led index holds only the rows it serves.

The claim index keeps pending rows, the lease index running rows, the finished index finished
rows; the data-source and callback indexes only rows that have one. A status change then writes
two index entries instead of rewriting every status-led index (most of the SQL time per task
on the queue's hot path). MySQL has no partial indexes: there nothing changes.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# name -> (columns, the partial index's WHERE); "x DESC" is a descending column
INDEXES: dict[str, tuple[list[str], str]] = {
    "ix_sync_tasks_claim": (
        ["status", "priority DESC", "run_after", "created_at"],
        "status = 'pending'",
    ),
    "ix_sync_tasks_lease": (["status", "lease_expires_at"], "status = 'running'"),
    "ix_sync_tasks_source_created": (
        ["data_source_id", "created_at"],
        "data_source_id IS NOT NULL",
    ),
    "ix_sync_tasks_finished": (["finished_at"], "finished_at IS NOT NULL"),
    "ix_sync_tasks_service_claim": (
        ["service", "status", "priority DESC", "run_after", "created_at"],
        "service IS NOT NULL AND status = 'pending'",
    ),
    "ix_sync_tasks_callback": (
        ["callback_status", "callback_next_at"],
        "callback_status IS NOT NULL",
    ),
}


def _columns(names: list[str]) -> list[sa.ColumnElement[object] | str]:
    return [sa.column(n.removesuffix(" DESC")).desc() if n.endswith(" DESC") else n for n in names]


def _rebuild(partial: bool) -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for name, (columns, where) in INDEXES.items():
        op.drop_index(name, table_name="sync_tasks")
        op.create_index(
            name,
            "sync_tasks",
            _columns(columns),
            sqlite_where=sa.text(where) if partial else None,
        )


def upgrade() -> None:
    _rebuild(partial=True)


def downgrade() -> None:
    _rebuild(partial=False)
