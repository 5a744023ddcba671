"""Task queue: sync_tasks, sync_task_attempts, sync_task_errors.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Timestamp = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
LongText = sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "sync_tasks",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("reference", sa.String(11), nullable=False, unique=True),
        sa.Column("task_type", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("priority", sa.Integer, nullable=False, server_default="0"),
        sa.Column("data_source_id", sa.String(64)),
        sa.Column("interface_id", sa.String(64)),
        sa.Column("parameters", sa.JSON, nullable=False),
        sa.Column("progress", sa.Integer, nullable=False, server_default="0"),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("processed_rows", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("total_rows", sa.BigInteger),
        sa.Column("error_count", sa.Integer, nullable=False, server_default="0"),
        sa.Column("result", sa.JSON),
        sa.Column("error", sa.Text),
        sa.Column("attempt", sa.Integer, nullable=False, server_default="0"),
        sa.Column("max_attempts", sa.Integer, nullable=False),
        sa.Column("timeout_s", sa.Float),
        sa.Column("retry_of", sa.String(36)),
        sa.Column("dedupe_key", sa.String(255)),
        sa.Column("dedupe_active", sa.String(255), unique=True),
        sa.Column("callback_url", sa.String(2048)),
        sa.Column("run_after", Timestamp, nullable=False),
        sa.Column("cancel_requested", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("lease_owner", sa.String(128)),
        sa.Column("lease_expires_at", Timestamp),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("started_at", Timestamp),
        sa.Column("updated_at", Timestamp, nullable=False),
        sa.Column("finished_at", Timestamp),
    )
    op.create_index(
        "ix_sync_tasks_claim",
        "sync_tasks",
        [
            sa.column("status"),
            sa.column("priority").desc(),
            sa.column("run_after"),
            sa.column("created_at"),
        ],
    )
    op.create_index("ix_sync_tasks_lease", "sync_tasks", ["status", "lease_expires_at"])
    op.create_index("ix_sync_tasks_created", "sync_tasks", ["created_at"])
    op.create_index("ix_sync_tasks_type_created", "sync_tasks", ["task_type", "created_at"])
    op.create_index("ix_sync_tasks_source_created", "sync_tasks", ["data_source_id", "created_at"])
    op.create_index("ix_sync_tasks_finished", "sync_tasks", ["finished_at"])
    op.create_table(
        "sync_task_attempts",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("task_id", sa.String(36), nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("node_id", sa.String(128), nullable=False),
        sa.Column("started_at", Timestamp, nullable=False),
        sa.Column("finished_at", Timestamp),
        sa.Column("outcome", sa.String(16)),
        sa.Column("error", sa.Text),
    )
    op.create_index("ix_sync_task_attempts_task", "sync_task_attempts", ["task_id", "attempt"])
    op.create_table(
        "sync_task_errors",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("task_id", sa.String(36), nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("position", sa.BigInteger),
        sa.Column("record", sa.JSON),
        sa.Column("reason", LongText, nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
    )
    op.create_index("ix_sync_task_errors_task", "sync_task_errors", ["task_id", "id"])


def downgrade() -> None:
    op.drop_table("sync_task_errors")
    op.drop_table("sync_task_attempts")
    op.drop_table("sync_tasks")
