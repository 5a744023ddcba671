"""The tables (SQLAlchemy Core). Alembic migrations must produce exactly this schema.

`sync_tasks` is built from the task's field definition (`schedule.task.TaskRecord`); its
indexes are declared here.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    ColumnElement,
    Double,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
    false,
    func,
    literal_column,
    text,
    true,
)

from schedule.columns import BigId, LongText, Timestamp, table_columns
from schedule.definition import ScheduleRecord
from schedule.task import TaskRecord, TaskStatus

metadata = MetaData()

sync_tasks = Table(
    "sync_tasks",
    metadata,
    *table_columns(TaskRecord),
)

# The task list is newest first (`created_at DESC, id DESC`, `id` breaking ties for the cursor):
# each of its filters has an index that ends in that order, so a page, at any depth through
# the cursor, reads only its own rows, and the capped count only the index (both dialects;
# tests/integration/test_list_plans.py holds the plans). A type with a data source uses the
# data source's indexes.
Index("ix_sync_tasks_created", sync_tasks.c.created_at, sync_tasks.c.id)
Index(
    "ix_sync_tasks_type_created", sync_tasks.c.task_type, sync_tasks.c.created_at, sync_tasks.c.id
)
Index("ix_sync_tasks_status_created", sync_tasks.c.status, sync_tasks.c.created_at, sync_tasks.c.id)
Index(
    "ix_sync_tasks_status_type_created",
    sync_tasks.c.status,
    sync_tasks.c.task_type,
    sync_tasks.c.created_at,
    sync_tasks.c.id,
)


# Indexes that only some rows need are partial on SQLite (`sqlite_where`; MySQL has no partial
# indexes and keeps them whole): a row enters the claim index while pending, the lease index
# while running, the finished index once finished. Each status change then writes two index
# entries instead of rewriting every status-led index, which was most of the SQL time per task
# (measured). Queries that must use them compare `status` with a literal (`status_is`): SQLite
# matches a partial index only when the query implies its WHERE, which an inline value always
# does. (A bound value can too: the task list, which must not read them, compares with a cast
# value instead, `schedule.store.shared.ListStatus`.)
def status_is(status: TaskStatus) -> ColumnElement[bool]:
    """`sync_tasks.status = '<status>'` with the value inline, so that SQLite can use the
    partial indexes below (a bound parameter never implies their WHERE)."""
    return sync_tasks.c.status == literal_column(f"'{status.value}'", String)


PENDING_ONLY = text("status = 'pending'")
RUNNING_ONLY = text("status = 'running'")
Index(
    "ix_sync_tasks_lease",
    sync_tasks.c.status,
    sync_tasks.c.lease_expires_at,
    sqlite_where=RUNNING_ONLY,
)
Index(
    "ix_sync_tasks_source_created",
    sync_tasks.c.data_source_id,
    sync_tasks.c.created_at,
    sync_tasks.c.id,
    sqlite_where=text("data_source_id IS NOT NULL"),
)
Index(
    "ix_sync_tasks_status_source_created",
    sync_tasks.c.status,
    sync_tasks.c.data_source_id,
    sync_tasks.c.created_at,
    sync_tasks.c.id,
    sqlite_where=text("data_source_id IS NOT NULL"),
)
Index(
    "ix_sync_tasks_finished",
    sync_tasks.c.finished_at,
    sqlite_where=text("finished_at IS NOT NULL"),
)

# Claim order is priority DESC, run_after, created_at: the index walks it in that order, so a
# MariaDB claim locks only the rows it takes (no filesort over every pending row).
Index(
    "ix_sync_tasks_claim",
    sync_tasks.c.status,
    sync_tasks.c.priority.desc(),
    sync_tasks.c.run_after,
    sync_tasks.c.created_at,
    sqlite_where=PENDING_ONLY,
)

# A schedule's tasks: one task per fire, whichever daemon claims it (unique); the overlap
# policies' "is the previous task of this schedule unfinished" and the task list's
# `schedule_id` filter. Only scheduled tasks have entries on SQLite (partial).
SCHEDULED_ONLY = text("schedule_id IS NOT NULL")
Index(
    "ux_sync_tasks_schedule_fire",
    sync_tasks.c.schedule_id,
    sync_tasks.c.scheduled_for,
    unique=True,
    sqlite_where=SCHEDULED_ONLY,
)
Index(
    "ix_sync_tasks_schedule_status",
    sync_tasks.c.schedule_id,
    sync_tasks.c.status,
    sqlite_where=SCHEDULED_ONLY,
)

# The task list's search (`q`, a prefix of a reference, an id or a dedupe key, ASCII case
# ignored): the reference and the id are searched through their unique indexes, the dedupe key
# through this one. SQLite compares text with case, so its index holds the key in lower case
# (only tasks with a key); MariaDB's collation ignores case, so the key itself.
Index(
    "ix_sync_tasks_dedupe_search",
    func.lower(sync_tasks.c.dedupe_key),
    sqlite_where=text("dedupe_key IS NOT NULL"),
).ddl_if(dialect="sqlite")
Index("ix_sync_tasks_dedupe_key", sync_tasks.c.dedupe_key).ddl_if(dialect="mysql")

sync_task_attempts = Table(
    "sync_task_attempts",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("task_id", String(36), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("node_id", String(128), nullable=False),
    Column("started_at", Timestamp, nullable=False),
    Column("finished_at", Timestamp),
    Column("outcome", String(16)),
    Column("error", Text),
    Index("ix_sync_task_attempts_task", "task_id", "attempt"),
)

# Finished tasks counted per hour of their finish, task type and outcome (completed, failed,
# cancelled), with the durations of those that started: what the statistics and the throughput
# chart read, whatever the size of `sync_tasks`, and what outlives task retention. Kept by the
# transitions that finish a task, in their transaction (`schedule.store.rollups`).
sync_task_rollups = Table(
    "sync_task_rollups",
    metadata,
    Column("hour", Timestamp, primary_key=True),
    Column("task_type", String(64), primary_key=True),
    Column("outcome", String(16), primary_key=True),
    Column("tasks", BigInteger, nullable=False),
    Column("timed", BigInteger, nullable=False),
    Column("duration_s", Double, nullable=False),
)

sync_task_errors = Table(
    "sync_task_errors",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("task_id", String(36), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("position", BigInteger),
    Column("record", JSON),
    Column("reason", LongText, nullable=False),
    Column("created_at", Timestamp, nullable=False),
    Index("ix_sync_task_errors_task", "task_id", "id"),
)

# ---- partnumber books (seed 000) and periodic schedules -----------------------------------
#
# Source and book tables carry the names and columns QuoteForge reads (DESIGN.md, Partnumber
# books); do not rename them. Lot names and partnumbers are VARCHAR(255) so that the composite
# keys stay within InnoDB's 3072-byte index limit in utf8mb4.

Name = String(255)
Description = String(10000)

lot = Table(
    "lot",
    metadata,
    Column("lot_name", Name, primary_key=True),
    Column("lot_category", String(255)),
    Column("description", Description),
)

lot_partnumbers = Table(
    "lot_partnumbers",
    metadata,
    Column("vendor", Name, primary_key=True, server_default=text("''")),
    Column("partnumber", Name, primary_key=True),
    Column("lot_name", Name),
    Column("description", Description),
    Column("is_primary_pn", Boolean, nullable=False, server_default=true()),
)

qt_lot_bundles = Table(
    "qt_lot_bundles",
    metadata,
    Column("bundle_lot_name", Name, primary_key=True),
)

qt_lot_bundle_items = Table(
    "qt_lot_bundle_items",
    metadata,
    Column("bundle_lot_name", Name, primary_key=True),
    Column("lot_name", Name, primary_key=True),
    Column("qty", Integer, nullable=False, server_default="1"),
)

qt_vendor_partnumber_seen = Table(
    "qt_vendor_partnumber_seen",
    metadata,
    Column("partnumber", Name, primary_key=True),
    Column("vendor", Name),
    Column("is_ignored", Boolean, nullable=False, server_default=false()),
    Column("is_pattern", Boolean, nullable=False, server_default=false()),
    Column("source_type", String(64)),
    Column("first_seen_at", Timestamp),
    Column("last_seen_at", Timestamp),
    Index("ix_qt_vendor_partnumber_seen_ignored", "is_ignored", "is_pattern"),
)

qt_partnumber_books = Table(
    "qt_partnumber_books",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("version", String(30), nullable=False, unique=True),
    Column("is_active", Boolean, nullable=False, server_default=false()),
    Column("created_at", Timestamp, nullable=False),
    Column("item_count", Integer, nullable=False, server_default="0"),
    Column("task_id", String(36)),
    Index("ix_qt_partnumber_books_active", "is_active"),
    Index("ix_qt_partnumber_books_created", "created_at"),
)

qt_partnumber_book_items = Table(
    "qt_partnumber_book_items",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("book_id", BigId, nullable=False),
    Column("partnumber", Name, nullable=False),
    Column("vendor", Name, nullable=False, server_default=text("''")),
    Column("lot_name", Name, nullable=False),
    Column("qty", Integer, nullable=False, server_default="1"),
    Column("is_primary_pn", Boolean, nullable=False, server_default=true()),
    Column("description", Description),
    Index("ix_qt_partnumber_book_items_book_pn", "book_id", "partnumber"),
)

# Schedules (schedule.definition): the scheduler finds the due ones by `next_fire_at`, the
# fires waiting behind an unfinished task (overlap `queue_one`) by `queued_fire_at`.
sync_schedules = Table(
    "sync_schedules",
    metadata,
    *table_columns(ScheduleRecord),
    Index("ix_sync_schedules_due", "paused", "next_fire_at"),
    Index("ix_sync_schedules_queued", "queued_fire_at"),
)

# Named cluster-wide locks: a transaction that must not run on two nodes at once takes its row
# with SELECT ... FOR UPDATE (MySQL); on SQLite `BEGIN IMMEDIATE` already serialises writers.
sync_locks = Table(
    "sync_locks",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("locked_by", String(128)),
    Column("locked_at", Timestamp),
)

# Claim order within a service, like ix_sync_tasks_claim: the claim reads only that service's
# pending tasks, however long the rest of the queue is.
Index(
    "ix_sync_tasks_service_claim",
    sync_tasks.c.service,
    sync_tasks.c.status,
    sync_tasks.c.priority.desc(),
    sync_tasks.c.run_after,
    sync_tasks.c.created_at,
    sqlite_where=text("service IS NOT NULL AND status = 'pending'"),
)
Index(
    "ix_sync_tasks_callback",
    sync_tasks.c.callback_status,
    sync_tasks.c.callback_next_at,
    sqlite_where=text("callback_status IS NOT NULL"),
)

# ---- imports and data-source syncs -----------------------------------------------------------
# `stock_log`: the valid rows of each stock file import (seed 000), one row per sheet row, kept
# with the task and the sheet row number they came from. `tools`: the target of seed 002's record
# import, upserted by `tool_id`. `sync_data_sources`: where `full_sync`/`incremental_sync` read
# from and what they write to; `sync_watermarks`: the highest watermark an incremental sync of a
# source (and interface) has committed.

stock_log = Table(
    "stock_log",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("task_id", String(36), nullable=False),
    Column("sheet_row", Integer, nullable=False),
    Column("partnumber", Name, nullable=False),
    Column("vendor", Name, nullable=False, server_default=text("''")),
    Column("description", Description),
    Column("qty", Numeric(18, 4), nullable=False),
    Column("price", Numeric(18, 4)),
    Column("warehouse", String(255)),
    Column("imported_at", Timestamp, nullable=False),
    Index("ix_stock_log_task_row", "task_id", "sheet_row"),
    Index("ix_stock_log_partnumber", "partnumber"),
)

tools = Table(
    "tools",
    metadata,
    Column("tool_id", String(64), primary_key=True),
    Column("tool_name", String(255), nullable=False),
    Column("category", String(255)),
    Column("description", Text),
    Column("features", JSON, nullable=False),
    Column("url", String(2048)),
    Column("task_id", String(36)),
    Column("updated_at", Timestamp, nullable=False),
)

sync_data_sources = Table(
    "sync_data_sources",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(255), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("connection", JSON, nullable=False),
    Column("target_table", String(255), nullable=False),
    Column("key_columns", JSON, nullable=False),
    Column("column_mapping", JSON, nullable=False),
    Column("watermark_column", String(255)),
    Column("delete_missing", Boolean, nullable=False, server_default=false()),
    Column("interfaces", JSON, nullable=False),
    Column("batch_size", Integer, nullable=False, server_default="1000"),
    Column("created_at", Timestamp, nullable=False),
    Column("updated_at", Timestamp, nullable=False),
)

sync_watermarks = Table(
    "sync_watermarks",
    metadata,
    Column("data_source_id", String(64), primary_key=True),
    Column("interface_id", String(64), primary_key=True, server_default=text("''")),
    Column("value", JSON),
    Column("task_id", String(36)),
    Column("updated_at", Timestamp, nullable=False),
)

# The daemons sharing this database: each writes its row at start and on every heartbeat, and
# says when it stopped. What each runs is in `sync_tasks` (`lease_owner`).
sync_nodes = Table(
    "sync_nodes",
    metadata,
    Column("node_id", String(128), primary_key=True),
    Column("version", String(64), nullable=False),
    Column("started_at", Timestamp, nullable=False),
    Column("heartbeat_at", Timestamp, nullable=False),
    Column("stopped_at", Timestamp),
    Column("slots", Integer, nullable=False),
    Index("ix_sync_nodes_heartbeat", "heartbeat_at"),
)
