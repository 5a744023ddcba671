"""Operations: external-worker columns and completion-callback delivery state on sync_tasks.

Revision ID: 0004
Revises: 0002
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0004"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Timestamp = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def upgrade() -> None:
    with op.batch_alter_table("sync_tasks") as batch:
        batch.add_column(sa.Column("service", sa.String(64)))
        batch.add_column(sa.Column("service_group", sa.String(64)))
        batch.add_column(sa.Column("temp", sa.JSON))
        batch.add_column(sa.Column("callback_status", sa.String(16)))
        batch.add_column(
            sa.Column("callback_attempts", sa.Integer, nullable=False, server_default="0")
        )
        batch.add_column(sa.Column("callback_error", sa.Text))
        batch.add_column(sa.Column("callback_next_at", Timestamp))
    op.create_index(
        "ix_sync_tasks_service_claim",
        "sync_tasks",
        [
            sa.column("service"),
            sa.column("status"),
            sa.column("priority").desc(),
            sa.column("run_after"),
            sa.column("created_at"),
        ],
    )
    op.create_index("ix_sync_tasks_callback", "sync_tasks", ["callback_status", "callback_next_at"])


def downgrade() -> None:
    op.drop_index("ix_sync_tasks_callback", table_name="sync_tasks")
    op.drop_index("ix_sync_tasks_service_claim", table_name="sync_tasks")
    with op.batch_alter_table("sync_tasks") as batch:
        for name in (
            "callback_next_at",
            "callback_error",
            "callback_attempts",
            "callback_status",
            "temp",
            "service_group",
            "service",
        ):
            batch.drop_column(name)
