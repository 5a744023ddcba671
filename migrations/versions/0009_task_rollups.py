"""The statistics' rollups: finished tasks per hour, task type and outcome, filled for the
tasks that finished before (`schedule.store.rollups`).

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from schedule.columns import Timestamp
from schedule.store.rollups import fill_statements

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "sync_task_rollups",
        sa.Column("hour", Timestamp, nullable=False),
        sa.Column("task_type", sa.String(64), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("tasks", sa.BigInteger, nullable=False),
        sa.Column("timed", sa.BigInteger, nullable=False),
        sa.Column("duration_s", sa.Double, nullable=False),
        sa.PrimaryKeyConstraint("hour", "task_type", "outcome"),
    )
    bind = op.get_bind()
    for statement in fill_statements(bind.dialect.name):
        bind.execute(statement)


def downgrade() -> None:
    op.drop_table("sync_task_rollups")
