"""Partnumber books (seed 000): source and book tables; sync_schedules; sync_locks.

The seven partnumber tables belong to QuoteForge's schema and may already exist when syncd
shares QuoteForge's database: each is created (with its indexes) only when missing, so the
migration neither fails on nor alters an existing table.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Timestamp = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Name = sa.String(255)
Description = sa.String(10000)


def _missing(name: str) -> bool:
    return not sa.inspect(op.get_bind()).has_table(name)


def upgrade() -> None:
    _source_tables()
    _book_tables()
    op.create_table(
        "sync_schedules",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("task_type", sa.String(64), nullable=False),
        sa.Column("paused", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("last_fire_at", Timestamp),
        sa.Column("last_run_at", Timestamp),
        sa.Column("last_task_id", sa.String(36)),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("updated_at", Timestamp, nullable=False),
    )
    op.create_table(
        "sync_locks",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("locked_by", sa.String(128)),
        sa.Column("locked_at", Timestamp),
    )


def _source_tables() -> None:
    if _missing("lot"):
        op.create_table(
            "lot",
            sa.Column("lot_name", Name, primary_key=True),
            sa.Column("lot_category", sa.String(255)),
            sa.Column("description", Description),
        )
    if _missing("lot_partnumbers"):
        op.create_table(
            "lot_partnumbers",
            sa.Column("vendor", Name, primary_key=True, server_default=sa.text("''")),
            sa.Column("partnumber", Name, primary_key=True),
            sa.Column("lot_name", Name),
            sa.Column("description", Description),
            sa.Column("is_primary_pn", sa.Boolean, nullable=False, server_default=sa.true()),
        )
    if _missing("qt_lot_bundles"):
        op.create_table("qt_lot_bundles", sa.Column("bundle_lot_name", Name, primary_key=True))
    if _missing("qt_lot_bundle_items"):
        op.create_table(
            "qt_lot_bundle_items",
            sa.Column("bundle_lot_name", Name, primary_key=True),
            sa.Column("lot_name", Name, primary_key=True),
            sa.Column("qty", sa.Integer, nullable=False, server_default="1"),
        )
    if _missing("qt_vendor_partnumber_seen"):
        op.create_table(
            "qt_vendor_partnumber_seen",
            sa.Column("partnumber", Name, primary_key=True),
            sa.Column("vendor", Name),
            sa.Column("is_ignored", sa.Boolean, nullable=False, server_default=sa.false()),
            sa.Column("is_pattern", sa.Boolean, nullable=False, server_default=sa.false()),
            sa.Column("source_type", sa.String(64)),
            sa.Column("first_seen_at", Timestamp),
            sa.Column("last_seen_at", Timestamp),
        )
        op.create_index(
            "ix_qt_vendor_partnumber_seen_ignored",
            "qt_vendor_partnumber_seen",
            ["is_ignored", "is_pattern"],
        )


def _book_tables() -> None:
    if _missing("qt_partnumber_books"):
        op.create_table(
            "qt_partnumber_books",
            sa.Column("id", BigId, primary_key=True, autoincrement=True),
            sa.Column("version", sa.String(30), nullable=False, unique=True),
            sa.Column("is_active", sa.Boolean, nullable=False, server_default=sa.false()),
            sa.Column("created_at", Timestamp, nullable=False),
            sa.Column("item_count", sa.Integer, nullable=False, server_default="0"),
            sa.Column("task_id", sa.String(36)),
        )
        op.create_index("ix_qt_partnumber_books_active", "qt_partnumber_books", ["is_active"])
        op.create_index("ix_qt_partnumber_books_created", "qt_partnumber_books", ["created_at"])
    if _missing("qt_partnumber_book_items"):
        op.create_table(
            "qt_partnumber_book_items",
            sa.Column("id", BigId, primary_key=True, autoincrement=True),
            sa.Column("book_id", BigId, nullable=False),
            sa.Column("partnumber", Name, nullable=False),
            sa.Column("vendor", Name, nullable=False, server_default=sa.text("''")),
            sa.Column("lot_name", Name, nullable=False),
            sa.Column("qty", sa.Integer, nullable=False, server_default="1"),
            sa.Column("is_primary_pn", sa.Boolean, nullable=False, server_default=sa.true()),
            sa.Column("description", Description),
        )
        op.create_index(
            "ix_qt_partnumber_book_items_book_pn",
            "qt_partnumber_book_items",
            ["book_id", "partnumber"],
        )


def downgrade() -> None:
    # Drops the partnumber tables with their data, QuoteForge's included if they were shared.
    for name in (
        "sync_locks",
        "sync_schedules",
        "qt_partnumber_book_items",
        "qt_partnumber_books",
        "qt_vendor_partnumber_seen",
        "qt_lot_bundle_items",
        "qt_lot_bundles",
        "lot_partnumbers",
        "lot",
    ):
        op.drop_table(name)
