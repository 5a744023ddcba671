"""The daemons sharing the database: sync_nodes (start, version, heartbeat, slots).

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Timestamp = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def upgrade() -> None:
    op.create_table(
        "sync_nodes",
        sa.Column("node_id", sa.String(128), primary_key=True),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("started_at", Timestamp, nullable=False),
        sa.Column("heartbeat_at", Timestamp, nullable=False),
        sa.Column("stopped_at", Timestamp),
        sa.Column("slots", sa.Integer, nullable=False),
    )
    op.create_index("ix_sync_nodes_heartbeat", "sync_nodes", ["heartbeat_at"])


def downgrade() -> None:
    op.drop_index("ix_sync_nodes_heartbeat", table_name="sync_nodes")
    op.drop_table("sync_nodes")
