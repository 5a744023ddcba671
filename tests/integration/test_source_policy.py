"""What data sources may reach: the attacks of the security review, replayed on real databases.

Each attack is tried twice: through the API (refused with a 422 naming the field) and as a
definition stored before the rules existed (written to the store directly), whose sync must fail
with a clear error, change nothing and leak nothing into the task's record errors.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import socket
import sqlite3
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.mariadb import MariaDBServer
from config.settings import Settings
from controllers.app import create_app
from controllers.keys import DATA_SOURCES, SETTINGS
from engine.sources.sql import SqlSourceError, SqlTimeouts, read_only
from schedule.database import create_engine
from tests.conftest import make_settings
from tests.helpers import task_json_once

Client = TestClient[Any, Any]
SECRET = "hunter2-s3cret"
PARTS = {"pn": "partnumber", "maker": "vendor", "lot": "lot_name"}
STEAL = {"id": "vendor", "connection": "description", "no_such_field": "partnumber"}
"""The review's mapping: every row is rejected (no partnumber), so each would be kept, secrets
and all, among the task's record errors."""


@pytest.fixture
def app_settings(database_url: str, tmp_path: Path) -> Settings:
    return make_settings(database_url, tmp_path)


@pytest.fixture
async def client(aiohttp_client: AiohttpClient, app_settings: Settings) -> Client:
    return await aiohttp_client(create_app(app_settings))


@pytest.fixture
async def db(app_settings: Settings) -> AsyncIterator[AsyncEngine]:
    engine = await asyncio.to_thread(create_engine, app_settings)
    yield engine
    await engine.dispose()


def source_body(**fields: Any) -> dict[str, Any]:
    return {
        "id": "src",
        "name": "parts",
        "kind": "sql",
        "target_table": "lot_partnumbers",
        "key_columns": ["vendor", "partnumber"],
        "column_mapping": PARTS,
        **fields,
    }


async def refused(client: Client, body: dict[str, Any]) -> dict[str, str]:
    """POST a definition that must be refused; `{field: message}` of the 422."""
    resp = await client.post("/api/sync/data-sources", json=body)
    assert resp.status == 422, await resp.text()
    error = (await resp.json())["error"]
    assert error["code"] == "validation_error"
    return {d["field"]: d["message"] for d in error["details"]}


async def store_anyway(client: Client, body: dict[str, Any]) -> None:
    """Store a definition as one from before the rules would have been stored (no checks)."""
    values = {k: v for k, v in source_body(**body).items() if k != "id"}
    values.setdefault("connection", {})
    values.setdefault("watermark_column", None)
    values.setdefault("delete_missing", False)
    values.setdefault("interfaces", {})
    values.setdefault("batch_size", 1000)
    await client.app[DATA_SOURCES].create(body.get("id", "src"), values)


async def run_task(client: Client, task_type: str = "full_sync", **fields: Any) -> dict[str, Any]:
    body = {"task_type": task_type, "data_source_id": "src", "max_attempts": 1, **fields}
    resp = await client.post("/api/sync/tasks", json=body)
    assert resp.status == 201, await resp.text()
    return await task_json_once(client, (await resp.json())["id"])


async def record_errors(client: Client, task_id: str) -> list[dict[str, Any]]:
    resp = await client.get(f"/api/sync/tasks/{task_id}/errors")
    assert resp.status == 200
    errors: list[dict[str, Any]] = (await resp.json())["errors"]
    return errors


async def table_names(db: AsyncEngine) -> set[str]:
    def names(conn: Any) -> set[str]:
        from sqlalchemy import inspect

        return set(inspect(conn).get_table_names())

    async with db.connect() as conn:
        return await conn.run_sync(names)


async def count(db: AsyncEngine, table: str) -> int:
    async with db.connect() as conn:
        return int((await conn.execute(text(f"SELECT COUNT(*) FROM {table}"))).scalar_one())


def make_source_db(path: Path, rows: list[tuple[Any, ...]]) -> str:
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("CREATE TABLE IF NOT EXISTS parts (pn TEXT, maker TEXT, lot TEXT)")
        conn.execute("CREATE INDEX IF NOT EXISTS ix_parts_lot ON parts (lot)")
        conn.executemany("INSERT INTO parts VALUES (?, ?, ?)", rows)
    conn.close()
    return f"sqlite:///{path}"


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---- sync targets ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "table",
    ["sync_tasks", "SYNC_TASKS", "sync_data_sources", "stock_log", "qt_partnumber_books", "nope"],
)
async def test_only_declared_sync_targets_are_accepted(client: Client, table: str) -> None:
    problems = await refused(client, source_body(target_table=table, connection={"url": "x"}))
    assert "target_table" in problems
    assert ("syncd's own tables" in problems["target_table"]) == (table != "nope")


async def test_a_file_source_cannot_empty_the_queue(
    client: Client, db: AsyncEngine, app_settings: Settings
) -> None:
    """The review's attack: a one-row CSV into `sync_tasks` keyed by id with delete_missing."""
    folder = app_settings.source_dirs[0]
    await asyncio.to_thread(folder.mkdir, parents=True)
    csv = folder / "one.csv"
    await asyncio.to_thread(csv.write_text, "id\nnot-a-task\n")
    waiting = []
    for _ in range(3):
        resp = await client.post(
            "/api/sync/tasks", json={"task_type": "noop", "run_after": "2999-01-01T00:00:00Z"}
        )
        waiting.append((await resp.json())["id"])
    attack = {
        "kind": "file",
        "connection": {"path": str(csv)},
        "target_table": "sync_tasks",
        "key_columns": ["id"],
        "column_mapping": {},
        "delete_missing": True,
    }
    assert "target_table" in await refused(client, source_body(**attack))
    await store_anyway(client, attack)
    task = await run_task(client)
    assert task["status"] == "failed"
    assert "target table 'sync_tasks' is not a sync target" in task["error"]
    assert await count(db, "sync_tasks") == len(waiting) + 1
    for task_id in waiting:
        shown = await (await client.get(f"/api/sync/tasks/{task_id}")).json()
        assert shown["status"] == "pending"


async def test_a_listed_table_is_a_sync_target(
    aiohttp_client: AiohttpClient, database_url: str, tmp_path: Path
) -> None:
    settings = await asyncio.to_thread(
        make_settings, database_url, tmp_path, sync_target_tables=["erp_parts"]
    )
    client = await aiohttp_client(create_app(settings))
    db = await asyncio.to_thread(create_engine, settings)
    try:
        async with db.begin() as conn:
            await conn.execute(
                text("CREATE TABLE erp_parts (pn VARCHAR(64) PRIMARY KEY, lot VARCHAR(64))")
            )
        url = await asyncio.to_thread(make_source_db, tmp_path / "s.db", [("P1", "V", "L1")])
        resp = await client.post(
            "/api/sync/data-sources",
            json=source_body(
                connection={"url": url, "query": "SELECT pn, lot FROM parts"},
                target_table="erp_parts",
                key_columns=["pn"],
                column_mapping={},
            ),
        )
        assert resp.status == 201, await resp.text()
        task = await run_task(client)
        assert task["status"] == "completed", task
        assert await count(db, "erp_parts") == 1
    finally:
        async with db.begin() as conn:
            await conn.execute(text("DROP TABLE erp_parts"))
        await db.dispose()


# ---- SQL sources on SQLite ------------------------------------------------------------------


@pytest.fixture
def own_path(sqlite_url: str) -> Path:
    return Path(make_url(sqlite_url).database or "")


@pytest.fixture
async def sqlite_client(aiohttp_client: AiohttpClient, sqlite_url: str, tmp_path: Path) -> Client:
    return await aiohttp_client(
        create_app(await asyncio.to_thread(make_settings, sqlite_url, tmp_path))
    )


async def test_sqlite_attacks_on_syncds_own_database(
    sqlite_client: Client, own_path: Path, tmp_path: Path
) -> None:
    """DROP TABLE, VACUUM INTO, ATTACH and reading the secrets, at syncd's own SQLite file:
    refused at validation, and failing without effect or leak when stored anyway."""
    client = sqlite_client
    victim = {
        "kind": "sql",
        "connection": {"url": f"mysql+pymysql://erp:{SECRET}@db.example/erp", "table": "t"},
    }
    resp = await client.post("/api/sync/data-sources", json=source_body(id="victim", **victim))
    assert resp.status == 201, await resp.text()
    link = tmp_path / "innocent.db"
    await asyncio.to_thread(link.symlink_to, own_path)
    copy, attached = tmp_path / "copy.db", tmp_path / "attached.db"
    attacks = [
        (own_path, "DROP TABLE stock_log"),
        (own_path, f"VACUUM INTO '{copy}'"),
        (own_path, f"ATTACH '{attached}' AS a"),
        (own_path, "SELECT id, connection FROM sync_data_sources"),
        (link, "SELECT id, connection FROM sync_data_sources"),
    ]
    mapping = STEAL
    for path, query in attacks:
        connection = {"url": f"sqlite:///{path}", "query": query}
        problems = await refused(client, source_body(connection=connection, column_mapping=mapping))
        assert "syncd's own database" in problems["connection.url"], problems
        await store_anyway(client, {"connection": connection, "column_mapping": mapping})
        task = await run_task(client)
        assert task["status"] == "failed", task
        assert "refused" in task["error"] or "syncd's own database" in task["error"], task
        assert SECRET not in str(task) and SECRET not in str(
            await record_errors(client, task["id"])
        )
        assert await record_errors(client, task["id"]) == []
        assert (await client.delete("/api/sync/data-sources/src")).status == 204
    db = await asyncio.to_thread(create_engine, client.app[SETTINGS])
    try:
        assert "stock_log" in await table_names(db)
    finally:
        await db.dispose()
    assert not copy.exists() and not attached.exists()


async def test_a_copy_of_syncds_database_is_refused(
    sqlite_client: Client, own_path: Path, tmp_path: Path
) -> None:
    """Another file holding `sync_tasks` (a backup, a copy) is refused when read, secrets and
    all, though its path differs."""
    client = sqlite_client
    victim = {"connection": {"url": f"mysql+pymysql://erp:{SECRET}@db.example/erp", "table": "t"}}
    resp = await client.post("/api/sync/data-sources", json=source_body(id="victim", **victim))
    assert resp.status == 201
    copy = tmp_path / "backup.db"
    await asyncio.to_thread(shutil.copyfile, own_path, copy)
    query = "SELECT id, connection FROM sync_data_sources"
    resp = await client.post(
        "/api/sync/data-sources",
        json=source_body(
            connection={"url": f"sqlite:///{copy}", "query": query},
            column_mapping=STEAL,
        ),
    )
    assert resp.status == 201, await resp.text()  # a different file: only reading tells
    task = await run_task(client)
    assert task["status"] == "failed"
    assert "holds syncd's sync_tasks table" in task["error"]
    assert await record_errors(client, task["id"]) == []
    assert SECRET not in str(task)


async def test_a_missing_sqlite_file_is_never_created(
    sqlite_client: Client, tmp_path: Path
) -> None:
    missing = tmp_path / "nowhere" / "erp.db"
    await asyncio.to_thread(missing.parent.mkdir)
    resp = await sqlite_client.post(
        "/api/sync/data-sources",
        json=source_body(connection={"url": f"sqlite:///{missing}", "table": "parts"}),
    )
    assert resp.status == 201, await resp.text()
    task = await run_task(sqlite_client)
    assert task["status"] == "failed"
    assert "no such SQLite file" in task["error"]
    assert not missing.exists()


SQLITE_WRITES = [
    "DROP TABLE parts",
    "DELETE FROM parts",
    "INSERT INTO parts VALUES ('x', 'y', 'z')",
    "UPDATE parts SET lot = 'changed'",
    "CREATE TABLE evil (i INTEGER)",
    "CREATE TEMP TABLE evil (i INTEGER)",
    "CREATE INDEX ix_parts ON parts (pn)",
    "ALTER TABLE parts ADD COLUMN x INTEGER",
    "ATTACH '{out}' AS a",
    "VACUUM INTO '{out}'",
    "VACUUM",
    "REINDEX ix_parts_lot",
    "ANALYZE",
    "PRAGMA query_only = 0",
    "PRAGMA journal_mode = WAL",
    "PRAGMA writable_schema = 1",
    "PRAGMA user_version = 7",
    "SELECT load_extension('/tmp/evil')",
    "WITH x AS (SELECT 1) DELETE FROM parts",
]


@pytest.mark.parametrize("statement", SQLITE_WRITES)
def test_the_sqlite_source_connection_cannot_write(
    statement: str, tmp_path: Path, sqlite_url: str
) -> None:
    """Below the query check: the connection itself refuses every write."""
    folder = tmp_path / "erp"
    folder.mkdir()
    path, out = folder / "erp.db", folder / "out.db"
    url = make_url(make_source_db(path, [("P1", "V", "L1")]))
    before = digest(path)
    timeouts = SqlTimeouts(5, 5)
    with (
        pytest.raises(Exception) as caught,
        read_only(url, timeouts, make_url(sqlite_url), "erp") as c,
    ):
        c.exec_driver_sql(statement.format(out=out))
    assert any(
        w in str(caught.value) for w in ("not authorized", "authorization denied", "readonly")
    )
    assert digest(path) == before
    assert sorted(os.listdir(folder)) == ["erp.db"]
    with read_only(url, timeouts, make_url(sqlite_url), "erp") as conn:
        assert conn.exec_driver_sql("SELECT pn, lot FROM parts").all() == [("P1", "L1")]


# ---- SQL sources on MariaDB -----------------------------------------------------------------


@pytest.fixture
def maria_source(mariadb_server: MariaDBServer) -> Iterator[dict[str, str]]:
    """A source schema `src_*` with a `parts` table, a user that may only read it (`ro`, as
    docs/security.md tells) and one that may do anything to it but nothing else (`rw`)."""
    tag = uuid.uuid4().hex[:10]
    schema = f"src_{tag}"
    mariadb_server.create_database(schema)
    mariadb_server.execute(
        f"CREATE TABLE {schema}.parts (pn VARCHAR(64) PRIMARY KEY, maker"
        " VARCHAR(64), lot VARCHAR(64))"
    )
    mariadb_server.execute(
        f"INSERT INTO {schema}.parts VALUES ('M1', 'V', 'L1'), ('M2', 'V', 'L2')"
    )
    base = f"127.0.0.1:{mariadb_server.port}/{schema}"
    urls = {"schema": schema}
    for user, grant in (("ro", "SELECT"), ("rw", "ALL PRIVILEGES")):
        name = f"{user}_{tag}"
        mariadb_server.execute(f"CREATE USER '{name}'@'127.0.0.1' IDENTIFIED BY '{SECRET}'")
        mariadb_server.execute(f"GRANT {grant} ON {schema}.* TO '{name}'@'127.0.0.1'")
        urls[user] = f"mysql+pymysql://{name}:{SECRET}@{base}"
    urls["syncd"] = mariadb_server.url(schema)
    yield urls
    for user in ("ro", "rw"):
        mariadb_server.execute(f"DROP USER IF EXISTS '{user}_{tag}'@'127.0.0.1'")
    mariadb_server.drop_database(schema)


MARIADB_WRITES = [
    "DROP TABLE parts",
    "DELETE FROM parts",
    "INSERT INTO parts VALUES ('x', 'y', 'z')",
    "UPDATE parts SET lot = 'changed'",
    "TRUNCATE parts",
    "CREATE TABLE evil (i INT)",
    "CREATE TEMPORARY TABLE evil (i INT)",
    "ALTER TABLE parts ADD COLUMN x INT",
    "RENAME TABLE parts TO gone",
    "CREATE INDEX ix_parts ON parts (lot)",
    "LOCK TABLES parts WRITE",
    "SELECT 1; DROP TABLE parts",
]


@pytest.mark.parametrize("statement", MARIADB_WRITES)
def test_the_mariadb_source_session_cannot_write(
    statement: str, maria_source: dict[str, str], mariadb_server: MariaDBServer, tmp_path: Path
) -> None:
    """A user that may write to the source schema still cannot through a source connection."""
    own = make_url(f"sqlite:///{tmp_path / 'own.db'}")
    url = make_url(maria_source["rw"])
    with pytest.raises(Exception) as caught, read_only(url, SqlTimeouts(5, 5), own, "erp") as c:
        c.exec_driver_sql(statement)
    assert "READ ONLY transaction" in str(caught.value) or "syntax" in str(caught.value)
    with mariadb_server.connect(maria_source["schema"]) as conn, conn.cursor() as cursor:
        cursor.execute("SHOW TABLES")
        assert cursor.fetchall() == (("parts",),)
        cursor.execute("SELECT pn, lot FROM parts ORDER BY pn")
        assert cursor.fetchall() == (("M1", "L1"), ("M2", "L2"))


@pytest.fixture
async def maria_client(
    mariadb_url: str, tmp_path: Path, aiohttp_client: AiohttpClient
) -> AsyncIterator[Client]:
    # mariadb_url first: its database is dropped only after the app has stopped.
    from tests.conftest import migrate_url

    await asyncio.to_thread(migrate_url, mariadb_url)
    yield await aiohttp_client(
        create_app(await asyncio.to_thread(make_settings, mariadb_url, tmp_path))
    )


async def test_mariadb_attacks_on_syncds_own_database(
    maria_client: Client, mariadb_url: str, maria_source: dict[str, str]
) -> None:
    client = maria_client
    victim = {"connection": {"url": f"mysql+pymysql://erp:{SECRET}@db.example/erp", "table": "t"}}
    resp = await client.post("/api/sync/data-sources", json=source_body(id="victim", **victim))
    assert resp.status == 201
    own_schema = make_url(mariadb_url).database
    steal = STEAL
    # syncd's own URL: the same server and schema.
    for query in ("DROP TABLE stock_log", "SELECT id, connection FROM sync_data_sources"):
        connection = {"url": mariadb_url, "query": query}
        problems = await refused(client, source_body(connection=connection, column_mapping=steal))
        assert "syncd's own database" in problems["connection.url"]
        await store_anyway(client, {"connection": connection, "column_mapping": steal})
        task = await run_task(client)
        assert task["status"] == "failed" and "syncd's own database" in task["error"], task
        assert await record_errors(client, task["id"]) == []
        assert (await client.delete("/api/sync/data-sources/src")).status == 204
    # Another schema, with a user that can read syncd's: refused when connecting.
    query = f"SELECT id, connection FROM `{own_schema}`.sync_data_sources"
    connection = {"url": maria_source["syncd"], "query": query}
    resp = await client.post(
        "/api/sync/data-sources", json=source_body(connection=connection, column_mapping=steal)
    )
    assert resp.status == 201, await resp.text()
    task = await run_task(client)
    assert task["status"] == "failed"
    assert "holds syncd's sync_tasks table" in task["error"]
    assert await record_errors(client, task["id"]) == [] and SECRET not in str(task)
    # The read-only user of the docs cannot read it at all.
    resp = await client.put(
        "/api/sync/data-sources/src",
        json={
            k: v
            for k, v in source_body(
                connection={"url": maria_source["ro"], "query": query}, column_mapping=steal
            ).items()
            if k != "id"
        },
    )
    assert resp.status == 200, await resp.text()
    task = await run_task(client)
    assert task["status"] == "failed" and "SELECT command denied" in task["error"]
    assert await record_errors(client, task["id"]) == [] and SECRET not in str(task)
    db = await asyncio.to_thread(create_engine, client.app[SETTINGS])
    try:
        assert "stock_log" in await table_names(db)
    finally:
        await db.dispose()


async def test_a_read_only_mariadb_user_syncs(
    client: Client, db: AsyncEngine, maria_source: dict[str, str]
) -> None:
    """The docs' recipe works end to end: a user with SELECT on the source schema only."""
    resp = await client.post(
        "/api/sync/data-sources",
        json=source_body(connection={"url": maria_source["ro"], "table": "parts"}),
    )
    assert resp.status == 201, await resp.text()
    task = await run_task(client)
    assert task["status"] == "completed", task
    assert (task["result"]["read"], task["result"]["inserted"]) == (2, 2)
    assert await count(db, "lot_partnumbers") == 2


# ---- timeouts -------------------------------------------------------------------------------


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port on 127.0.0.1 that accepts connections and never says a word."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield sock.getsockname()[1]


async def test_a_sql_source_that_never_answers_times_out(client: Client, silent_port: int) -> None:
    url = f"mysql+pymysql://u:{SECRET}@127.0.0.1:{silent_port}/erp"
    resp = await client.post(
        "/api/sync/data-sources",
        json=source_body(connection={"url": url, "table": "parts", "read_timeout_s": 0.5}),
    )
    assert resp.status == 201, await resp.text()
    task = await run_task(client)
    assert task["status"] == "failed"
    assert "no answer within 0.5 s" in task["error"], task["error"]
    assert f"u:***@127.0.0.1:{silent_port}" in task["error"] and SECRET not in task["error"]


async def test_the_source_timeout_setting_applies(
    aiohttp_client: AiohttpClient, sqlite_url: str, tmp_path: Path, silent_port: int
) -> None:
    settings = await asyncio.to_thread(
        make_settings, sqlite_url, tmp_path, source_read_timeout_s=0.3
    )
    client = await aiohttp_client(create_app(settings))
    url = f"mysql+pymysql://u:p@127.0.0.1:{silent_port}/erp"
    resp = await client.post(
        "/api/sync/data-sources", json=source_body(connection={"url": url, "table": "parts"})
    )
    assert resp.status == 201
    task = await run_task(client, max_attempts=2)
    assert task["status"] == "failed" and "no answer within 0.3 s" in task["error"]
    assert task["attempt"] == 2  # a source that does not answer is retried like one that is down


async def test_a_sqlite_query_that_never_returns_times_out(client: Client, tmp_path: Path) -> None:
    url = await asyncio.to_thread(make_source_db, tmp_path / "erp.db", [("P1", "V", "L1")])
    endless = (
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"
    )
    connection = {"url": url, "query": endless, "read_timeout_s": 0.3}
    resp = await client.post("/api/sync/data-sources", json=source_body(connection=connection))
    assert resp.status == 201, await resp.text()
    task = await run_task(client, max_attempts=2)
    assert task["status"] == "failed" and task["attempt"] == 2  # retried, as a silent server is
    assert "reading" in task["error"] and "no answer within 0.3 s" in task["error"], task["error"]


async def test_a_mariadb_query_that_does_not_answer_times_out(
    client: Client, maria_source: dict[str, str]
) -> None:
    connection = {
        "url": maria_source["ro"],
        "query": "SELECT SLEEP(30) AS pn",
        "read_timeout_s": 0.5,
    }
    resp = await client.post("/api/sync/data-sources", json=source_body(connection=connection))
    assert resp.status == 201, await resp.text()
    task = await run_task(client)
    assert task["status"] == "failed"
    assert "reading" in task["error"] and "no answer within 0.5 s" in task["error"], task["error"]
    assert SECRET not in task["error"]


def test_a_source_at_a_port_that_never_answers_raises(silent_port: int, tmp_path: Path) -> None:
    url = make_url(f"mysql+pymysql://u:p@127.0.0.1:{silent_port}/erp")
    own = make_url(f"sqlite:///{tmp_path / 'own.db'}")
    with (
        pytest.raises(SqlSourceError, match=r"no answer within 0\.2 s"),
        read_only(url, SqlTimeouts(5, 0.2), own, "erp"),
    ):
        pass


# ---- file sources ---------------------------------------------------------------------------


def file_body(path: Path | str, **fields: Any) -> dict[str, Any]:
    return source_body(kind="file", connection={"path": str(path)}, **fields)


def write_csv(path: Path, *pns: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("pn,maker,lot\n" + "".join(f"{pn},V,L-{pn}\n" for pn in pns))


async def test_file_sources_stay_under_the_source_directories(
    client: Client, app_settings: Settings, tmp_path: Path
) -> None:
    folder = app_settings.source_dirs[0]
    inside, outside = folder / "parts.csv", tmp_path / "elsewhere" / "parts.csv"
    await asyncio.to_thread(write_csv, inside, "A")
    await asyncio.to_thread(write_csv, outside, "B")
    link = folder / "link.csv"
    await asyncio.to_thread(link.symlink_to, outside)
    for path in ("/etc/shadow", outside, link, f"{folder}/../elsewhere/parts.csv", folder):
        problems = await refused(client, file_body(path))
        assert "connection.path" in problems, (path, problems)
    problems = await refused(client, file_body(inside, interfaces={"x": {"path": "/etc/passwd"}}))
    assert "not under the source directories" in problems["interfaces.x.path"]
    resp = await client.post("/api/sync/data-sources", json=file_body(inside))
    assert resp.status == 201, await resp.text()
    task = await run_task(client)
    assert task["status"] == "completed" and task["result"]["inserted"] == 1, task


async def test_file_sources_are_checked_again_when_read(
    client: Client, db: AsyncEngine, app_settings: Settings, tmp_path: Path
) -> None:
    """A symlink put in place after validation, and a definition stored before the rule."""
    folder = app_settings.source_dirs[0]
    inside, outside = folder / "parts.csv", tmp_path / "elsewhere" / "secret.csv"
    await asyncio.to_thread(write_csv, inside, "A")
    await asyncio.to_thread(write_csv, outside, "SECRET-ROW")
    resp = await client.post("/api/sync/data-sources", json=file_body(inside))
    assert resp.status == 201
    await asyncio.to_thread(inside.unlink)
    await asyncio.to_thread(inside.symlink_to, outside)
    task = await run_task(client)
    assert task["status"] == "failed"
    assert "is not under the source directories" in task["error"]
    assert (await client.delete("/api/sync/data-sources/src")).status == 204
    await store_anyway(client, file_body(outside))
    task = await run_task(client)
    assert task["status"] == "failed" and "is not under the source directories" in task["error"]
    assert await count(db, "lot_partnumbers") == 0


async def test_syncds_own_database_is_not_a_file_source(
    aiohttp_client: AiohttpClient, sqlite_template: Path, tmp_path: Path
) -> None:
    """Even when the operator put the database in a source directory."""
    folder = tmp_path / "shared"
    own = folder / "syncd.db"
    await asyncio.to_thread(folder.mkdir)
    await asyncio.to_thread(shutil.copyfile, sqlite_template, own)
    settings = await asyncio.to_thread(
        make_settings, f"sqlite:///{own}", tmp_path, source_dirs=[folder]
    )
    client = await aiohttp_client(create_app(settings))
    for path in (own, folder / "syncd.db-wal"):
        problems = await refused(client, file_body(path))
        assert "syncd's own database" in problems["connection.path"], problems
