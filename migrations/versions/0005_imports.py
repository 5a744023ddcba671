"""Imports and data-source syncs: stock_log, tools, sync_data_sources, sync_watermarks.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Timestamp = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "stock_log",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("task_id", sa.String(36), nullable=False),
        sa.Column("sheet_row", sa.Integer, nullable=False),
        sa.Column("partnumber", sa.String(255), nullable=False),
        sa.Column("vendor", sa.String(255), nullable=False, server_default=sa.text("''")),
        sa.Column("description", sa.String(10000)),
        sa.Column("qty", sa.Numeric(18, 4), nullable=False),
        sa.Column("price", sa.Numeric(18, 4)),
        sa.Column("warehouse", sa.String(255)),
        sa.Column("imported_at", Timestamp, nullable=False),
    )
    op.create_index("ix_stock_log_task_row", "stock_log", ["task_id", "sheet_row"])
    op.create_index("ix_stock_log_partnumber", "stock_log", ["partnumber"])
    op.create_table(
        "tools",
        sa.Column("tool_id", sa.String(64), primary_key=True),
        sa.Column("tool_name", sa.String(255), nullable=False),
        sa.Column("category", sa.String(255)),
        sa.Column("description", sa.Text),
        sa.Column("features", sa.JSON, nullable=False),
        sa.Column("url", sa.String(2048)),
        sa.Column("task_id", sa.String(36)),
        sa.Column("updated_at", Timestamp, nullable=False),
    )
    op.create_table(
        "sync_data_sources",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("connection", sa.JSON, nullable=False),
        sa.Column("target_table", sa.String(255), nullable=False),
        sa.Column("key_columns", sa.JSON, nullable=False),
        sa.Column("column_mapping", sa.JSON, nullable=False),
        sa.Column("watermark_column", sa.String(255)),
        sa.Column("delete_missing", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("interfaces", sa.JSON, nullable=False),
        sa.Column("batch_size", sa.Integer, nullable=False, server_default="1000"),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("updated_at", Timestamp, nullable=False),
    )
    op.create_table(
        "sync_watermarks",
        sa.Column("data_source_id", sa.String(64), primary_key=True),
        sa.Column("interface_id", sa.String(64), primary_key=True, server_default=sa.text("''")),
        sa.Column("value", sa.JSON),
        sa.Column("task_id", sa.String(36)),
        sa.Column("updated_at", Timestamp, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("sync_watermarks")
    op.drop_table("sync_data_sources")
    op.drop_table("tools")
    op.drop_index("ix_stock_log_partnumber", table_name="stock_log")
    op.drop_index("ix_stock_log_task_row", table_name="stock_log")
    op.drop_table("stock_log")
