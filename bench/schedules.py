"""Schedule benchmark: many schedules firing at once, on one daemon and on several.

N schedules (10,000 by default), each `* * * * *` enqueuing a `noop` task, are created through
the API (timed), then the daemons run for `--duration-s` (at least three minutes by default).
Afterwards the database says what happened, fire by fire:

* fire lag, p50 / p99: a task's `created_at` (the start of the claim's transaction) minus its
  `scheduled_for`;
* how long after each fire time its last task was committed (polled during the run): when a
  worker can see every task of the fire;
* duplicate fires: more than one task for one (schedule, fire time) (target 0);
* missed fires: a fire time in the measured window with no task (target 0);
* the scheduler's CPU share per daemon: the CPU time of its claims
  (`syncd_scheduler_cpu_seconds_total`: the event loop's thread during each scheduler turn,
  and SQLite's writer thread while it runs a claim) over the wall time, and the daemon's whole
  CPU share beside it (the daemon also runs every task).

Parts: `sqlite` (one daemon on a SQLite file) and `mariadb` (`--nodes` daemons sharing one
MariaDB database; `--mariadb auto` starts a private server, bench/mariadb.py). The smoke test
runs it with an interval trigger (`--every-s`) and tiny counts. The last line printed is JSON
with every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy import text

from bench.daemon import Daemon
from schedule.database import sync_url

CREATE_CONCURRENCY = 16


# ---- creating schedules -------------------------------------------------------------------


async def _create(
    bases: list[str], count: int, trigger: dict[str, Any], start_at: str | None
) -> float:
    """POST `count` schedules, spread over the daemons; seconds taken."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(count):
        queue.put_nowait(i)

    async def worker(session: aiohttp.ClientSession) -> None:
        while not queue.empty():
            i = queue.get_nowait()
            body: dict[str, Any] = {
                "id": f"bench-{i:05d}",
                "task_type": "noop",
                "trigger": trigger,
                "overlap": "allow",
            }
            if start_at:
                body["start_at"] = start_at
            async with session.post(bases[i % len(bases)] + "/api/schedules", json=body) as resp:
                if resp.status != 201:
                    raise SystemExit(f"create failed: {resp.status} {await resp.text()}")

    started = time.perf_counter()
    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(worker(session) for _ in range(CREATE_CONCURRENCY)))
    return time.perf_counter() - started


def _scrape(base: str, name: str) -> float:
    import urllib.request

    with urllib.request.urlopen(base + "/metrics", timeout=10) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return 0.0


# ---- one run ------------------------------------------------------------------------------


def _first_fire(after: datetime, every_s: float | None, anchor: datetime | None) -> datetime:
    """The first fire time at or after `after` (cron: a minute boundary)."""
    if every_s is None:
        return (after + timedelta(minutes=1)).replace(second=0, microsecond=0)
    assert anchor is not None
    steps = max(0, -(-(after - anchor).total_seconds() // every_s))
    return anchor + timedelta(seconds=steps * every_s)


def run_once(
    url: str, nodes: int, count: int, duration_s: float, every_s: float | None, workdir: Path
) -> dict[str, Any]:
    """Create the schedules, let `nodes` daemons fire them for `duration_s`, and measure."""
    anchor = None
    trigger: dict[str, Any] = {"cron": "* * * * *"}
    if every_s is not None:
        trigger = {"every_s": every_s}
        anchor = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=2)
    with daemons(url, nodes, workdir) as running:
        bases = [d.url for d in running]
        create_s = asyncio.run(
            _create(bases, count, trigger, anchor.isoformat() if anchor else None)
        )
        created = datetime.now(UTC)
        window_start = _first_fire(created, every_s, anchor)
        cpu0 = [d.cpu_seconds() for d in running]
        sched0 = [_scrape(b, "syncd_scheduler_cpu_seconds_total") for b in bases]
        wall0 = time.monotonic()
        end = window_start + timedelta(seconds=duration_s)
        visible = _watch_visible(url, _fire_times(window_start, end, every_s), count, every_s)
        # The rest of the run, and time for the window's last fires to be claimed (a fire
        # claimed late is late, not missed).
        time.sleep(max(0.0, (end - datetime.now(UTC)).total_seconds()) + 3 + count / 1000)
        wall = time.monotonic() - wall0
        cpu = [d.cpu_seconds() - c for d, c in zip(running, cpu0, strict=True)]
        sched = [
            _scrape(b, "syncd_scheduler_cpu_seconds_total") - s
            for b, s in zip(bases, sched0, strict=True)
        ]
    figures = _measure(url, window_start, end, count, every_s)
    figures.update(
        visible_p50_s=_pct(sorted(visible), 0.50),
        visible_max_s=max(visible) if visible else None,
        nodes=nodes,
        schedules=count,
        create_s=create_s,
        create_rate=count / create_s,
        scheduler_cpu_share=[s / wall for s in sched],
        daemon_cpu_share=[c / wall for c in cpu],
    )
    return figures


def _measure(
    url: str, start: datetime, end: datetime, count: int, every_s: float | None
) -> dict[str, Any]:
    """Lags, duplicates and missed fires of the window `[start, end]`, from the database."""
    engine = create_sync_engine(sync_url(url))
    lo, hi = start.replace(tzinfo=None), end.replace(tzinfo=None)
    try:
        with engine.connect() as conn:
            every = conn.execute(
                text(
                    "SELECT schedule_id, scheduled_for, created_at FROM sync_tasks "
                    "WHERE schedule_id LIKE 'bench-%'"
                )
            ).all()
    finally:
        engine.dispose()
    rows = [(s, _time(f), _time(m)) for s, f, m in every if lo <= _time(f) <= hi]
    seen: dict[tuple[str, datetime], int] = {}
    lags = []
    for schedule_id, fire, made in rows:
        seen[(schedule_id, fire)] = seen.get((schedule_id, fire), 0) + 1
        lags.append((made - fire).total_seconds())
    expected = len(_fire_times(start, end, every_s)) * count
    lags.sort()
    return {
        "window": [start.isoformat(), end.isoformat()],
        "expected_fires": expected,
        "tasks": len(rows),
        "duplicates": sum(n - 1 for n in seen.values() if n > 1),
        "missed": expected - len(seen),
        "lag_p50_s": _pct(lags, 0.50),
        "lag_p99_s": _pct(lags, 0.99),
        "lag_max_s": lags[-1] if lags else None,
    }


def _step(every_s: float | None) -> timedelta:
    """The time between two fires: the interval, or a minute (`* * * * *`)."""
    return timedelta(seconds=every_s) if every_s is not None else timedelta(minutes=1)


def _fire_times(start: datetime, end: datetime, every_s: float | None) -> list[datetime]:
    step = _step(every_s)
    out = []
    while start <= end:
        out.append(start)
        start += step
    return out


def _watch_visible(
    url: str, fires: list[datetime], count: int, every_s: float | None
) -> list[float]:
    """For each fire time, the seconds from it until every one of its `count` tasks was
    committed (visible to another connection): the lag a worker sees, where `created_at` is
    the start of the claim's transaction. Polled every 50 ms with an index-only count of the
    tasks created between the fire and the next (the bench's daemons create no other task);
    a fire not complete by the next one counts the time to the next (a lower bound)."""
    step = _step(every_s)
    count_sql = text("SELECT COUNT(*) FROM sync_tasks WHERE created_at >= :at AND created_at < :to")
    engine = create_sync_engine(sync_url(url))
    out: list[float] = []
    try:
        with engine.connect() as conn:
            for fire in fires:
                time.sleep(max(0.0, (fire - datetime.now(UTC)).total_seconds()))
                window = {"at": fire.replace(tzinfo=None), "to": (fire + step).replace(tzinfo=None)}
                while True:
                    waited = (datetime.now(UTC) - fire).total_seconds()
                    seen = conn.execute(count_sql, window).scalar_one()
                    conn.rollback()  # a fresh snapshot for the next look
                    if seen >= count or waited >= step.total_seconds():
                        out.append(round(min(waited, step.total_seconds()), 3))
                        break
                    time.sleep(0.05)
    finally:
        engine.dispose()
    return out


def _time(value: Any) -> datetime:
    stamp: datetime = datetime.fromisoformat(value) if isinstance(value, str) else value
    return stamp.replace(tzinfo=None)


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return values[min(len(values) - 1, int(q * len(values)))]


# ---- daemons and databases ----------------------------------------------------------------


@contextmanager
def daemons(url: str, count: int, workdir: Path) -> Iterator[list[Daemon]]:
    """`count` daemons on one database (migrated first); SIGTERM on the way out."""
    started: list[Daemon] = []
    try:
        for index in range(count):
            node = f"sched-{index + 1}"
            env = {
                "SYNCD_DATABASE_URL": url,
                "SYNCD_NODE_ID": node,
                "SYNCD_STATE_DIR": str(workdir / node),
                "SYNCD_LOG_LEVEL": "WARNING",
                "SYNCD_CONCURRENCY": "16",
            }
            daemon = Daemon(env, workdir / f"{node}.log", cwd=workdir)
            if index == 0:
                daemon.run("migrate")
            started.append(daemon.launch())
        for daemon in started:
            daemon.wait_ready(60)
        yield started
    finally:
        for daemon in started:
            daemon.begin_stop()
        for daemon in started:
            daemon.stop()


@contextmanager
def mariadb_database(spec: str) -> Iterator[str]:
    """`auto`: a private server (bench/mariadb.py); else the URL given (emptied of tasks and
    schedules first)."""
    if spec != "auto":
        engine = create_sync_engine(sync_url(spec))
        with engine.begin() as conn:
            for table in ("sync_tasks", "sync_schedules"):
                if conn.dialect.has_table(conn, table):
                    conn.execute(text(f"DELETE FROM {table}"))
        engine.dispose()
        yield spec
        return
    from bench.mariadb import MariaDBServer

    with MariaDBServer() as server:
        yield server.create_database("bench_schedules")


# ---- main ---------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--schedules", type=int, default=10_000)
    parser.add_argument("--duration-s", type=float, default=180.0)
    parser.add_argument(
        "--every-s", type=float, default=None, help="an interval trigger instead of * * * * *"
    )
    parser.add_argument("--parts", default="sqlite,mariadb")
    parser.add_argument("--mariadb", default="auto", help="'auto' or a mysql+pymysql:// URL")
    parser.add_argument("--nodes", type=int, default=3, help="daemons sharing MariaDB")
    return parser


def _report(title: str, f: dict[str, Any]) -> None:
    print(f"== {title}")
    print(
        f"  created {f['schedules']} schedules through the API in {f['create_s']:.1f} s "
        f"({f['create_rate']:.0f}/s)"
    )
    print(
        f"  fires expected {f['expected_fires']}, tasks {f['tasks']}, "
        f"duplicates {f['duplicates']}, missed {f['missed']}"
    )
    lag = f"p50 {f['lag_p50_s']} s, p99 {f['lag_p99_s']} s, max {f['lag_max_s']} s"
    print(f"  fire lag (created_at - fire time): {lag}")
    print(
        f"  a fire's last task committed after: p50 {f['visible_p50_s']} s, "
        f"max {f['visible_max_s']} s (over the window's fires)"
    )
    shares = ", ".join(
        f"{s:.1%} (daemon {d:.1%})"
        for s, d in zip(f["scheduler_cpu_share"], f["daemon_cpu_share"], strict=True)
    )
    print(f"  scheduler CPU share per daemon: {shares}")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    results: dict[str, Any] = {}
    workdir = Path(tempfile.mkdtemp(prefix="syncd-bench-schedules-"))
    try:
        if "sqlite" in parts:
            url = f"sqlite:///{workdir / 'sqlite' / 'syncd.db'}"
            (workdir / "sqlite").mkdir()
            f = run_once(url, 1, args.schedules, args.duration_s, args.every_s, workdir / "sqlite")
            _report(f"SQLite, 1 daemon ({args.schedules} schedules)", f)
            results["sqlite"] = f
        if "mariadb" in parts:
            with mariadb_database(args.mariadb) as url:
                (workdir / "mariadb").mkdir()
                f = run_once(
                    url,
                    args.nodes,
                    args.schedules,
                    args.duration_s,
                    args.every_s,
                    workdir / "mariadb",
                )
            _report(f"MariaDB, {args.nodes} daemons ({args.schedules} schedules)", f)
            results["mariadb"] = f
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
