"""Benchmark: data-source syncs through a real `syncd serve`, each against a bare baseline.

Every source kind fills `lot_partnumbers` (4 mapped columns, batch 1,000, as `make run` sets a
source up) from `--rows` rows:

* `sqlite`: a SQLite file source, the daemon on SQLite; baseline: the stdlib `sqlite3` reading
  the source and an `executemany` of `INSERT ... ON CONFLICT DO UPDATE` per 1,000 rows, each
  committed, into a table of the same schema in WAL mode.
* `mariadb`: source and target on MariaDB (a private server, bench/mariadb.py), the production
  case; baseline: PyMySQL reading the source with an unbuffered cursor (`SSCursor`, as bounded
  memory requires) and an `executemany` of `INSERT ... ON DUPLICATE KEY UPDATE` per batch.
* `csv`, `xlsx`: files under the source directory, the daemon on SQLite; baseline: `csv.reader`
  / openpyxl's read-only iteration and the `sqlite3` upserts.
* `http`: pages of 1,000 records served on 127.0.0.1 by another process; baseline: a bare
  aiohttp client reading the same pages and the `sqlite3` upserts.

Passes, for every kind: `full_sync` with every row new, then with every row an update (the
source's text changed), an `incremental_sync` that finds 1% of the rows changed, and a
`full_sync` with `delete_missing` after 1% of the source's rows went (its baseline: the upsert
of every row with its key into a temporary table, then one `DELETE ... WHERE NOT EXISTS`). The
incremental baseline of the SQL kinds is the watermark query `WHERE version > ? ORDER BY
version` and the upsert of those rows; a file or the pages have no query, so there (as in the
daemon) every row is read and those whose version is above the mark are upserted. A file or the
pages are rewritten whole for each pass.

Each pass runs the baseline before and after it (the machine drifts; on two bare tables, so
that neither needs a reset whose writes could still be settling) and prints the times,
rows/s, the ratio to the mean baseline, and the daemon's peak RSS growth over the pass (VmHWM,
reset before the pass through /proc/PID/clear_refs). Targets: full_sync new <= 2.5x, updates
<= 3x, incremental <= 3x, delete_missing <= 3x; RSS growth < 150 MB for a 1,000,000-row sync.

    python -m bench.syncs                                    # 1,000,000 rows, every kind
    python -m bench.syncs --rows 300 --kinds sqlite,csv      # a smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import functools
import json
import re
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import islice
from pathlib import Path
from typing import Any

import aiohttp
import pymysql
import pymysql.cursors
from aiohttp import web
from openpyxl import Workbook, load_workbook

from bench.daemon import Daemon, free_port, wait_until
from bench.imports import add_dimension

KINDS = ("sqlite", "mariadb", "csv", "xlsx", "http")
BATCH = 1000
MAPPING = {"pn": "partnumber", "maker": "vendor", "lot": "lot_name", "descr": "description"}
TARGETS = {"new": 2.5, "update": 3.0, "incremental": 3.0, "delete_missing": 3.0}
RSS_TARGET_MB = 150.0
Row = tuple[Any, ...]
Batches = Iterator[list[Row]]


def source_rows(count: int) -> list[Row]:
    """`(id, pn, maker, lot, descr, version)` rows, every one at version 1."""
    return [
        (i, f"PN-{i:07d}", f"VENDOR-{i % 7}", f"LOT-{i % 997}", f"item {i}", 1)
        for i in range(count)
    ]


@dataclass(frozen=True)
class Some:
    """The source rows whose id is `rest` modulo `every` (every=100: 1% of them)."""

    every: int
    rest: int

    def sql(self) -> str:
        return f"id % {self.every} = {self.rest}"

    def __call__(self, row: Row) -> bool:
        return bool(row[0] % self.every == self.rest)


def chunks(rows: Iterator[Row], size: int = BATCH) -> Batches:
    while batch := list(islice(rows, size)):
        yield batch


def upsert_values(batch: Sequence[Row]) -> list[Row]:
    """(partnumber, vendor, lot_name, description) of source rows `(pn, maker, lot, descr, ..)`."""
    return [r[:4] for r in batch]


def timed(work: Callable[[], Any]) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


# ---- the bare targets ---------------------------------------------------------------------


class SqliteBare:
    """The baseline's target on SQLite: the daemon's `lot_partnumbers` schema, WAL mode and
    `synchronous=NORMAL` as the daemon's database has."""

    UPSERT = (
        "INSERT INTO lot_partnumbers (partnumber, vendor, lot_name, description)"
        " VALUES (?, ?, ?, ?) ON CONFLICT (vendor, partnumber) DO UPDATE SET"
        " lot_name = excluded.lot_name, description = excluded.description"
    )
    SEEN = "CREATE TEMP TABLE seen (vendor, partnumber, PRIMARY KEY (vendor, partnumber))"
    TRACK = "INSERT OR IGNORE INTO seen VALUES (?, ?)"
    DELETE = (
        "DELETE FROM lot_partnumbers WHERE NOT EXISTS (SELECT 1 FROM seen WHERE"
        " seen.vendor = lot_partnumbers.vendor AND seen.partnumber = lot_partnumbers.partnumber)"
    )

    def __init__(self, path: Path, ddl: str) -> None:
        self.conn: Any = sqlite3.connect(path, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.execute(ddl)

    def begin(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")

    def commit(self) -> None:
        self.conn.execute("COMMIT")

    def upsert(self, batches: Batches, *, track: bool = False) -> int:
        """Upsert every batch in a transaction of its own (keys into `seen` with `track`)."""
        count = 0
        cursor = self.conn.cursor()
        for batch in batches:
            self.begin()
            cursor.executemany(self.UPSERT, upsert_values(batch))
            if track:
                cursor.executemany(self.TRACK, [(r[1], r[0]) for r in batch])
            self.commit()
            count += len(batch)
        return count

    def delete_missing(self, batches: Batches) -> int:
        cursor = self.conn.cursor()
        cursor.execute(self.SEEN)
        self.upsert(batches, track=True)
        self.begin()
        cursor.execute(self.DELETE)
        gone = int(cursor.rowcount)
        self.commit()
        cursor.execute("DROP TABLE seen")
        return gone

    def run(self, statement: str, rows: Sequence[Row] | None = None) -> None:
        """One untimed statement (for every row of `rows` when given), committed."""
        cursor = self.conn.cursor()
        self.begin()
        if rows is None:
            cursor.execute(statement)
        else:
            cursor.executemany(statement, rows)
        self.commit()

    def clear(self) -> None:
        self.run("DELETE FROM lot_partnumbers")


class MariaBare(SqliteBare):
    """The baseline's target on MariaDB (PyMySQL, one transaction per batch)."""

    UPSERT = (
        "INSERT INTO lot_partnumbers (partnumber, vendor, lot_name, description)"
        " VALUES (%s, %s, %s, %s) ON DUPLICATE KEY UPDATE"
        " lot_name = VALUES(lot_name), description = VALUES(description)"
    )
    SEEN = (
        "CREATE TEMPORARY TABLE seen (vendor VARCHAR(255), partnumber VARCHAR(255),"
        " PRIMARY KEY (vendor, partnumber))"
    )
    TRACK = "INSERT IGNORE INTO seen VALUES (%s, %s)"

    def __init__(self, connect: Callable[[], Any], ddl: str) -> None:
        self.conn = connect()
        self.conn.autocommit(True)
        with self.conn.cursor() as cursor:
            cursor.execute(ddl)

    def begin(self) -> None:
        self.conn.begin()

    def commit(self) -> None:
        self.conn.commit()


# ---- sources ------------------------------------------------------------------------------


class SqlSource:
    """A `parts` table (id, pn, maker, lot, descr, version; an index on version) that the
    daemon reads through a `sql` data source and the baseline with the bare driver."""

    source_kind = "sql"
    PARAM = "?"
    CONCAT = "descr || ' {tag}'"

    def __init__(self, url: str, connect: Callable[[], Any]) -> None:
        self.url = url
        self.connect = connect
        self.rows = 0

    def connection(self) -> dict[str, Any]:
        return {"url": self.url, "table": "parts"}

    def execute(self, statement: str, rows: Sequence[Row] | None = None) -> None:
        conn = self.connect()
        try:
            cursor = conn.cursor()
            if rows is None:
                cursor.execute(statement)
            else:
                for start in range(0, len(rows), 10_000):
                    cursor.executemany(statement, rows[start : start + 10_000])
            conn.commit()
        finally:
            conn.close()

    def create(self, rows: list[Row]) -> None:
        self.execute("DROP TABLE IF EXISTS parts")
        self.execute(
            "CREATE TABLE parts (id INTEGER PRIMARY KEY, pn VARCHAR(255), maker VARCHAR(255),"
            " lot VARCHAR(255), descr VARCHAR(1000), version INTEGER)"
        )
        self.execute("CREATE INDEX parts_version ON parts (version)")
        marks = ", ".join([self.PARAM] * 6)
        self.execute(f"INSERT INTO parts VALUES ({marks})", rows)
        self.rows = len(rows)

    def update(self, tag: str, version: int, which: Some | None = None) -> None:
        """Append `tag` to the descriptions of the rows `which` holds (all: None) and set
        their version."""
        concat = self.CONCAT.format(tag=tag)
        where = "1 = 1" if which is None else which.sql()
        self.execute(f"UPDATE parts SET descr = {concat}, version = {version} WHERE {where}")

    def take(self, which: Some) -> list[Row]:
        """Delete the rows `which` holds; the deleted rows as `(pn, maker, lot, descr)`."""
        conn = self.connect()
        try:
            cursor = conn.cursor()
            cursor.execute(f"SELECT pn, maker, lot, descr FROM parts WHERE {which.sql()}")
            gone = [tuple(r) for r in cursor.fetchall()]
            cursor.execute(f"DELETE FROM parts WHERE {which.sql()}")
            conn.commit()
        finally:
            conn.close()
        self.rows -= len(gone)
        return gone

    def read(self, above: int | None = None) -> Batches:
        """The bare read: every row (or those whose version is above `above`) in batches."""
        conn = self.connect()
        try:
            cursor = self.cursor(conn)
            query = "SELECT pn, maker, lot, descr, version FROM parts"
            if above is None:
                cursor.execute(query)
            else:
                where = f" WHERE version > {self.PARAM} ORDER BY version"
                cursor.execute(query + where, (above,))
            while batch := cursor.fetchmany(BATCH):
                yield list(batch)
        finally:
            conn.close()

    def cursor(self, conn: Any) -> Any:
        return conn.cursor()


class MariaSource(SqlSource):
    PARAM = "%s"
    CONCAT = "CONCAT(descr, ' {tag}')"

    def cursor(self, conn: Any) -> Any:
        return conn.cursor(pymysql.cursors.SSCursor)


class WholeSource:
    """A source that is rewritten whole for every change: a CSV or xlsx file, or the pages of
    the HTTP server. It keeps its `(id, pn, maker, lot, descr, version)` rows here and offers
    what `SqlSource` does, `write` putting the rows out and `reader` being the bare read (batches
    of `(pn, maker, lot, descr, version)`)."""

    def __init__(
        self,
        source_kind: str,
        connection: dict[str, Any],
        write: Callable[[list[Row]], None],
        reader: Callable[[], Batches],
    ) -> None:
        self.source_kind = source_kind
        self._connection = connection
        self.write = write
        self.reader = reader
        self.data: list[Row] = []

    def connection(self) -> dict[str, Any]:
        return self._connection

    def create(self, rows: list[Row]) -> None:
        self.data = rows
        self.write(rows)

    def update(self, tag: str, version: int, which: Some | None = None) -> None:
        self.create(
            [
                (*r[:4], f"{r[4]} {tag}", version) if which is None or which(r) else r
                for r in self.data
            ]
        )

    def take(self, which: Some) -> list[Row]:
        gone = [r[1:5] for r in self.data if which(r)]
        self.create([r for r in self.data if not which(r)])
        return gone

    def read(self, above: int | None = None) -> Batches:
        """The bare read: every row, or (a file or the pages have no query) every row read
        and those whose version is above `above` kept, in batches."""
        if above is None:
            return self.reader()
        mark = above
        return chunks(r for batch in self.reader() for r in batch if int(r[4]) > mark)


def write_csv(path: Path, rows: list[Row]) -> None:
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(["pn", "maker", "lot", "descr", "version"])
        writer.writerows(r[1:] for r in rows)


def read_csv(path: Path) -> Batches:
    with path.open(newline="", encoding="utf-8-sig") as src:
        reader = csv.reader(src)
        next(reader)
        yield from chunks(tuple(r) for r in reader)


def write_xlsx(path: Path, rows: list[Row]) -> None:
    """A workbook written as openpyxl streams one, with the `<dimension>` Excel writes
    (without it openpyxl's own read is many times slower, a poor baseline)."""
    plain = path.with_suffix(".tmp.xlsx")
    wb = Workbook(write_only=True)
    ws = wb.create_sheet("parts")
    ws.append(["pn", "maker", "lot", "descr", "version"])
    for r in rows:
        ws.append(list(r[1:]))
    wb.save(plain)
    add_dimension(plain, path, f"A1:E{len(rows) + 1}")
    plain.unlink()


def read_xlsx(path: Path) -> Batches:
    wb = load_workbook(path, read_only=True, data_only=True)
    try:
        rows = wb.worksheets[0].iter_rows(values_only=True)
        next(rows)
        yield from chunks(rows)
    finally:
        wb.close()


def write_pages(folder: Path, rows: list[Row]) -> None:
    """Pages of `BATCH` records as `{"items": [...]}` files, 1-based, for `serve_pages`."""
    for old in folder.glob("page-*.json"):
        old.unlink()
    names = ("pn", "maker", "lot", "descr", "version")
    for number, start in enumerate(range(0, len(rows), BATCH), 1):
        items = [dict(zip(names, r[1:], strict=True)) for r in rows[start : start + BATCH]]
        (folder / f"page-{number}.json").write_text(json.dumps({"items": items}))


def serve_pages(folder: Path, port: int) -> None:
    """Serve `GET /parts?page=N&size=M` from the page files (another process: `--serve`)."""
    empty = json.dumps({"items": []}).encode()

    async def parts(request: web.Request) -> web.Response:
        path = folder / f"page-{int(request.query.get('page', '1'))}.json"
        body = path.read_bytes() if path.exists() else empty
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_get("/parts", parts)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


async def _read_pages(url: str) -> list[list[Row]]:
    out: list[list[Row]] = []
    async with aiohttp.ClientSession() as session:
        page = 1
        while True:
            async with session.get(url, params={"page": page, "size": BATCH}) as resp:
                resp.raise_for_status()
                items = (await resp.json())["items"]
            if items:
                out.append(
                    [(r["pn"], r["maker"], r["lot"], r["descr"], r["version"]) for r in items]
                )
            if len(items) < BATCH:
                return out
            page += 1


def read_http(url: str) -> Batches:
    """The bare aiohttp client: every page read and decoded, then the batches (a page each)."""
    yield from asyncio.run(_read_pages(url))


# ---- the daemon ---------------------------------------------------------------------------


def rss_kb(pid: int, name: str) -> int:
    match = re.search(rf"{name}:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    assert match is not None
    return int(match.group(1))


def reset_peak(pid: int) -> bool:
    """Reset the process's VmHWM to its current RSS (Linux >= 4.0); False when not allowed."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def run_task(daemon: Daemon, task_type: str, source_id: str) -> tuple[dict[str, Any], float]:
    """Run one sync to its end; the task and the seconds from the request to the end seen."""
    started = time.perf_counter()
    body = {"task_type": task_type, "data_source_id": source_id, "max_attempts": 1}
    task_id = daemon.call("POST", "/api/sync/tasks", body)["id"]

    def done() -> Any:
        task = daemon.call("GET", f"/api/sync/tasks/{task_id}")
        return task if task["status"] in ("completed", "failed", "cancelled") else None

    task = wait_until(done, 7200, f"task {task_id}")
    elapsed = time.perf_counter() - started
    if task["status"] != "completed":
        raise SystemExit(f"{task_type} of {source_id} ended {task['status']}: {task['error']}")
    return task, elapsed


def task_seconds(task: dict[str, Any]) -> float:
    started = datetime.fromisoformat(task["started_at"].replace("Z", "+00:00"))
    ended = datetime.fromisoformat(task["finished_at"].replace("Z", "+00:00"))
    return (ended - started).total_seconds()


def define(
    daemon: Daemon, source_id: str, kind: str, connection: dict[str, Any], **extra: Any
) -> None:
    daemon.request("DELETE", f"/api/sync/data-sources/{source_id}")
    body = {
        "id": source_id,
        "name": source_id,
        "kind": kind,
        "connection": connection,
        "target_table": "lot_partnumbers",
        "key_columns": ["vendor", "partnumber"],
        "column_mapping": MAPPING,
        "batch_size": BATCH,
        **extra,
    }
    daemon.call("POST", "/api/sync/data-sources", body, expect=201)


@dataclass
class Pass:
    """One measured pass: the sync and its baseline before and after."""

    daemon: Daemon
    label: str
    target: float
    rows: int
    results: list[str]

    def measure(
        self,
        task_type: str,
        source_id: str,
        baseline: Callable[[SqliteBare], Any],
        bares: tuple[SqliteBare, SqliteBare],
        *,
        clear: bool = False,
        expect: dict[str, int],
    ) -> float:
        """Baseline, sync, baseline; print the figures; the ratio.

        The baseline runs on one bare target before the sync and on the other after it, each
        holding what the daemon's target held before the sync (`clear`: empty), so that both
        do the same work as the sync without a reset in between whose writes could still be
        settling in the database.
        """
        assert self.daemon.proc is not None
        pid = self.daemon.proc.pid
        if clear:
            for bare in bares:
                bare.clear()
        first = timed(functools.partial(baseline, bares[0]))
        rss_before = rss_kb(pid, "VmRSS")
        reset = reset_peak(pid)
        task, ours = run_task(self.daemon, task_type, source_id)
        growth = (rss_kb(pid, "VmHWM") - rss_before) / 1024
        second = timed(functools.partial(baseline, bares[1]))
        result = task["result"]
        wrong = {k: (result[k], v) for k, v in expect.items() if result[k] != v}
        if wrong:
            raise SystemExit(f"{self.label}: counts (got, expected) {wrong}; result {result}")
        mean = (first + second) / 2
        ratio = ours / mean
        peak = "" if reset else " (lifetime peak: clear_refs refused)"
        print(f"{self.label}:")
        print(
            f"  bare baseline:     {mean:8.3f} s  ({self.rows / mean:10,.0f} rows/s;"
            f" before {first:.3f} s, after {second:.3f} s)"
        )
        print(
            f"  {task_type:<18} {ours:8.3f} s  ({self.rows / ours:10,.0f} rows/s;"
            f" the task ran {task_seconds(task):.3f} s)"
        )
        print(f"  ratio:             {ratio:8.2f}x  (target <= {self.target}x)")
        print(f"  daemon RSS growth: {growth:8.1f} MB{peak}")
        shown = {k: result[k] for k in ("read", "inserted", "updated", "deleted", "failed")}
        print(f"  result:            {json.dumps(shown)}")
        self.results.append(f"{self.label:<42} {ratio:6.2f}x (<= {self.target}x)  {growth:6.1f} MB")
        return ratio


def clear_target(daemon: Daemon) -> None:
    """Empty the daemon's `lot_partnumbers` (a SQLite daemon, idle between kinds)."""
    path = daemon.database_url.removeprefix("sqlite:///")
    conn = sqlite3.connect(path, timeout=30)
    with conn:
        conn.execute("DELETE FROM lot_partnumbers")
    conn.close()


def sqlite_ddl(daemon: Daemon) -> str:
    path = daemon.database_url.removeprefix("sqlite:///")
    conn = sqlite3.connect(path)
    ddl = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'lot_partnumbers'").fetchone()
    conn.close()
    return str(ddl[0])


def start_daemon(folder: Path, database_url: str, sources: Path) -> Daemon:
    env = {
        "SYNCD_STATE_DIR": str(folder / "state"),
        "SYNCD_DATABASE_URL": database_url,
        "SYNCD_LOG_FORMAT": "text",
        "SYNCD_LOG_LEVEL": "WARNING",
        "SYNCD_API_TOKENS": "",
        "SYNCD_EGRESS_ALLOWED_HOSTS": "127.0.0.1",
        "SYNCD_SOURCE_DIRS": str(sources),
    }
    folder.mkdir(parents=True, exist_ok=True)
    daemon = Daemon(env, folder / "daemon.log")
    daemon.run("migrate")
    return daemon.start()


# ---- the passes ---------------------------------------------------------------------------


def bench_source(
    daemon: Daemon,
    kind: str,
    source: SqlSource | WholeSource,
    bares: tuple[SqliteBare, SqliteBare],
    rows: int,
    results: list[str],
) -> None:
    """new, update, incremental (1% changed) and delete_missing (1% gone) of one source."""
    source.create(source_rows(rows))
    connection = source.connection()
    define(daemon, kind, source.source_kind, connection, watermark_column="version")
    define(daemon, f"{kind}-dm", source.source_kind, connection, delete_missing=True)

    def full(bare: SqliteBare) -> None:
        bare.upsert(source.read())

    Pass(daemon, f"{kind}: full_sync, every row new", TARGETS["new"], rows, results).measure(
        "full_sync", kind, full, bares, clear=True, expect={"inserted": rows, "updated": 0}
    )
    source.update("u", 2)
    Pass(
        daemon, f"{kind}: full_sync, every row an update", TARGETS["update"], rows, results
    ).measure("full_sync", kind, full, bares, expect={"inserted": 0, "updated": rows})
    run_task(daemon, "incremental_sync", kind)  # stores the watermark (2)
    source.update("c", 3, Some(100, 0))
    changes = len(range(0, rows, 100))

    def incremental(bare: SqliteBare) -> None:
        bare.upsert(source.read(above=2))

    label = f"{kind}: incremental_sync, 1% changed"
    Pass(daemon, label, TARGETS["incremental"], changes, results).measure(
        "incremental_sync",
        kind,
        incremental,
        bares,
        expect={"read": changes, "inserted": 0, "updated": changes},
    )
    gone = source.take(Some(100, 50))
    left = rows - len(gone)

    def delete(bare: SqliteBare) -> None:
        bare.delete_missing(source.read())

    label = f"{kind}: full_sync + delete_missing, 1% gone"
    Pass(daemon, label, TARGETS["delete_missing"], rows, results).measure(
        "full_sync",
        f"{kind}-dm",
        delete,
        bares,
        expect={"read": left, "inserted": 0, "updated": left, "deleted": len(gone)},
    )


@contextlib.contextmanager
def page_server(folder: Path) -> Iterator[str]:
    """The page server in a process of its own; its URL."""
    port = free_port()
    command = [sys.executable, "-m", "bench.syncs", "--serve", str(folder), "--port", str(port)]
    proc = subprocess.Popen(command)
    try:

        def up() -> bool:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                return True
            return False

        wait_until(up, 30, "the page server")
        yield f"http://127.0.0.1:{port}/parts"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def bench_sqlite_daemon(folder: Path, kinds: list[str], rows: int, results: list[str]) -> None:
    sources = folder / "sources"
    sources.mkdir()
    daemon = start_daemon(folder / "sqlite", f"sqlite:///{folder / 'syncd.db'}", sources)
    try:
        ddl = sqlite_ddl(daemon)
        bares = (SqliteBare(folder / "bare-a.db", ddl), SqliteBare(folder / "bare-b.db", ddl))
        for kind in kinds:
            clear_target(daemon)
            if kind == "sqlite":
                path = sources / "source.db"
                source = SqlSource(f"sqlite:///{path}", functools.partial(sqlite3.connect, path))
                bench_source(daemon, kind, source, bares, rows, results)
            elif kind in ("csv", "xlsx"):
                path = sources / f"parts.{kind}"
                write, read = (write_csv, read_csv) if kind == "csv" else (write_xlsx, read_xlsx)
                whole = WholeSource(
                    "file",
                    {"path": str(path)},
                    functools.partial(write, path),
                    functools.partial(read, path),
                )
                bench_source(daemon, kind, whole, bares, rows, results)
            elif kind == "http":
                pages = folder / "pages"
                pages.mkdir()
                with page_server(pages) as url:
                    connection = {
                        "url": url,
                        "items_path": "items",
                        "pagination": {"mode": "page", "size": BATCH},
                    }
                    whole = WholeSource(
                        "http",
                        connection,
                        functools.partial(write_pages, pages),
                        functools.partial(read_http, url),
                    )
                    bench_source(daemon, kind, whole, bares, rows, results)
        daemon.terminate()
    finally:
        daemon.close()


@contextlib.contextmanager
def mariadb_server(spec: str) -> Iterator[tuple[str, int]]:
    """`auto`: a private server (bench/mariadb.py); else `host:port` of a running one where
    the `syncd` user of bench/mariadb.py may create databases and users (the test suite's)."""
    if spec != "auto":
        host, _, port = spec.rpartition(":")
        yield host, int(port)
        return
    from bench.mariadb import MariaDBServer

    with MariaDBServer() as server:
        yield "127.0.0.1", server.port


def bench_mariadb(folder: Path, rows: int, spec: str, results: list[str]) -> None:
    from bench.mariadb import PASSWORD, USER

    prefix = f"bench_{uuid.uuid4().hex[:8]}"
    names = {part: f"{prefix}_{part}" for part in ("syncd", "source", "bare_a", "bare_b")}
    reader = f"{prefix}_r"
    with mariadb_server(spec) as (host, port):

        def connect(name: str | None = None) -> Callable[[], Any]:
            return lambda: pymysql.connect(
                host=host,
                port=port,
                user=USER,
                password=PASSWORD,
                database=name,
                charset="utf8mb4",
                autocommit=True,
            )

        def admin(statement: str) -> None:
            with connect()() as conn, conn.cursor() as cursor:
                cursor.execute(statement)

        for name in names.values():
            admin(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
        # A source's user may not read syncd's own database (docs/security.md).
        for where in ("127.0.0.1", "localhost"):
            admin(f"CREATE USER '{reader}'@'{where}' IDENTIFIED BY 'reader'")
            admin(f"GRANT SELECT ON `{names['source']}`.* TO '{reader}'@'{where}'")
        try:
            url = f"mysql+pymysql://{USER}:{PASSWORD}@{host}:{port}/{names['syncd']}"
            daemon = start_daemon(folder / "mariadb", url, folder / "sources")
            try:
                with connect(names["syncd"])() as conn, conn.cursor() as cursor:
                    cursor.execute("SHOW CREATE TABLE lot_partnumbers")
                    ddl = cursor.fetchone()[1]
                bares = (
                    MariaBare(connect(names["bare_a"]), ddl),
                    MariaBare(connect(names["bare_b"]), ddl),
                )
                source_url = f"mysql+pymysql://{reader}:reader@{host}:{port}/{names['source']}"
                source = MariaSource(source_url, connect(names["source"]))
                bench_source(daemon, "mariadb", source, bares, rows, results)
                for bare in bares:
                    bare.conn.close()
                daemon.terminate()
            finally:
                daemon.close()
        finally:
            for where in ("127.0.0.1", "localhost"):
                admin(f"DROP USER IF EXISTS '{reader}'@'{where}'")
            for name in names.values():
                admin(f"DROP DATABASE IF EXISTS `{name}`")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of every source")
    parser.add_argument("--kinds", default=",".join(KINDS), help="source kinds to run")
    parser.add_argument("--dir", type=Path, default=None, help="where to put the files")
    parser.add_argument(
        "--mariadb",
        default="auto",
        help="'auto' (a private server) or host:port of one where bench/mariadb.py's user may"
        " create databases and users",
    )
    parser.add_argument("--serve", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:
        serve_pages(args.serve, args.port)
        return
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        raise SystemExit(f"unknown kinds {unknown}; known: {', '.join(KINDS)}")
    results: list[str] = []
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        folder = Path(tmp)
        on_sqlite = [k for k in kinds if k != "mariadb"]
        if on_sqlite:
            bench_sqlite_daemon(folder, on_sqlite, args.rows, results)
        if "mariadb" in kinds:
            bench_mariadb(folder, args.rows, args.mariadb, results)
    print(f"summary ({args.rows:,} rows; ratio to the bare baseline, daemon RSS growth):")
    for line in results:
        print(f"  {line}")


if __name__ == "__main__":
    main()
