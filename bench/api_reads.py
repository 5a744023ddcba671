"""Read benchmark: the task API, the statistics and /metrics with many tasks, against /healthz.

Run `python -m bench.api_reads` (needs `wrk`, Debian's package of the HTTP load generator; the
test dependencies script installs it). For each database (a SQLite file, and MariaDB with
`--mariadb auto|URL`) and each size (`--counts`, default 10,000 and 1,000,000):

1. builds that many realistic tasks straight into a migrated database: 90 % completed, 5 %
   failed, 3 % cancelled, 2 % pending, created over 30 days, one attempt each, a few task
   types and data sources; the statistics' rollups are then filled as the migration fills
   them for existing tasks;
2. serves them with a real `syncd serve` (no workers: `SYNCD_CONCURRENCY=0` is not allowed,
   so the pool runs but every pending task is due in the future and nothing is claimed);
3. drives it with wrk: `/healthz` and `GET` of one task (random ids and references) at
   `--connections` (32), and, one connection at a time, the list (page 1, every filter, a
   shallow page by number, a deep page and the last page through the cursor), the statistics
   (7 and 30 days), the throughput chart and `/metrics`;
4. with `--browser`, loads the dashboard's task list and statistics pages in Debian's Chromium
   (Playwright, as the browser tests do) and times each until it is drawn.

It prints, per request, the rate, p50 and p99, the ratio of the single-task GET to /healthz
in the same run, and the growth of each p50 from the smallest size to the largest; the last
line is the same as JSON. `--keep DIR` keeps the built SQLite files (and reuses them; a MariaDB
database given by URL that already holds the count is reused too). Before measuring MariaDB the
bench sets `innodb_buffer_pool_size` (`--mariadb-buffer-pool-mb`, 2 GB) and reads every index
once: the figures are of a warm server sized for its data.

Not run by the test suite (tests/integration/test_bench_reads_smoke.py runs it with tiny
counts so it cannot rot). Nothing here is timed by pytest.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy import insert, inspect, text
from sqlalchemy.exc import DBAPIError

from bench.daemon import Daemon, daemon_env
from bench.queue_throughput import migrate
from schedule.clock import naive
from schedule.database import sync_url
from schedule.ids import new_ids
from schedule.models import metadata, sync_task_attempts, sync_tasks
from schedule.store.rollups import fill_statements
from schedule.task import TaskStatus

#: The mix of final states (the issue's realistic shape), the rest pending.
MIX = ((TaskStatus.COMPLETED, 0.90), (TaskStatus.FAILED, 0.05), (TaskStatus.CANCELLED, 0.03))
TYPES = ("noop", "records_import", "stock_import", "full_sync", "incremental_sync")
SOURCES = (None, None, "erp", "crm", "warehouse")
DAYS = 30
BATCH = 20_000
WRK = shutil.which("wrk")
CHROMIUM = "/usr/bin/chromium"
LUA = """
local paths = {}
for line in io.lines(os.getenv("BENCH_PATHS")) do paths[#paths + 1] = line end
math.randomseed(os.time())
request = function()
  return wrk.format("GET", paths[math.random(#paths)])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests": %d, "seconds": %f, "p50_ms": %f, "p99_ms": %f, "errors": %d}\\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50) / 1e3,
    latency:percentile(99) / 1e3, e.connect + e.read + e.write + e.status + e.timeout))
end
"""


@dataclass(frozen=True)
class Figure:
    """One wrk run: requests per second, p50 and p99 in milliseconds."""

    rate: float
    p50_ms: float
    p99_ms: float

    def line(self, name: str) -> str:
        return (
            f"  {name:<44} {self.rate:9.0f} req/s  "
            f"p50 {self.p50_ms:8.2f} ms  p99 {self.p99_ms:8.2f} ms"
        )


# ---- building the tasks ---------------------------------------------------------------------


def _status(rng: random.Random) -> TaskStatus:
    draw = rng.random()
    for status, share in MIX:
        if draw < share:
            return status
        draw -= share
    return TaskStatus.PENDING


def task_rows(count: int, now: datetime, seed: int = 15) -> Iterator[list[dict[str, Any]]]:
    """`count` tasks as rows of `sync_tasks` (and their attempts), in batches, oldest first."""
    rng = random.Random(seed)
    start = now - timedelta(days=DAYS)
    step = timedelta(days=DAYS) / max(count, 1)
    made = 0
    while made < count:
        size = min(BATCH, count - made)
        batch = []
        for index, (task_id, reference) in enumerate(new_ids(size)):
            created = start + step * (made + index)
            status = _status(rng)
            started = created + timedelta(seconds=rng.uniform(0.01, 2))
            finished = started + timedelta(seconds=rng.uniform(0.05, 30))
            done = status is not TaskStatus.PENDING
            batch.append(
                {
                    "id": task_id,
                    "reference": reference,
                    "task_type": rng.choice(TYPES),
                    "status": status.value,
                    "priority": 0,
                    "data_source_id": rng.choice(SOURCES),
                    "parameters": {"sheet": "bench", "rows": rng.randint(1, 5000)},
                    "progress": 100 if status is TaskStatus.COMPLETED else 0,
                    "message": "done" if done else "",
                    "processed_rows": rng.randint(0, 5000) if done else 0,
                    "error_count": 0,
                    "result": {"rows": 1} if status is TaskStatus.COMPLETED else None,
                    "error": "boom" if status is TaskStatus.FAILED else None,
                    "attempt": 1 if done else 0,
                    "max_attempts": 3,
                    "run_after": naive(now + timedelta(days=365)) if not done else created,
                    "cancel_requested": status is TaskStatus.CANCELLED,
                    "created_at": naive(created),
                    "started_at": naive(started) if done else None,
                    "updated_at": naive(finished if done else created),
                    "finished_at": naive(finished) if done else None,
                }
            )
        made += size
        yield batch


def attempt_rows(batch: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One attempt per finished task of `batch`."""
    return [
        {
            "task_id": row["id"],
            "attempt": 1,
            "node_id": "bench",
            "started_at": row["started_at"],
            "finished_at": row["finished_at"],
            "outcome": row["status"],
            "error": row["error"],
        }
        for row in batch
        if row["finished_at"] is not None
    ]


def build(url: str, count: int, now: datetime) -> list[str]:
    """Empty `url`, migrate it, write `count` tasks and their attempts, fill the rollups;
    returns a sample of ids and references for the single-task GETs."""
    engine = create_sync_engine(sync_url(url))
    with engine.begin() as conn:
        metadata.drop_all(conn)
        conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
    migrate(url)
    keys: list[str] = []
    rng = random.Random(count)
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            conn.exec_driver_sql("PRAGMA synchronous=OFF")
        for batch in task_rows(count, now):
            conn.execute(insert(sync_tasks), batch)
            attempts = attempt_rows(batch)
            if attempts:
                conn.execute(insert(sync_task_attempts), attempts)
            for row in rng.sample(batch, min(len(batch), 200)):
                keys.append(row["id"] if rng.random() < 0.5 else row["reference"])
    with engine.begin() as conn:
        for statement in fill_statements(engine.dialect.name):
            conn.execute(statement)
    if engine.dialect.name == "sqlite":
        with engine.connect() as conn:
            conn.exec_driver_sql("ANALYZE")
    else:
        with engine.connect() as conn:
            conn.execute(text("ANALYZE TABLE sync_tasks, sync_task_attempts"))
    engine.dispose()
    return keys


def prepare_mariadb(url: str, buffer_pool_mb: int) -> None:
    """Give the server a buffer pool that holds the tables (the suite's private server starts
    with 64 MB, where every read of a million tasks goes to the disk; a production server is
    sized for its working set) and read every index once, so that the figures are of a warm
    server, as a running one is."""
    engine = create_sync_engine(sync_url(url))
    with engine.connect() as conn:
        if buffer_pool_mb:
            size = buffer_pool_mb * 1024 * 1024
            conn.execute(text(f"SET GLOBAL innodb_buffer_pool_size = {size}"))
        for table in (sync_tasks, sync_task_attempts):
            # the indexes the database has (some of the schema's are SQLite's only)
            held = [str(index["name"]) for index in inspect(conn).get_indexes(table.name)]
            for name in ["PRIMARY", *held]:
                conn.execute(
                    text(f"SELECT COUNT(*) FROM {table.name} FORCE INDEX (`{name}`)")
                ).scalar()
        conn.execute(text("SELECT SUM(LENGTH(parameters)) FROM sync_tasks")).scalar()
    engine.dispose()


def read_keys(url: str, limit: int = 5000) -> list[str]:
    """Ids and references of tasks already in `url` (a kept database)."""
    engine = create_sync_engine(sync_url(url))
    with engine.connect() as conn:
        rows = conn.execute(
            text(f"SELECT id, reference FROM sync_tasks ORDER BY id LIMIT {int(limit)}")
        ).all()
    engine.dispose()
    return [r[i % 2] for i, r in enumerate(rows)]


# ---- driving it ------------------------------------------------------------------------------


def wrk(base: str, paths: Sequence[str], connections: int, seconds: float, workdir: Path) -> Figure:
    """wrk against `base` for `seconds`, each request a random one of `paths`."""
    if WRK is None:
        raise SystemExit("wrk is not installed (Debian: apt-get install wrk)")
    script = workdir / "bench.lua"
    script.write_text(LUA)
    listing = workdir / "paths.txt"
    listing.write_text("\n".join(paths) + "\n")
    result = subprocess.run(
        [
            WRK,
            f"-t{min(2, connections)}",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "--timeout=10s",
            "-s",
            str(script),
            base,
        ],
        env={"BENCH_PATHS": str(listing), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=True,
    )
    line = next(x for x in result.stdout.splitlines() if x.startswith("BENCH "))
    out = json.loads(line.removeprefix("BENCH "))
    if out["errors"]:
        raise SystemExit(f"wrk saw errors on {paths[0]}: {result.stdout}")
    if not out["requests"]:  # slower than the run: time one request instead
        return _one_request(base + paths[0])
    return Figure(out["requests"] / out["seconds"], out["p50_ms"], out["p99_ms"])


def _one_request(url: str) -> Figure:
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=120) as resp:
        resp.read()
    ms = (time.perf_counter() - started) * 1000
    return Figure(1000 / ms, ms, ms)


def list_paths(url: str, count: int) -> dict[str, str]:
    """The list requests measured: page 1, each filter, a shallow page, deep pages by cursor,
    and a deep page back through `before` (the previous page's place)."""
    size = 50
    paths = {
        "list page 1": "/api/sync/tasks?size=20",
        "list status=failed": "/api/sync/tasks?status=failed",
        "list status=pending": "/api/sync/tasks?status=pending",
        "list task_type=stock_import": "/api/sync/tasks?task_type=stock_import",
        "list data_source_id=crm": "/api/sync/tasks?data_source_id=crm",
        "list status=failed&task_type=noop": "/api/sync/tasks?status=failed&task_type=noop",
        "list status=completed&data_source_id=erp": (
            "/api/sync/tasks?status=completed&data_source_id=erp"
        ),
        "list page 5 (size 50)": "/api/sync/tasks?page=5&size=50",
    }
    deep = max(1, min(1000, count // size // 2))
    last = max(1, count // size)
    print(f"  (deep page: {deep:,}; last page: {last:,}; size {size})")
    for name, page in (("list cursor, deep page", deep), ("list cursor, last page", last)):
        cursor = _cursor_at(url, (page - 1) * size)
        paths[name] = f"/api/sync/tasks?size={size}&cursor={urllib.parse.quote(cursor)}"
        if page == deep:
            back = f"/api/sync/tasks?size={size}&before={urllib.parse.quote(cursor)}"
            paths["list before, deep page"] = back
    return paths


def _cursor_at(url: str, position: int) -> str:
    """The cursor that starts a page at `position` (0-based) of the unfiltered list: the
    keyset of the task just before it, read from the database the bench built."""
    from controllers.models import encode_cursor

    engine = create_sync_engine(sync_url(url))
    with engine.connect() as conn:
        row = conn.execute(
            text(
                "SELECT created_at, id FROM sync_tasks ORDER BY created_at DESC, id DESC "
                f"LIMIT 1 OFFSET {max(0, position - 1)}"
            )
        ).one()
    engine.dispose()
    created = row[0] if isinstance(row[0], datetime) else datetime.fromisoformat(str(row[0]))
    return encode_cursor(created.replace(tzinfo=UTC), str(row[1]))


def measure(
    daemon: Daemon, keys: Sequence[str], count: int, args: argparse.Namespace, workdir: Path
) -> dict[str, Figure]:
    """Every request of the bench against one daemon."""
    out: dict[str, Figure] = {}
    conns, secs = args.connections, args.seconds
    out["/healthz"] = wrk(daemon.url, ["/healthz"], conns, secs, workdir)
    out["GET one task"] = wrk(
        daemon.url, [f"/api/sync/tasks/{k}" for k in keys], conns, secs, workdir
    )
    print(out["/healthz"].line("/healthz"), flush=True)
    print(out["GET one task"].line("GET one task"), flush=True)
    singles = {"GET one task, one client": [f"/api/sync/tasks/{k}" for k in keys]}
    singles.update((name, [path]) for name, path in list_paths(daemon.database_url, count).items())
    singles["statistics, 7 days"] = ["/api/sync/tasks/statistics"]
    month = (datetime.now(UTC) - timedelta(days=31)).strftime("%Y-%m-%dT%H:%M:%SZ")
    singles["statistics, 31 days"] = [f"/api/sync/tasks/statistics?since={month}"]
    singles["throughput chart (24 h)"] = ["/api/sync/tasks/throughput?hours=24"]
    singles["/metrics"] = ["/metrics"]
    only = {n.strip() for n in args.only.split(";") if n.strip()}
    for name, paths in singles.items():
        if only and name not in only:
            continue
        out[name] = wrk(daemon.url, paths, 1, args.single_seconds, workdir)
        print(out[name].line(name), flush=True)
    return out


#: Dashboard pages timed in Chromium, and what shows that each is drawn.
PAGES = {
    "dashboard: tasks": ("#/tasks", "main tbody tr"),
    "dashboard: tasks, status=failed": ("#/tasks?status=failed", "main tbody tr"),
    "dashboard: statistics (7 days)": ("#/stats", "main svg.chart"),
}


def draw_times(base: str, loads: int = 5) -> dict[str, float]:
    """Median milliseconds until each dashboard page is drawn in Debian's Chromium (through
    Playwright), two ways: a fresh load of the page (HTML, modules, API calls), and moving to
    it from another page of the dashboard (its API calls and drawing)."""
    from playwright.sync_api import sync_playwright

    chromium_args = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]
    out: dict[str, float] = {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=chromium_args)
        try:
            tab = browser.new_page(viewport={"width": 1280, "height": 860})
            tab.goto(base + "/#/tasks")  # the first load fills the cache as a visit would
            tab.wait_for_selector("main tbody tr", timeout=30_000)
            for name, (address, drawn) in PAGES.items():
                fresh, moved = [], []
                for _ in range(loads):
                    tab.goto("about:blank")
                    started = time.perf_counter()
                    tab.goto(base + "/" + address)
                    tab.wait_for_selector(drawn, timeout=30_000)
                    fresh.append((time.perf_counter() - started) * 1000)
                for _ in range(loads):
                    tab.evaluate("location.hash = '#/upload'")
                    tab.wait_for_selector("main form", timeout=30_000)
                    moved.append(tab.evaluate(_MOVE_JS, [address, drawn]))
                out[f"{name}, fresh load"] = statistics.median(fresh)
                out[f"{name}, from another page"] = statistics.median(moved)
        finally:
            browser.close()
    return out


#: In the page: go to `address`, resolve with the milliseconds until `drawn` is there.
_MOVE_JS = """([address, drawn]) => new Promise((resolve) => {
  const started = performance.now();
  location.hash = address;
  const look = () => document.querySelector(drawn)
    ? resolve(performance.now() - started) : requestAnimationFrame(look);
  look();
})"""


def serve(url: str, workdir: Path) -> Daemon:
    """A real `syncd serve` on `url`, ready."""
    workdir.mkdir(parents=True, exist_ok=True)
    env = daemon_env(url, workdir / "state", SYNCD_CONCURRENCY="1", SYNCD_LOG_LEVEL="ERROR")
    daemon = Daemon(env, workdir / "daemon.log")
    try:
        return daemon.start(timeout=120)
    except BaseException:
        daemon.close()  # one that never became ready is not left running
        raise


def run_database(
    name: str, urls: dict[int, str], args: argparse.Namespace, workdir: Path, keep: bool
) -> dict[int, dict[str, Figure]]:
    """Build (or reuse), serve and measure each size of one database."""
    results: dict[int, dict[str, Figure]] = {}
    now = datetime.now(UTC)
    for count, url in urls.items():
        reuse = keep and _has_tasks(url, count)
        if reuse:
            migrate(url)  # a database kept from an older schema is brought up to date
        keys = read_keys(url) if reuse else build(url, count, now)
        if name == "MariaDB":
            prepare_mariadb(url, args.mariadb_buffer_pool_mb)
        print(f"{name}, {count:,} tasks", flush=True)
        daemon = serve(url, workdir / f"{name}-{count}")
        try:
            results[count] = measure(daemon, keys, count, args, workdir)
            if args.browser:
                for page, ms in draw_times(daemon.url).items():
                    print(f"  {page:<56} drawn in {ms:7.1f} ms (median of 5)", flush=True)
                    results[count][page] = Figure(1000 / ms, ms, ms)
        finally:
            daemon.stop()
        _print(name, count, results[count])
    return results


def _has_tasks(url: str, count: int) -> bool:
    engine = create_sync_engine(sync_url(url))
    try:
        with engine.connect() as conn:
            found = conn.execute(text("SELECT count(*) FROM sync_tasks")).scalar_one()
    except DBAPIError:  # not built yet (no table): build it
        return False
    finally:
        engine.dispose()
    return int(found) == count


def _print(name: str, count: int, figures: dict[str, Figure]) -> None:
    ratio = figures["GET one task"].rate / figures["/healthz"].rate
    print(f"  GET one task / /healthz: {ratio:.1%}")
    sys.stdout.flush()


def _growth(results: dict[int, dict[str, Figure]]) -> dict[str, float]:
    small, large = min(results), max(results)
    return {
        k: results[large][k].p50_ms / results[small][k].p50_ms
        for k in results[large]
        if k in results[small] and results[small][k].p50_ms > 0
    }


def _summary(results: dict[int, dict[str, Figure]]) -> dict[str, Any]:
    return {
        str(count): {
            "get_ratio": figs["GET one task"].rate / figs["/healthz"].rate,
            "figures": {k: [f.rate, f.p50_ms, f.p99_ms] for k, f in figs.items()},
        }
        for count, figs in results.items()
    } | {"growth": _growth(results)}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", default="10000,1000000", help="task counts, comma-separated")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=5.0, help="each run at --connections")
    parser.add_argument("--single-seconds", type=float, default=2.0, help="each one-client run")
    parser.add_argument("--sqlite", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument(
        "--mariadb",
        default="",
        help="'auto' (private server) or a mysql+pymysql:// URL ('{count}' replaced by the count)",
    )
    parser.add_argument(
        "--mariadb-buffer-pool-mb",
        type=int,
        default=2048,
        help="innodb_buffer_pool_size set before measuring (0: leave the server's)",
    )
    parser.add_argument("--keep", default="", help="keep (and reuse) the SQLite files here")
    parser.add_argument(
        "--browser",
        action="store_true",
        help="also time the dashboard's task list and statistics pages in Chromium",
    )
    parser.add_argument(
        "--only",
        default="",
        help="measure only these one-client requests (names as printed, separated by ';'); "
        "/healthz and GET one task at --connections always run",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    counts = sorted(int(c) for c in args.counts.split(",") if c.strip())
    summary: dict[str, Any] = {}
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="syncd-reads-")))
        if args.sqlite:
            store = Path(args.keep) if args.keep else workdir
            store.mkdir(parents=True, exist_ok=True)
            urls = {c: f"sqlite:///{store / f'tasks-{c}.db'}" for c in counts}
            summary["sqlite"] = _summary(
                run_database("SQLite", urls, args, workdir, bool(args.keep))
            )
        if args.mariadb:
            urls = stack.enter_context(_mariadb(args.mariadb, counts))
            summary["mariadb"] = _summary(
                run_database("MariaDB", urls, args, workdir, bool(args.keep))
            )
    for name, part in summary.items():
        print(f"{name}: p50 growth {min(counts):,} -> {max(counts):,} tasks")
        for key, growth in part["growth"].items():
            print(f"  {key:<44} {growth:6.2f}x")
    print(json.dumps(summary))
    return 0


@contextmanager
def _mariadb(spec: str, counts: Sequence[int]) -> Iterator[dict[int, str]]:
    """`auto`: a private server with a database per count; a URL: that database for every
    count (`{count}` in it is replaced by the count), emptied before each is built (unless
    `--keep` finds it holding that count)."""
    if spec != "auto":
        yield {c: spec.replace("{count}", str(c)) for c in counts}
        return
    from bench.mariadb import MariaDBServer

    with MariaDBServer() as server:
        yield {c: server.create_database(f"reads_{c}") for c in counts}


if __name__ == "__main__":
    sys.exit(main())
