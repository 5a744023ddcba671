"""An index for the task list's search by dedupe key (`q`).

The search (a prefix of a reference, an id or a dedupe key, ASCII case ignored) read every
task: the dedupe key had no index, so the OR of the three could not use the other two either.
SQLite compares text with case, so its index holds `lower(dedupe_key)` for the tasks that have
one; MariaDB's collation ignores case, so its index is on the key itself.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.create_index(
            "ix_sync_tasks_dedupe_search",
            "sync_tasks",
            [sa.text("lower(dedupe_key)")],
            sqlite_where=sa.text("dedupe_key IS NOT NULL"),
        )
    else:
        op.create_index("ix_sync_tasks_dedupe_key", "sync_tasks", ["dedupe_key"])


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.drop_index("ix_sync_tasks_dedupe_search", table_name="sync_tasks")
    else:
        op.drop_index("ix_sync_tasks_dedupe_key", table_name="sync_tasks")
