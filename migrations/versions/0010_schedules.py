"""User-defined schedules: the schedule's definition and state; a task's schedule and fire.

`sync_schedules` gains the task template, the trigger and its zone, bounds, jitter, the overlap
and catch-up policies, the pause note, where it is declared and the scheduler's state (next
fire, a queued fire, the last failure). `sync_tasks` gains `schedule_id` and `scheduled_for`,
unique together (one task per fire), and an index for "the schedule's unfinished tasks".

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Timestamp = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
SCHEDULED_ONLY = sa.text("schedule_id IS NOT NULL")

# name -> type of the columns sync_schedules gains (all NULL-able)
SCHEDULE_COLUMNS: list[tuple[str, sa.types.TypeEngine[Any]]] = [
    ("name", sa.String(255)),
    ("origin", sa.String(16)),
    ("trigger", sa.JSON()),
    ("timezone", sa.String(64)),
    ("parameters", sa.JSON()),
    ("priority", sa.Integer()),
    ("data_source_id", sa.String(64)),
    ("interface_id", sa.String(64)),
    ("max_attempts", sa.Integer()),
    ("timeout_s", sa.Float()),
    ("start_at", Timestamp),
    ("end_at", Timestamp),
    ("jitter_s", sa.Float()),
    ("overlap", sa.String(16)),
    ("catch_up", sa.String(16)),
    ("catch_up_window_s", sa.Float()),
    ("pause_note", sa.Text()),
    ("next_fire_at", Timestamp),
    ("queued_fire_at", Timestamp),
    ("last_error", sa.Text()),
    ("last_error_at", Timestamp),
]


def upgrade() -> None:
    with op.batch_alter_table("sync_schedules") as batch:
        for name, type_ in SCHEDULE_COLUMNS:
            batch.add_column(sa.Column(name, type_))
    op.create_index("ix_sync_schedules_due", "sync_schedules", ["paused", "next_fire_at"])
    op.create_index("ix_sync_schedules_queued", "sync_schedules", ["queued_fire_at"])
    with op.batch_alter_table("sync_tasks") as batch:
        batch.add_column(sa.Column("schedule_id", sa.String(64)))
        batch.add_column(sa.Column("scheduled_for", Timestamp))
    op.create_index(
        "ux_sync_tasks_schedule_fire",
        "sync_tasks",
        ["schedule_id", "scheduled_for"],
        unique=True,
        sqlite_where=SCHEDULED_ONLY,
    )
    op.create_index(
        "ix_sync_tasks_schedule_status",
        "sync_tasks",
        ["schedule_id", "status"],
        sqlite_where=SCHEDULED_ONLY,
    )


def downgrade() -> None:
    op.drop_index("ix_sync_tasks_schedule_status", table_name="sync_tasks")
    op.drop_index("ux_sync_tasks_schedule_fire", table_name="sync_tasks")
    with op.batch_alter_table("sync_tasks") as batch:
        batch.drop_column("scheduled_for")
        batch.drop_column("schedule_id")
    op.drop_index("ix_sync_schedules_queued", table_name="sync_schedules")
    op.drop_index("ix_sync_schedules_due", table_name="sync_schedules")
    with op.batch_alter_table("sync_schedules") as batch:
        for name, _ in reversed(SCHEDULE_COLUMNS):
            batch.drop_column(name)
