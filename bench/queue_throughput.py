"""Queue benchmark: syncd vs Huey, idle pickup latency, several daemons on one MariaDB.

Run `python -m bench.queue_throughput` (or `make bench`). Three parts, each optional:

* throughput: N `noop` tasks end-to-end (enqueue + run + result written) through syncd's
  `SyncEngine` on a SQLite file, and the same N no-op tasks through Huey's `SqliteHuey` with 2
  worker threads, in the same run, both in WAL mode with `synchronous=NORMAL` (Huey's
  `SqliteStorage` leaves `synchronous` at SQLite's default FULL unless told; we tell it NORMAL,
  which is what syncd uses). Prints both rates and the ratio (target: syncd >= 3x Huey).
* latency: a real `syncd serve` on SQLite, idle; one task at a time submitted over HTTP on
  loopback; submit-to-start latency is the task's `started_at` (set by the claim) minus the wall
  clock just before the POST. Prints p50/p99 (targets 5 ms / 20 ms) and the daemon's CPU use over
  an idle period afterwards (no busy polling: next to nothing).
* mariadb: 1 and then 3 `syncd serve` daemons on one MariaDB database, N `noop` tasks created
  through the batch API, tasks/s for each and the ratio, and a check that every task ran once.
  `--mariadb auto` starts a private server (bench/mariadb.py); `--mariadb URL` uses a database
  the benchmark may empty.

Not run by the test suite (tests/integration/test_bench_smoke.py runs it with tiny counts so it
cannot rot). Figures land on stdout; nothing here is timed by pytest.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy import text

from bench.daemon import Daemon
from config.settings import Settings
from controllers.cli import tune_interpreter
from engine.engine import SyncEngine
from engine.handlers import default_registry
from schedule.database import alembic_config, create_engine, sync_url
from schedule.events import EventBus, EventKind, TaskEvent
from schedule.records import TaskRequest
from schedule.service import ScheduleService
from schedule.store import connect
from schedule.stores import open_stores

BATCH = 500


def migrate(url: str) -> None:
    """Bring a database to the newest schema (Alembic, in this process)."""
    from alembic import command

    cfg = alembic_config(url)
    engine = create_sync_engine(sync_url(url))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
    engine.dispose()


# ---- throughput: syncd engine vs Huey ------------------------------------------------------


async def _syncd_run(settings: Settings, count: int) -> float:
    db = connect(await asyncio.to_thread(create_engine, settings))
    stores = open_stores(db)
    bus = EventBus()
    pool = SyncEngine(stores, default_registry(), settings, bus=bus)
    service = ScheduleService(stores.tasks, pool.registry, settings, pool, bus)
    done = asyncio.Event()
    finished = 0

    def on_finished(event: TaskEvent) -> None:
        nonlocal finished
        finished += 1
        if finished >= count:
            done.set()

    bus.subscribe(TaskEvent, [EventKind.FINISHED], on_finished)
    await pool.start()
    try:
        started = time.perf_counter()
        for offset in range(0, count, BATCH):
            size = min(BATCH, count - offset)
            await service.create_many([TaskRequest("noop") for _ in range(size)])
        await done.wait()
        elapsed = time.perf_counter() - started
    finally:
        await pool.stop()
        await db.dispose()
    return elapsed


def bench_syncd(count: int, concurrency: int, workdir: Path) -> float:
    """Seconds for `count` noop tasks through the engine on a fresh SQLite file."""
    url = f"sqlite:///{workdir / 'syncd.db'}"
    migrate(url)
    settings = Settings(
        database_url=url,
        state_dir=workdir,
        concurrency=concurrency,
        log_level="WARNING",
        node_id="bench",
    )
    elapsed = asyncio.run(_syncd_run(settings, count))
    _check_sqlite(url, count)
    return elapsed


def _check_sqlite(url: str, count: int) -> None:
    engine = create_sync_engine(sync_url(url))
    with engine.connect() as conn:
        done = conn.execute(
            text("SELECT COUNT(*) FROM sync_tasks WHERE status='completed' AND attempt=1")
        ).scalar_one()
    engine.dispose()
    if done != count:
        raise SystemExit(f"syncd completed {done} of {count} tasks")


def bench_huey(count: int, workers: int, workdir: Path) -> float:
    """Seconds for `count` no-op tasks through SqliteHuey with `workers` threads."""
    from huey import SqliteHuey, signals
    from huey.storage import SqliteStorage

    class NormalSyncStorage(SqliteStorage):  # type: ignore[misc]
        """Huey's storage at syncd's durability: WAL (Huey's default) and synchronous=NORMAL."""

        def _create_connection(self) -> Any:
            conn = super()._create_connection()
            conn.execute("pragma synchronous=NORMAL")
            return conn

    huey = SqliteHuey(
        "bench", filename=str(workdir / "huey.db"), storage_class=NormalSyncStorage, results=False
    )
    lock = threading.Lock()
    finished = 0
    done = threading.Event()

    @huey.signal(signals.SIGNAL_COMPLETE)  # type: ignore[untyped-decorator]
    def _count(signal: str, task: Any) -> None:
        nonlocal finished
        with lock:
            finished += 1
            if finished >= count:
                done.set()

    @huey.task()  # type: ignore[untyped-decorator]
    def noop() -> None:
        return None

    consumer = huey.create_consumer(
        workers=workers,
        worker_type="thread",
        periodic=False,
        initial_delay=0.001,
        backoff=1.1,
        max_delay=0.01,
    )
    consumer.start()
    try:
        started = time.perf_counter()
        for _ in range(count):
            noop()
        if not done.wait(timeout=max(60.0, count / 20)):
            raise SystemExit(f"huey finished only {finished} of {count} tasks")
        elapsed = time.perf_counter() - started
    finally:
        consumer.stop(graceful=True)
    return elapsed


# ---- daemons as subprocesses ---------------------------------------------------------------


@contextmanager
def daemons(url: str, count: int, workdir: Path, **extra: str) -> Iterator[list[Daemon]]:
    """Start `count` daemons (everything at its defaults) on one database; SIGTERM them on
    the way out."""
    started: list[Daemon] = []
    try:
        for index in range(count):
            node = f"bench-{index + 1}"
            env = {
                "SYNCD_DATABASE_URL": url,
                "SYNCD_NODE_ID": node,
                "SYNCD_STATE_DIR": str(workdir),
                "SYNCD_LOG_LEVEL": "WARNING",
                **extra,
            }
            started.append(Daemon(env, workdir / f"{node}.log", cwd=workdir).launch())
        for daemon in started:
            daemon.wait_ready(60)
        yield started
    finally:
        for daemon in started:
            daemon.begin_stop()
        for daemon in started:
            daemon.stop()


# ---- latency ---------------------------------------------------------------------------


def _parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


async def _latencies(daemon: Daemon, samples: int) -> list[float]:
    out: list[float] = []
    async with aiohttp.ClientSession() as session:
        for _ in range(samples):
            await asyncio.sleep(random.uniform(0.02, 0.05))  # let the daemon go idle again
            submitted = datetime.now(UTC)
            async with session.post(
                daemon.url + "/api/sync/tasks", json={"task_type": "noop"}
            ) as resp:
                resp.raise_for_status()
                task_id = (await resp.json())["id"]
            while True:
                async with session.get(f"{daemon.url}/api/sync/tasks/{task_id}") as resp:
                    task = await resp.json()
                if task["status"] == "completed":
                    break
                await asyncio.sleep(0.002)
            out.append((_parse_time(task["started_at"]) - submitted).total_seconds() * 1000)
    return out


def bench_latency(samples: int, idle_s: float, workdir: Path) -> tuple[list[float], float]:
    """Pickup latencies (ms) and the idle daemon's CPU percentage over `idle_s`."""
    url = f"sqlite:///{workdir / 'latency.db'}"
    migrate(url)
    with daemons(url, 1, workdir) as (daemon,):
        latencies = asyncio.run(_latencies(daemon, samples))
        time.sleep(1.0)  # let the last task's bookkeeping settle before measuring idleness
        before = daemon.cpu_seconds()
        time.sleep(idle_s)
        cpu = daemon.cpu_seconds() - before
    return latencies, 100.0 * cpu / idle_s


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(pct / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


# ---- MariaDB: several daemons on one database ----------------------------------------------


async def _submit_batches(bases: Sequence[str], count: int) -> None:
    async with aiohttp.ClientSession() as session:
        for index, offset in enumerate(range(0, count, BATCH)):
            size = min(BATCH, count - offset)
            body = {"tasks": [{"task_type": "noop"} for _ in range(size)]}
            url = bases[index % len(bases)] + "/api/sync/tasks/batch"
            async with session.post(url, json=body) as resp:
                if resp.status != 201:
                    raise SystemExit(f"batch create failed: {resp.status} {await resp.text()}")


def _mysql_count(url: str, sql: str) -> int:
    engine = create_sync_engine(sync_url(url))
    try:
        with engine.connect() as conn:
            return int(conn.execute(text(sql)).scalar_one())
    finally:
        engine.dispose()


def _empty_tables(url: str) -> None:
    engine = create_sync_engine(sync_url(url))
    with engine.begin() as conn:
        for table in ("sync_task_errors", "sync_task_attempts", "sync_tasks"):
            conn.execute(text(f"DELETE FROM {table}"))
    engine.dispose()


def bench_mariadb_once(url: str, nodes: int, count: int, concurrency: int, workdir: Path) -> float:
    """Seconds for `count` noop tasks through `nodes` daemons on one MariaDB database."""
    _empty_tables(url)
    extra = {"SYNCD_CONCURRENCY": str(concurrency)}
    with daemons(url, nodes, workdir, **extra) as running:
        started = time.perf_counter()
        asyncio.run(_submit_batches([d.url for d in running], count))
        deadline = time.monotonic() + max(120.0, count / 10)
        engine = create_sync_engine(sync_url(url))
        try:
            with engine.connect() as conn:
                while True:
                    done = conn.execute(
                        text("SELECT COUNT(*) FROM sync_tasks WHERE status='completed'")
                    ).scalar_one()
                    conn.commit()  # a fresh snapshot on the next read
                    if done >= count:
                        break
                    if time.monotonic() > deadline:
                        raise SystemExit(f"only {done} of {count} tasks completed in time")
                    time.sleep(0.05)
        finally:
            engine.dispose()
        elapsed = time.perf_counter() - started
    once = _mysql_count(
        url, "SELECT COUNT(*) FROM sync_tasks WHERE status='completed' AND attempt=1"
    )
    rows = _mysql_count(url, "SELECT COUNT(*) FROM sync_task_attempts")
    if once != count or rows != count:
        raise SystemExit(f"not exactly once: {once} tasks at attempt 1, {rows} attempt rows")
    return elapsed


@contextmanager
def mariadb_database(spec: str) -> Iterator[str]:
    """`auto`: a private server (bench/mariadb.py); else the URL given (emptied first)."""
    if spec != "auto":
        yield spec
        return
    from bench.mariadb import MariaDBServer

    with MariaDBServer() as server:
        yield server.create_database("bench")


# ---- main ------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--tasks", type=int, default=10_000, help="tasks per throughput run")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=256,
        help="syncd worker slots of the in-process engine (throughput part)",
    )
    parser.add_argument(
        "--mariadb-concurrency",
        type=int,
        default=64,
        help="worker slots per daemon in the MariaDB part (each slot may hold a connection)",
    )
    parser.add_argument("--huey-workers", type=int, default=2)
    parser.add_argument("--latency-samples", type=int, default=200)
    parser.add_argument("--idle-s", type=float, default=10.0, help="idle CPU measurement period")
    parser.add_argument(
        "--mariadb", default="", help="'auto' (private server) or a mysql+pymysql:// URL"
    )
    parser.add_argument("--mariadb-tasks", type=int, default=10_000)
    parser.add_argument("--mariadb-nodes", default="1,3", help="daemon counts to compare")
    parser.add_argument(
        "--skip", default="", help="comma list of parts to skip: throughput,latency"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the selected parts and print their figures."""
    args = _parser().parse_args(argv)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    workdir = Path(tempfile.mkdtemp(prefix="syncd-bench-"))
    results: dict[str, Any] = {}
    # Like `syncd serve` once started: every handler module imported, then the interpreter
    # tuned (`tune_interpreter`). Done once, before both queues run, so that syncd and Huey
    # meet the same collector and the same GIL switch interval.
    default_registry()
    tune_interpreter()
    try:
        with ExitStack():
            if "throughput" not in skip:
                _throughput(args, workdir, results)
            if "latency" not in skip:
                _latency(args, workdir, results)
            if args.mariadb:
                _mariadb(args, workdir, results)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(results, sort_keys=True))
    return 0


def _throughput(args: argparse.Namespace, workdir: Path, results: dict[str, Any]) -> None:
    n = args.tasks
    syncd_s = bench_syncd(n, args.concurrency, workdir)
    # Huey in its own habitat: CPython's default GIL switch interval (measured: Huey's rate
    # is the same at syncd's 0.2 ms, within the noise).
    tuned = sys.getswitchinterval()
    sys.setswitchinterval(0.005)
    try:
        huey_s = bench_huey(n, args.huey_workers, workdir)
    finally:
        sys.setswitchinterval(tuned)
    syncd_rate, huey_rate = n / syncd_s, n / huey_s
    print(f"throughput ({n} noop tasks, SQLite WAL + synchronous=NORMAL)")
    print(f"  syncd engine (concurrency {args.concurrency}): {syncd_rate:9.0f} tasks/s")
    print(f"  huey SqliteHuey ({args.huey_workers} threads):   {huey_rate:9.0f} tasks/s")
    print(f"  ratio syncd/huey: {syncd_rate / huey_rate:.2f}x (target >= 3x)")
    results.update(syncd_rate=syncd_rate, huey_rate=huey_rate, ratio=syncd_rate / huey_rate)


def _latency(args: argparse.Namespace, workdir: Path, results: dict[str, Any]) -> None:
    latencies, cpu = bench_latency(args.latency_samples, args.idle_s, workdir)
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    print(f"idle pickup latency over HTTP ({len(latencies)} samples)")
    print(f"  p50 {p50:.2f} ms (target <= 5), p99 {p99:.2f} ms (target <= 20)")
    print(f"  mean {statistics.fmean(latencies):.2f} ms, max {max(latencies):.2f} ms")
    print(f"  idle daemon CPU over {args.idle_s:g} s: {cpu:.2f} %")
    results.update(latency_p50_ms=p50, latency_p99_ms=p99, idle_cpu_percent=cpu)


def _mariadb(args: argparse.Namespace, workdir: Path, results: dict[str, Any]) -> None:
    nodes = [int(n) for n in args.mariadb_nodes.split(",") if n.strip()]
    n = args.mariadb_tasks
    rates: dict[int, float] = {}
    with mariadb_database(args.mariadb) as url:
        migrate(url)
        for count in nodes:
            rates[count] = n / bench_mariadb_once(url, count, n, args.mariadb_concurrency, workdir)
    print(
        f"MariaDB ({n} noop tasks via the batch API, "
        f"concurrency {args.mariadb_concurrency} per daemon)"
    )
    for count, rate in rates.items():
        print(f"  {count} daemon(s): {rate:9.0f} tasks/s")
    if len(rates) > 1:
        first, last = rates[nodes[0]], rates[nodes[-1]]
        print(f"  ratio {nodes[-1]}/{nodes[0]} daemons: {last / first:.2f}x")
    results["mariadb_rates"] = {str(k): v for k, v in rates.items()}


if __name__ == "__main__":
    sys.exit(main())
