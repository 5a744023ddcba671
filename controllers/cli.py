"""The `syncd` command: serve, migrate, check-config, roles, and the API client commands
(`tasks`, `import`, `snapshot`; see `controllers.client`), which need no daemon settings."""

from __future__ import annotations

import argparse
import asyncio
import errno
import gc
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from controllers.client import add_client_commands, run_client

if TYPE_CHECKING:
    from aiohttp import web

    from config.settings import Settings
    from controllers.server import HttpLimits
    from controllers.systemd import Notifier

log = logging.getLogger("syncd")
STATUS_INTERVAL_S = 5.0  # how often `systemctl status` gets fresh running/queued counts
GC_YOUNG_THRESHOLD = 10_000  # container allocations between young collections (default 700)
SWITCH_INTERVAL_S = 0.0002  # how long a thread may hold the GIL while another waits (5 ms)
HTTP_DRAIN_S = 3.0  # how long requests in flight at SIGTERM get before they are cut (aiohttp: 60)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    args, unknown = build_parser().parse_known_args(argv)
    if unknown:  # said with the usage of the command they were given to, not the top level
        leaf: argparse.ArgumentParser = getattr(args, "parser", None) or build_parser()
        leaf.error(f"unrecognized arguments: {' '.join(unknown)}")
    if args.command == "roles":
        return print_roles()
    if getattr(args, "run", None) is not None:
        return run_client(args)  # client commands: no settings, no heavy imports (fast start)
    return _run_daemon_command(args)


def _run_daemon_command(args: argparse.Namespace) -> int:
    """serve, migrate, check-config: settings first, then the command."""
    from sqlalchemy.exc import SQLAlchemyError

    from config.exceptions import SettingsError
    from config.settings import load_settings
    from schedule.database import describe_db_error
    from schedule.exceptions import ScheduleError

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="syncd", description="The syncd sync-engine daemon.")
    parser.add_argument(
        "--version", action="version", version=f"syncd {syncd_version()}", help="print the version"
    )
    parser.add_argument("--config", type=Path, help="TOML settings file (or SYNCD_CONFIG)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, func, text in (
        ("serve", serve, "run the daemon"),
        ("migrate", migrate, "create or upgrade the database schema"),
        ("check-config", check_config, "validate settings and the database (changes nothing)"),
        ("roles", None, "print who may call each route (Markdown table)"),
    ):
        command = sub.add_parser(name, help=text, description=text)
        command.set_defaults(func=func, parser=command)
    add_client_commands(sub)
    return parser


def syncd_version() -> str:
    """The installed distribution's version (see `config.version`)."""
    from config.version import installed_version

    return installed_version()


def print_roles() -> int:
    """Print the role table of docs/security.md, made from the routes' own declarations and
    the task types' maintenance flags (needs no settings)."""
    from controllers.app import routes_only
    from controllers.openapi import access_table
    from controllers.roles import markdown_table
    from engine.handlers import default_registry

    maintenance = [spec.task_type for spec in default_registry() if spec.maintenance]
    print(markdown_table(access_table(routes_only()), maintenance), end="")
    return 0


def migrate(settings: Settings) -> int:
    """Upgrade the schema to the newest migration."""
    from alembic import command
    from sqlalchemy import create_engine as create_sync_engine

    from schedule.database import (
        alembic_config,
        check_server_version,
        head_revision,
        is_sqlite,
        prepare_sqlite_dir,
        sync_url,
    )

    _start_logging(settings)
    prepare_sqlite_dir(settings.database_url, settings.state_dir)
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
    """Print the effective settings (secrets hidden) and check the database schema; creates
    nothing (a SQLite file that does not exist is reported, not made)."""
    from config.settings import unknown_variables
    from schedule.database import head_revision, missing_sqlite_file, sync_url
    from schedule.exceptions import SchemaError

    for name, value in settings.model_dump().items():
        shown = "***" if value and ("token" in name or "secret" in name) else value
        if name == "database_url":
            shown = sync_url(str(value)).render_as_string(hide_password=True)
        print(f"{name} = {shown}")
    for warning in unknown_variables(os.environ):
        print(f"syncd: warning: {warning}", file=sys.stderr)
    missing = missing_sqlite_file(settings.database_url)
    if missing is not None:
        raise SchemaError(missing)
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
    from sqlalchemy import create_engine as create_sync_engine

    from schedule.database import check_server_version, describe_db_error, is_sqlite, sync_url
    from schedule.exceptions import DatabaseUnreachable, ScheduleError

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
    from schedule.database import is_sqlite, mysql_connect_args

    if is_sqlite(settings.database_url):
        return {"timeout": settings.db_timeout_s}
    return mysql_connect_args(settings.db_timeout_s, blocking=True)


def serve(settings: Settings) -> int:
    """Run until SIGTERM/SIGINT; exit 0 after a graceful stop."""
    from controllers import process
    from controllers.auth import check_exposure
    from controllers.server import HttpLimits, fit_open_file_limit
    from schedule.database import sync_url

    check_exposure(settings)
    check_port(settings)
    _start_logging(settings)
    limits = fit_open_file_limit(HttpLimits.from_settings(settings))
    logging.getLogger("alembic").setLevel(logging.WARNING)  # the schema check is not news
    logging.getLogger("apscheduler").setLevel(logging.WARNING)  # "Adding job tentatively"...
    database = sync_url(settings.database_url).render_as_string(hide_password=True)
    log.info(
        "starting syncd %s: state directory %s, database %s",
        syncd_version(),
        settings.state_dir,
        database.replace("+pysqlite", "").replace("+pymysql", ""),
        extra={"action": "start", "state_dir": str(settings.state_dir)},
    )
    process.run(
        _serve(settings, limits)
    )  # asyncio.run, without waiting for blocked threads at exit
    log.info("stopped", extra={"action": "stopped"})
    return 0


def _start_logging(settings: Settings) -> None:
    """Logging as the settings say, then a warning for each `SYNCD_*` variable that is no
    setting (a misspelt one would be ignored without a word)."""
    from config.logging import configure_logging
    from config.settings import unknown_variables

    configure_logging(settings.log_format, settings.log_level, settings.node_id)
    for warning in unknown_variables(os.environ):
        log.warning(warning, extra={"action": "settings"})


async def _serve(settings: Settings, limits: HttpLimits) -> None:
    from aiohttp import web

    from config.logging import ACCESS_LOG_FORMAT
    from controllers.app import create_app
    from controllers.keys import POOL
    from controllers.server import (
        GuardedSite,
        accept_error_handler,
        runner_options,
    )
    from controllers.systemd import Notifier

    notifier = Notifier(os.environ)
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(accept_error_handler())
    app = create_app(settings)
    runner = web.AppRunner(
        app,
        access_log_format=ACCESS_LOG_FORMAT,
        handle_signals=False,
        **runner_options(limits),
        shutdown_timeout=HTTP_DRAIN_S,
    )
    await runner.setup()  # checks the schema and starts the engine, or raises
    background: list[asyncio.Task[None]] = []
    try:
        site = GuardedSite(runner, settings.host, settings.port, limits)
        await _listen(site, settings)
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        if not app[POOL].running:
            raise RuntimeError("the engine is not running after start-up")
        tune_interpreter()
        notifier.ready()  # migrated (checked in setup), listening, engine running
        log.info(
            "ready: the dashboard is at %s",
            ", ".join(dashboard_urls(runner.addresses)),
            extra={"action": "ready"},
        )
        background = _start_notifications(notifier, app)
        await stop.wait()
        log.info("stopping", extra={"action": "stop"})
        for task in background:
            task.cancel()
        notifier.send(
            STOPPING=1, STATUS=f"stopping: draining {app[POOL].stats().running_tasks} task(s)"
        )
    finally:
        for task in background:
            task.cancel()
        await runner.cleanup()
        notifier.close()


async def _listen(site: web.BaseSite, settings: Settings) -> None:
    """Start listening; a port in use (or not ours to take) is said as such, not as a
    database error."""
    try:
        await site.start()
    except OSError as exc:
        raise _cannot_listen(exc, settings) from None


def check_port(settings: Settings) -> None:
    """Before anything starts (the engine would claim work): can the API listen where the
    settings say? The socket is closed at once; `_listen` still checks the real one."""
    import socket

    try:
        infos = socket.getaddrinfo(settings.host, settings.port, type=socket.SOCK_STREAM)
        family, kind, proto, _, address = infos[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except OSError as exc:
        raise _cannot_listen(exc, settings) from None


def _cannot_listen(exc: OSError, settings: Settings) -> Exception:
    from config.exceptions import CannotListen

    reasons = {
        errno.EADDRINUSE: "the port is already in use (another syncd, or another program:"
        " stop it or choose another SYNCD_PORT)",
        errno.EACCES: "permission denied (ports below 1024 need privileges: choose another"
        " SYNCD_PORT)",
        errno.EADDRNOTAVAIL: "the address is not one of this machine's (check SYNCD_HOST)",
    }
    reason = reasons.get(exc.errno or 0, exc.strerror or str(exc))
    return CannotListen(f"cannot listen on {settings.host}:{settings.port}: {reason}")


def dashboard_urls(addresses: Sequence[object]) -> list[str]:
    """`http://HOST:PORT/` for each listening address (a wildcard as the loopback address)."""
    urls = []
    for address in addresses:
        if not isinstance(address, tuple) or len(address) < 2:
            continue
        host, port = str(address[0]), address[1]
        host = {"0.0.0.0": "127.0.0.1", "::": "[::1]"}.get(host, host)
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        urls.append(f"http://{host}:{port}/")
    return urls


def tune_interpreter() -> None:
    """Interpreter settings for a long-running daemon, applied once it has started.

    The garbage collector: every full collection walked again the objects made at start-up
    (modules, classes, the app), which live as long as the process, and a young-generation
    threshold of 700 allocations ran hundreds of young collections a second and promoted a
    batch's short-lived rows into the old generation, triggering full collections. Start-up
    objects are frozen (`gc.freeze`, after a collection, so nothing collectable is kept) and
    young collections run every `GC_YOUNG_THRESHOLD` allocations. Cycles are still collected,
    in bigger steps. Measured: a 100,000-record import went from 3.3 s to 1.9 s of daemon CPU;
    the queue bench gained about a tenth.

    The GIL switch interval: SQLite releases the GIL inside every statement step, and the
    thread that stepped (the store's writer, an import's reader) then waits for the event
    loop to give the GIL back, which the loop does only when it blocks or after the switch
    interval, 5 ms by default. The writer spent most of its time in those waits (a
    `BEGIN IMMEDIATE` took 4 ms on average under load). At `SWITCH_INTERVAL_S` the wait is
    short and the queue bench runs about half again as fast.
    """
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)
    sys.setswitchinterval(SWITCH_INTERVAL_S)


def _start_notifications(notifier: Notifier, app: web.Application) -> list[asyncio.Task[None]]:
    """The STATUS= loop and, under a systemd watchdog, the WATCHDOG=1 loop."""
    from controllers.keys import POOL, SETTINGS, STORE
    from controllers.systemd import status_loop, watchdog_interval, watchdog_loop

    if not notifier.enabled:
        return []
    pool, store, settings = app[POOL], app[STORE], app[SETTINGS]

    async def describe() -> str:
        async with asyncio.timeout(settings.db_timeout_s):
            queued = await store.stats.queue_length()
        stats = pool.stats()
        database = "ok" if stats.database_ok else "unavailable"
        return f"running={stats.running_tasks} queued={queued} database={database}"

    tasks = [asyncio.create_task(status_loop(notifier, describe, STATUS_INTERVAL_S))]
    interval = watchdog_interval(os.environ)
    if interval is not None:
        # Healthy: the event loop runs this at all, and the engine's dispatcher is alive.
        tasks.append(asyncio.create_task(watchdog_loop(notifier, interval, lambda: pool.running)))
    return tasks


if __name__ == "__main__":
    sys.exit(main())
