"""What a failed statement is answered with, from real database errors (SQLite files and the
suite's MariaDB): the request's fault is 409/422, a full database 507, only an outage 503.
And, through the daemon's app: a write lock held by another process costs a create about
SYNCD_DB_TIMEOUT_S (not the sum of everything queued), `/readyz` tells a locked or full
database from a healthy one, and a full SQLite database is 507 with nothing half-written."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from controllers.app import create_app
from controllers.errors import error_middleware
from controllers.keys import DB
from schedule.database import async_url
from schedule.store.sqlite_writer import writer_for
from tests.conftest import make_settings

Client = TestClient[web.Request, web.Application]
AiohttpClient = Callable[[web.Application], Awaitable[Client]]
Statement = Callable[[AsyncConnection], Awaitable[Any]]
DB_TIMEOUT_S = 1.0


def statement_app(engine: AsyncEngine, statements: dict[str, Statement]) -> web.Application:
    """An app with the daemon's error middleware whose routes run real statements."""
    app = web.Application(middlewares=[error_middleware])

    def route(run: Statement) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handler(request: web.Request) -> web.Response:
            async with engine.begin() as conn:
                await run(conn)
            return web.json_response({"ok": True})

        return handler

    for name, run in statements.items():
        app.router.add_post(f"/{name}", route(run))
    return app


async def error_of(client: Client, name: str) -> tuple[int, dict[str, Any]]:
    resp = await client.post(f"/{name}")
    return resp.status, (await resp.json())["error"]


async def schedule_row(conn: AsyncConnection, job_id: str, task_type: str | None) -> None:
    await conn.execute(
        text(
            "INSERT INTO sync_schedules (id, task_type, paused, created_at, updated_at) "
            "VALUES (:id, :type, 0, '2026-01-01 00:00:00', '2026-01-01 00:00:00')"
        ),
        {"id": job_id, "type": task_type},
    )


async def test_constraint_failures_are_409_not_503(
    aiohttp_client: AiohttpClient, ddb: AsyncEngine
) -> None:
    async with ddb.begin() as conn:
        await schedule_row(conn, "taken", "noop")

    async def duplicate(conn: AsyncConnection) -> None:
        await schedule_row(conn, "taken", "noop")

    async def null(conn: AsyncConnection) -> None:
        await schedule_row(conn, "fresh", None)

    client = await aiohttp_client(statement_app(ddb, {"duplicate": duplicate, "null": null}))
    for name in ("duplicate", "null"):
        status, error = await error_of(client, name)
        assert (status, error["code"]) == (409, "conflict"), error
        assert error["message"].startswith("the request conflicts with stored data: ")


@pytest.mark.mariadb
async def test_values_the_column_cannot_hold_are_422_on_mariadb(
    aiohttp_client: AiohttpClient, mariadb_url: str
) -> None:
    engine = create_async_engine(async_url(mariadb_url))

    async def too_long(conn: AsyncConnection) -> None:
        await conn.execute(text("CREATE TEMPORARY TABLE t (v VARCHAR(3))"))
        await conn.execute(text("INSERT INTO t VALUES ('four')"))

    async def bad_date(conn: AsyncConnection) -> None:
        await conn.execute(text("CREATE TEMPORARY TABLE d (v DATETIME)"))
        await conn.execute(text("INSERT INTO d VALUES ('2026-13-45 99:00:00')"))

    try:
        client = await aiohttp_client(
            statement_app(engine, {"too_long": too_long, "bad_date": bad_date})
        )
        for name in ("too_long", "bad_date"):
            status, error = await error_of(client, name)
            assert (status, error["code"]) == (422, "validation_error"), error
            assert error["message"].startswith("a value does not fit the database: ")
    finally:
        await engine.dispose()


@pytest.mark.mariadb
async def test_a_full_table_is_507_on_mariadb(
    aiohttp_client: AiohttpClient, mariadb_url: str
) -> None:
    engine = create_async_engine(async_url(mariadb_url))

    async def fill(conn: AsyncConnection) -> None:
        # A MEMORY table bounded by max_heap_table_size fills up for real: error 1114.
        await conn.execute(text("SET SESSION max_heap_table_size = 16384"))
        await conn.execute(text("CREATE TEMPORARY TABLE m (v VARCHAR(200)) ENGINE=MEMORY"))
        for _ in range(1000):
            await conn.execute(text("INSERT INTO m VALUES (REPEAT('x', 200))"))

    try:
        client = await aiohttp_client(statement_app(engine, {"fill": fill}))
        status, error = await error_of(client, "fill")
        assert (status, error["code"]) == (507, "insufficient_storage"), error
        assert "full" in error["message"]
    finally:
        await engine.dispose()


async def test_a_full_sqlite_database_is_507(
    aiohttp_client: AiohttpClient, sqlite_url: str
) -> None:
    engine = create_async_engine(async_url(sqlite_url))

    async def fill(conn: AsyncConnection) -> None:
        pages = (await conn.execute(text("PRAGMA page_count"))).scalar_one()
        await conn.execute(text(f"PRAGMA max_page_count = {pages}"))  # this connection only
        await conn.execute(text("CREATE TEMPORARY TABLE keep (x)"))  # not in the main file
        await conn.execute(text("CREATE TABLE big (v BLOB)"))
        await conn.execute(text("INSERT INTO big VALUES (zeroblob(100000))"))

    try:
        client = await aiohttp_client(statement_app(engine, {"fill": fill}))
        status, error = await error_of(client, "fill")
        assert (status, error["code"]) == (507, "insufficient_storage"), error
    finally:
        await engine.dispose()


async def test_an_unreachable_database_is_503(aiohttp_client: AiohttpClient) -> None:
    engine = create_async_engine(
        async_url("mysql+pymysql://u:p@127.0.0.1:9/nothing"), connect_args={"connect_timeout": 2}
    )

    async def anything(conn: AsyncConnection) -> None:
        await conn.execute(text("SELECT 1"))

    try:
        client = await aiohttp_client(statement_app(engine, {"anything": anything}))
        status, error = await error_of(client, "anything")
        assert (status, error["code"]) == (503, "unavailable"), error
        assert "cannot be reached" in error["message"]
        assert "127.0.0.1" not in error["message"]  # the log has the address; clients do not
    finally:
        await engine.dispose()


# ---- through the daemon's app ------------------------------------------------------------


HOLD_LOCK = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("held", flush=True)
sys.stdin.read()
conn.execute("ROLLBACK")
"""


class LockHolder:
    """Another process holding SQLite's write lock on a database file until released."""

    def __init__(self, database_url: str) -> None:
        self.path = make_url(database_url).database
        self.process: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> LockHolder:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            HOLD_LOCK,
            str(self.path),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert self.process.stdout is not None
        async with asyncio.timeout(10):
            assert await self.process.stdout.readline() == b"held\n"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.process is not None and self.process.stdin is not None
        self.process.stdin.close()
        async with asyncio.timeout(10):
            await self.process.wait()


async def create(client: Client, **more: Any) -> tuple[int, Any, float]:
    """POST a task; (status, body, seconds it took)."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    resp = await client.post("/api/sync/tasks", json={"task_type": "noop", **more})
    return resp.status, await resp.json(), loop.time() - started


async def readiness(client: Client) -> tuple[int, dict[str, str]]:
    resp = await client.get("/readyz")
    return resp.status, (await resp.json())["checks"]


@pytest.fixture
async def sqlite_client(
    aiohttp_client: AiohttpClient, sqlite_url: str, tmp_path: Path
) -> AsyncIterator[Client]:
    settings = make_settings(sqlite_url, tmp_path, db_timeout_s=DB_TIMEOUT_S)
    yield await aiohttp_client(create_app(settings))


async def test_under_another_process_write_lock_creates_answer_503_within_the_timeout(
    sqlite_client: Client, sqlite_url: str
) -> None:
    async with LockHolder(sqlite_url):
        # Several at once, while the engine's own claims queue for the lock too: each is
        # answered within about its own timeout, not after the ones before it.
        answers = await asyncio.gather(*(create(sqlite_client) for _ in range(5)))
        for status, body, seconds in answers:
            assert (status, body["error"]["code"]) == (503, "unavailable"), body
            assert seconds < 2.5 * DB_TIMEOUT_S, f"took {seconds:.1f} s"
        status, checks = await readiness(sqlite_client)
        assert status == 503
        assert checks["database"] == "ok"  # it answers reads; it cannot take a write
        assert "another process holds the database" in checks["writes"], checks
    assert await readiness(sqlite_client) == (
        200,
        {"database": "ok", "writes": "ok", "engine": "ok"},
    )
    status, body, _ = await create(sqlite_client)
    assert status == 201, body


async def test_a_full_sqlite_database_is_507_and_not_ready_until_it_has_room(
    sqlite_client: Client,
) -> None:
    writer = writer_for(sqlite_client.app[DB].engine, DB_TIMEOUT_S)

    def limit(pages: int | None) -> Callable[[Any], Any]:
        def work(conn: Any) -> None:
            size = pages or conn.execute("PRAGMA page_count").fetchone()[0]
            conn.execute(f"PRAGMA max_page_count = {size}")

        return work

    await writer.transaction(limit(None))  # the writer's connection: the one creates use
    later = "2099-01-01T00:00:00Z"
    created = 0
    for _ in range(200):  # the room left in the last pages fills first
        status, body, _ = await create(
            sqlite_client, run_after=later, dedupe_key="k" * 250 + str(created)
        )
        if status != 201:
            break
        created += 1
    assert (status, body["error"]["code"]) == (507, "insufficient_storage"), body
    assert "full" in body["error"]["message"]
    listed = await (await sqlite_client.get("/api/sync/tasks?size=1")).json()
    assert listed["pagination"]["total"] == created  # the refused create left nothing
    status, checks = await readiness(sqlite_client)
    assert status == 503 and checks["writes"].startswith("the database is full"), checks

    await writer.transaction(limit(1_000_000))
    assert (await readiness(sqlite_client))[0] == 200
    assert (await create(sqlite_client))[0] == 201


@pytest.mark.mariadb
async def test_a_read_only_server_is_not_ready(
    aiohttp_client: AiohttpClient, mariadb_url: str, tmp_path: Path
) -> None:
    from tests.conftest import migrate_url

    migrate_url(mariadb_url)
    client = await aiohttp_client(create_app(make_settings(mariadb_url, tmp_path)))
    engine = client.app[DB].engine
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SET GLOBAL read_only = 1"))
        status, checks = await readiness(client)
        assert status == 503 and "read-only" in checks["writes"], checks
    finally:
        async with engine.connect() as conn:
            await conn.execute(text("SET GLOBAL read_only = 0"))
    assert (await readiness(client))[0] == 200
