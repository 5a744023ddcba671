"""Benchmark: imports through a real `syncd serve`, each against a baseline of the same run.

* JSON records: `--records` seed-002 records through `POST /api/tools/import` until the task
  completed, against a raw `sqlite3` `executemany` of the same rows into a table of the same
  shape (the mean of one run before the import and one after). Target: at least 25% of the raw
  rate.
* xlsx rows: a `--rows`-row stock workbook through `POST /api/imports/stock` until the task
  completed, against openpyxl's bare read-only iteration of the same file (the mean of one read
  before the import and one after). Target: at most 1.3x.
* memory: the daemon's peak RSS (`VmHWM` of /proc/PID/status) over a `--rss-rows`-row stock
  import (skip with `--rss-rows 0`). Target: under 300 MB.
* responsiveness: `/healthz` latency (median, 99th percentile, worst) probed without pause
  during that import, against the same probes of the idle daemon just before. Target: the
  worst under 100 ms.

    python -m bench.imports                                  # 100,000 / 100,000 / 1,000,000
    python -m bench.imports --records 2000 --rows 2000 --rss-rows 5000   # a smoke run
"""

from __future__ import annotations

import argparse
import io
import json
import re
import shutil
import sqlite3
import tempfile
import threading
import time
import urllib.request
import uuid
import zipfile
from datetime import datetime
from pathlib import Path
from typing import Any

from openpyxl import Workbook, load_workbook

from bench.daemon import Daemon, wait_until

SHEET_PART = "xl/worksheets/sheet1.xml"
HEADER = ["Артикул", "Производитель", "Наименование", "Количество", "Цена", "Склад"]


def records(count: int) -> list[dict[str, Any]]:
    """Seed-002-shaped records with unique tool ids."""
    return [
        {
            "tool_name": f"Tool {i}",
            "tool_id": f"T{i:08d}",
            "category": ("Education", "Finance", "Travel")[i % 3],
            "description": f"Generated tool number {i} for the import benchmark.",
            "features": ["Data extraction", "Conversion history", f"feature {i % 50}"],
            "url": f"https://example.com/tools/{i}",
        }
        for i in range(count)
    ]


def raw_executemany(path: Path, data: list[dict[str, Any]]) -> float:
    """Seconds for a bare sqlite3 executemany of the same rows (and the commit)."""
    rows = [
        (
            r["tool_id"],
            r["tool_name"],
            r["category"],
            r["description"],
            json.dumps(r["features"]),
            r["url"],
        )
        for r in data
    ]
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TABLE tools (tool_id VARCHAR(64) PRIMARY KEY, tool_name VARCHAR(255) NOT NULL,"
        " category VARCHAR(255), description TEXT, features JSON NOT NULL, url VARCHAR(2048))"
    )
    conn.execute("PRAGMA journal_mode=WAL")
    started = time.perf_counter()
    with conn:
        conn.executemany("INSERT INTO tools VALUES (?, ?, ?, ?, ?, ?)", rows)
    elapsed = time.perf_counter() - started
    conn.close()
    return elapsed


def write_stock(path: Path, rows: int) -> None:
    """A stock workbook (write-only, streamed) with a `<dimension>` as Excel writes one."""
    plain = path.with_suffix(".tmp.xlsx")
    wb = Workbook(write_only=True)
    ws = wb.create_sheet("Остатки")
    ws.append(HEADER)
    for i in range(rows):
        ws.append([f"PN-{i}", f"VENDOR-{i % 7}", f"Item {i}", i % 100 + 1, f"{i % 997},50", "Main"])
    wb.save(plain)
    add_dimension(plain, path, f"A1:F{rows + 1}")
    plain.unlink()


def add_dimension(source: Path, target: Path, ref: str) -> None:
    """Copy an .xlsx, inserting `<dimension ref=...>` into its sheet (streamed)."""
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zout:
        for item in zin.infolist():
            if item.filename != SHEET_PART:
                zout.writestr(item, zin.read(item.filename))
                continue
            with zin.open(item) as src, zout.open(SHEET_PART, "w") as dst:
                head = src.read(4096).decode()
                head = re.sub(
                    r"(<sheetViews|<sheetFormatPr|<sheetData)",
                    f'<dimension ref="{ref}"/>\\1',
                    head,
                    count=1,
                )
                dst.write(head.encode())
                shutil.copyfileobj(src, dst, 1 << 20)


def bare_read(path: Path) -> tuple[float, int]:
    """Seconds for openpyxl's read-only iteration over every row, and the row count."""
    started = time.perf_counter()
    wb = load_workbook(path, read_only=True, data_only=True)
    count = 0
    for _ in wb.worksheets[0].iter_rows(values_only=True):
        count += 1
    wb.close()
    return time.perf_counter() - started, count


def post_raw(daemon: Daemon, path: str, body: bytes, content_type: str) -> Any:
    req = urllib.request.Request(
        daemon.url + path, data=body, method="POST", headers={"Content-Type": content_type}
    )
    with urllib.request.urlopen(req, timeout=600) as resp:
        return json.loads(resp.read())


def upload(daemon: Daemon, path: Path) -> Any:
    """`POST /api/imports/stock` of a workbook as multipart/form-data."""
    boundary = uuid.uuid4().hex
    body = io.BytesIO()
    body.write(
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{path.name}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n".encode()
    )
    body.write(path.read_bytes())
    body.write(f"\r\n--{boundary}--\r\n".encode())
    return post_raw(
        daemon, "/api/imports/stock", body.getvalue(), f"multipart/form-data; boundary={boundary}"
    )


def finished(daemon: Daemon, task_id: str) -> Any:
    """Poll the task until it ended; it must have completed."""

    def done() -> Any:
        task = daemon.call("GET", f"/api/sync/tasks/{task_id}")
        return task if task["status"] in ("completed", "failed", "cancelled") else None

    task = wait_until(done, 3600, f"task {task_id}")
    if task["status"] != "completed":
        raise SystemExit(f"task {task_id} ended {task['status']}: {task['error']}")
    return task


def _ran(task: dict[str, Any]) -> float:
    """Seconds from the task's start to its end, by its own timestamps."""
    started = datetime.fromisoformat(task["started_at"].replace("Z", "+00:00"))
    ended = datetime.fromisoformat(task["finished_at"].replace("Z", "+00:00"))
    return (ended - started).total_seconds()


def peak_rss_mb(pid: int) -> float:
    """VmHWM (peak resident set) of a process, in MB."""
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"VmHWM:\s+(\d+) kB", status)
    assert match is not None
    return int(match.group(1)) / 1024


def start_daemon(folder: Path) -> Daemon:
    env = {
        "SYNCD_STATE_DIR": str(folder / "state"),
        "SYNCD_DATABASE_URL": f"sqlite:///{folder / 'syncd.db'}",
        "SYNCD_LOG_FORMAT": "text",
        "SYNCD_LOG_LEVEL": "WARNING",
        "SYNCD_API_TOKENS": "",
        "SYNCD_MAX_UPLOAD_MB": "1000",
    }
    daemon = Daemon(env, folder / "daemon.log")
    daemon.run("migrate")
    return daemon.start()


def bench_json(daemon: Daemon, folder: Path, count: int) -> None:
    data = records(count)
    body = json.dumps({"data": data}).encode()
    # The baseline is the mean of a run before the import and one after, as in `bench_xlsx`.
    before = raw_executemany(folder / "raw-before.db", data)
    started = time.perf_counter()
    answer = post_raw(daemon, "/api/tools/import", body, "application/json")
    accepted = time.perf_counter() - started
    task = finished(daemon, answer["task_reference"])
    ours = time.perf_counter() - started
    after = raw_executemany(folder / "raw-after.db", data)
    raw = (before + after) / 2
    print(f"  (request accepted after {accepted:.3f} s; the task ran {_ran(task):.3f} s)")
    print(f"  (raw executemany before the import {before:.3f} s, after it {after:.3f} s)")
    assert task["result"]["imported"] == count, task["result"]
    share = (count / ours) / (count / raw)
    print(f"raw sqlite3 executemany:    {raw:8.3f} s  ({count / raw:12,.0f} rows/s)")
    print(f"POST /api/tools/import:     {ours:8.3f} s  ({count / ours:12,.0f} rows/s)")
    print(f"rate import / raw:          {share:8.1%}   (target >= 25%)")


def bench_xlsx(daemon: Daemon, folder: Path, rows: int) -> None:
    path = folder / "stock.xlsx"
    write_stock(path, rows)
    # The baseline is read before and after the import and averaged: both take seconds, and on
    # a shared machine the speed drifts between one phase and the next.
    before, count = bare_read(path)
    assert count == rows + 1
    started = time.perf_counter()
    task_id = upload(daemon, path)["id"]
    accepted = time.perf_counter() - started
    task = finished(daemon, task_id)
    ours = time.perf_counter() - started
    assert task["result"]["inserted"] == rows, task["result"]
    after, _ = bare_read(path)
    bare = (before + after) / 2
    print(f"  (upload accepted after {accepted:.3f} s; the task ran {_ran(task):.3f} s)")
    print(f"  (bare read before the import {before:.3f} s, after it {after:.3f} s)")
    print(f"openpyxl bare read:         {bare:8.3f} s  ({rows:,} rows, the mean)")
    print(f"POST /api/imports/stock:    {ours:8.3f} s  (upload + import)")
    print(f"ratio import / bare read:   {ours / bare:8.2f}x  (target <= 1.3x)")


class HealthProbe:
    """`GET /healthz` again and again on a thread of its own, keeping each latency."""

    def __init__(self, daemon: Daemon) -> None:
        self.url = daemon.url + "/healthz"
        self.latencies: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> HealthProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.perf_counter()
            with urllib.request.urlopen(self.url, timeout=60) as resp:
                resp.read()
            self.latencies.append(time.perf_counter() - started)

    def summary(self) -> str:
        """`p50 / p99 / max` in milliseconds, and how many probes."""
        ordered = sorted(self.latencies)
        if not ordered:
            return "no probes"
        p50, p99 = ordered[len(ordered) // 2], ordered[int(len(ordered) * 0.99)]
        return (
            f"p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, max {ordered[-1] * 1000:.1f} ms"
            f" ({len(ordered):,} probes)"
        )


def bench_rss(daemon: Daemon, folder: Path, rows: int) -> None:
    assert daemon.proc is not None
    path = folder / "big.xlsx"
    write_stock(path, rows)
    before = peak_rss_mb(daemon.proc.pid)
    with HealthProbe(daemon) as idle:
        time.sleep(2)
    started = time.perf_counter()
    with HealthProbe(daemon) as busy:
        task = finished(daemon, upload(daemon, path)["id"])
    elapsed = time.perf_counter() - started
    peak = peak_rss_mb(daemon.proc.pid)
    print(f"{rows:,}-row import:     {elapsed:8.1f} s  ({task['result']['inserted']:,} rows)")
    print(
        f"daemon peak RSS (VmHWM):    {peak:8.1f} MB (before the import: {before:.1f} MB;"
        " target < 300 MB)"
    )
    print(f"/healthz, idle:             {idle.summary()}")
    print(f"/healthz, during import:    {busy.summary()} (target: max < 100 ms)")


def main() -> None:
    """Start a daemon in a temporary folder, run the three measurements, print the figures."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--records", type=int, default=100_000, help="JSON records")
    parser.add_argument("--rows", type=int, default=100_000, help="xlsx rows")
    parser.add_argument("--rss-rows", type=int, default=1_000_000, help="rows of the RSS run")
    parser.add_argument("--dir", type=Path, default=None, help="where to put the files")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        folder = Path(tmp)
        daemon = start_daemon(folder)
        try:
            if args.records:
                bench_json(daemon, folder, args.records)
            if args.rows:
                bench_xlsx(daemon, folder, args.rows)
            if args.rss_rows:
                bench_rss(daemon, folder, args.rss_rows)
            daemon.terminate()
        finally:
            daemon.close()


if __name__ == "__main__":
    main()
