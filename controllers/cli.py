"""The `syncd` command: serve, migrate, check-config."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from aiohttp import web
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy.exc import SQLAlchemyError

from config.exceptions import SettingsError
from config.logging import ACCESS_LOG_FORMAT, configure_logging
from config.settings import Settings, load_settings
from controllers.app import create_app
from controllers.systemd import Notifier, watchdog_interval, watchdog_loop
from schedule.database import (
    alembic_config,
    check_server_version,
    describe_db_error,
    ensure_sqlite_dir,
    head_revision,
    is_sqlite,
    mysql_connect_args,
    sync_url,
)
from schedule.exceptions import DatabaseUnreachable, ScheduleError, SchemaError

log = logging.getLogger("syncd")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    args = _parser().parse_args(argv)
    try:
        settings = load_settings(args.config)
    except SettingsError as exc:
        print(f"syncd: bad setting: {exc}", file=sys.stderr)
        return 2
    try:
        code: int = args.func(settings)
        return code
    except (ScheduleError, SettingsError) as exc:
        print(f"syncd: {exc}", file=sys.stderr)
        return 1
    except (SQLAlchemyError, OSError) as exc:
        print(f"syncd: {describe_db_error(exc, settings.database_url)}", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="syncd", description="The syncd sync-engine daemon.")
    parser.add_argument("--config", type=Path, help="TOML settings file (or SYNCD_CONFIG)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="run the daemon").set_defaults(func=serve)
    sub.add_parser("migrate", help="create or upgrade the database schema").set_defaults(
        func=migrate
    )
    sub.add_parser("check-config", help="validate settings and the database").set_defaults(
        func=check_config
    )
    return parser


def migrate(settings: Settings) -> int:
    """Upgrade the schema to the newest migration."""
    from alembic import command

    configure_logging(settings.log_format, settings.log_level, settings.node_id)
    ensure_sqlite_dir(settings.database_url)
    cfg = alembic_config(settings.database_url)
    engine = create_sync_engine(
        sync_url(settings.database_url), connect_args=_connect_args(settings)
    )
    try:
        with engine.begin() as conn:
            if not is_sqlite(settings.database_url):
                check_server_version(str(conn.exec_driver_sql("SELECT VERSION()").scalar_one()))
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
    finally:
        engine.dispose()
    log.info("database migrated to %s", head_revision(settings.database_url))
    return 0


def check_config(settings: Settings) -> int:
    """Print the effective settings (secrets hidden) and check the database schema."""
    for name, value in settings.model_dump().items():
        shown = "***" if value and ("token" in name or "secret" in name) else value
        if name == "database_url":
            shown = sync_url(str(value)).render_as_string(hide_password=True)
        print(f"{name} = {shown}")
    current = _current_heads(settings)
    head = head_revision(settings.database_url)
    if tuple(current) != (head,):
        at = ", ".join(current) or "nothing"
        raise SchemaError(f"database schema is at {at}, needs {head}: run `syncd migrate`")
    print(f"database: reachable, schema at {head}")
    return 0


def _current_heads(settings: Settings) -> tuple[str, ...]:
    """The schema revision of the database, after checking the server can run syncd."""
    from alembic.runtime.migration import MigrationContext

    engine = create_sync_engine(
        sync_url(settings.database_url), connect_args=_connect_args(settings)
    )
    try:
        with engine.connect() as conn:
            if not is_sqlite(settings.database_url):
                check_server_version(str(conn.exec_driver_sql("SELECT VERSION()").scalar_one()))
            return tuple(MigrationContext.configure(conn).get_current_heads())
    except ScheduleError:
        raise
    except Exception as exc:  # any driver or protocol failure becomes one line
        raise DatabaseUnreachable(describe_db_error(exc, settings.database_url)) from None
    finally:
        engine.dispose()


def _connect_args(settings: Settings) -> dict[str, object]:
    if is_sqlite(settings.database_url):
        return {"timeout": settings.db_timeout_s}
    return mysql_connect_args(settings.db_timeout_s, blocking=True)


def serve(settings: Settings) -> int:
    """Run until SIGTERM/SIGINT; exit 0 after a graceful stop."""
    configure_logging(settings.log_format, settings.log_level, settings.node_id)
    asyncio.run(_serve(settings))
    return 0


async def _serve(settings: Settings) -> None:
    notifier = Notifier(os.environ)
    app = create_app(settings)
    runner = web.AppRunner(app, access_log_format=ACCESS_LOG_FORMAT, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.host, settings.port)
        await site.start()
        log.info("listening on %s", ", ".join(str(a) for a in runner.addresses))
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        notifier.ready()
        watchdog = _start_watchdog(notifier, app)
        await stop.wait()
        log.info("stopping", extra={"action": "stop"})
        notifier.stopping()
        if watchdog is not None:
            watchdog.cancel()
    finally:
        await runner.cleanup()
        notifier.close()


def _start_watchdog(notifier: Notifier, app: web.Application) -> asyncio.Task[None] | None:
    from controllers.keys import ENGINE

    interval = watchdog_interval(os.environ)
    if interval is None or not notifier.enabled:
        return None
    engine = app[ENGINE]
    return asyncio.create_task(watchdog_loop(notifier, interval, lambda: engine.running))


if __name__ == "__main__":
    sys.exit(main())
