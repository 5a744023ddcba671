"""Data sources over HTTP and `full_sync`/`incremental_sync` against real sources.

Sources are real: a second SQLite database, an aiohttp test server, .xlsx and CSV files. The
target is `lot_partnumbers` of the daemon's own database, on SQLite and MariaDB.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from openpyxl import Workbook
from pytest_aiohttp import AiohttpClient, AiohttpServer
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from config.settings import Settings
from controllers.app import create_app
from controllers.keys import DATA_SOURCES
from schedule.database import create_engine
from tests.conftest import make_settings
from tests.helpers import task_json_once

Client = TestClient[Any, Any]
MAPPING = {"pn": "partnumber", "maker": "vendor", "lot": "lot_name", "descr": "description"}


@pytest.fixture
def app_settings(database_url: str, tmp_path: Path) -> Settings:
    # The test servers listen on 127.0.0.1, which the egress policy refuses unless listed;
    # `no_such` is a declared sync target that does not exist.
    return make_settings(
        database_url, tmp_path, egress_allowed_hosts=["127.0.0.1"], sync_target_tables=["no_such"]
    )


@pytest.fixture
async def client(aiohttp_client: AiohttpClient, app_settings: Settings) -> Client:
    return await aiohttp_client(create_app(app_settings))


@pytest.fixture
async def db(app_settings: Settings) -> Any:
    engine = await asyncio.to_thread(create_engine, app_settings)
    yield engine
    await engine.dispose()


def make_source_db(path: Path, rows: list[tuple[Any, ...]]) -> str:
    """A second SQLite database with a `parts` table (pn, maker, lot, descr, version)."""
    conn = sqlite3.connect(path)
    with conn:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS parts (pn TEXT, maker TEXT, lot TEXT, descr TEXT,"
            " version INTEGER)"
        )
        conn.execute("DELETE FROM parts")
        conn.executemany("INSERT INTO parts VALUES (?, ?, ?, ?, ?)", rows)
    conn.close()
    return f"sqlite:///{path}"


async def define(client: Client, **fields: Any) -> dict[str, Any]:
    body = {
        "id": "src",
        "name": "parts",
        "kind": "sql",
        "target_table": "lot_partnumbers",
        "key_columns": ["vendor", "partnumber"],
        "column_mapping": MAPPING,
        **fields,
    }
    resp = await client.post("/api/sync/data-sources", json=body)
    assert resp.status == 201, await resp.text()
    result: dict[str, Any] = await resp.json()
    return result


async def run_task(client: Client, task_type: str, **fields: Any) -> dict[str, Any]:
    body = {"task_type": task_type, "data_source_id": "src", "max_attempts": 1, **fields}
    resp = await client.post("/api/sync/tasks", json=body)
    assert resp.status == 201, await resp.text()
    return await task_json_once(client, (await resp.json())["id"])


async def target_rows(db: AsyncEngine) -> list[tuple[Any, ...]]:
    async with db.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT vendor, partnumber, lot_name, description FROM lot_partnumbers"
                " ORDER BY vendor, partnumber"
            )
        )
        return [tuple(r) for r in rows]


async def test_sql_full_sync_upserts_and_deletes_missing(
    client: Client, db: AsyncEngine, tmp_path: Path
) -> None:
    url = await asyncio.to_thread(
        make_source_db,
        tmp_path / "source.db",
        [
            ("PN1", "HP", "LOT1", "disk", 1),
            ("PN2", "HP", "LOT2", None, 1),
            ("PN3", "", "L3", "x", 1),
        ],
    )
    await define(client, connection={"url": url, "table": "parts"}, delete_missing=True)
    async with db.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO lot_partnumbers (vendor, partnumber, lot_name)"
                " VALUES ('X', 'OLD', 'L')"
            )
        )
    task = await run_task(client, "full_sync", parameters={"batch_size": 2})
    assert task["status"] == "completed", task
    assert task["result"] == {
        "data_source_id": "src",
        "interface_id": None,
        "read": 3,
        "inserted": 3,
        "updated": 0,
        "deleted": 1,
        "failed": 0,
    }
    assert await target_rows(db) == [
        ("", "PN3", "L3", "x"),
        ("HP", "PN1", "LOT1", "disk"),
        ("HP", "PN2", "LOT2", None),
    ]
    await asyncio.to_thread(
        make_source_db,
        tmp_path / "source.db",
        [
            ("PN1", "HP", "LOT9", "disk", 2),
            ("PN4", "HP", "LOT4", None, 2),
            (None, "HP", "L", "", 2),
        ],
    )
    task = await run_task(client, "full_sync")
    result = task["result"]
    assert (result["inserted"], result["updated"], result["deleted"], result["failed"]) == (
        1,
        1,
        2,
        1,
    )
    assert await target_rows(db) == [("HP", "PN1", "LOT9", "disk"), ("HP", "PN4", "LOT4", None)]
    errors = (await (await client.get(f"/api/sync/tasks/{task['id']}/errors")).json())["errors"]
    assert [(e["position"], e["reason"]) for e in errors] == [
        (2, "key column 'partnumber' is empty")
    ]


async def test_sql_incremental_sync_uses_watermark(
    client: Client, db: AsyncEngine, tmp_path: Path
) -> None:
    path = tmp_path / "source.db"
    url = await asyncio.to_thread(
        make_source_db, path, [("A", "V", "L1", None, 1), ("B", "V", "L2", None, 2)]
    )
    await define(
        client,
        connection={"url": url},
        interfaces={"all": {"table": "parts"}, "q": {"query": "SELECT * FROM parts"}},
        watermark_column="version",
        column_mapping={"pn": "partnumber", "maker": "vendor", "lot": "lot_name"},
    )
    first = await run_task(client, "incremental_sync", interface_id="all")
    assert first["result"]["inserted"] == 2, first
    again = await run_task(client, "incremental_sync", interface_id="all")
    assert again["result"]["read"] == 0
    await asyncio.to_thread(
        make_source_db,
        path,
        [("A", "V", "L1", None, 1), ("B", "V", "L2b", None, 2), ("C", "V", "L3", None, 3)],
    )
    third = await run_task(client, "incremental_sync", interface_id="all")
    assert (third["result"]["read"], third["result"]["inserted"]) == (1, 1)
    # The query interface has its own watermark: it reads everything once.
    query = await run_task(client, "incremental_sync", interface_id="q")
    assert (query["result"]["read"], query["result"]["updated"]) == (3, 3)
    assert ("V", "B", "L2b", None) in await target_rows(db)
    async with db.connect() as conn:
        marks: dict[str, Any] = dict(
            (await conn.execute(text("SELECT interface_id, value FROM sync_watermarks"))).all()
        )
    assert {k: str(v).strip('"') for k, v in marks.items()} == {"all": "3", "q": "3"}
    missing = await run_task(client, "incremental_sync", interface_id="nope")
    assert missing["status"] == "failed" and "no interface 'nope'" in missing["error"]


async def test_sql_source_errors_fail_clearly(client: Client, tmp_path: Path) -> None:
    url = await asyncio.to_thread(make_source_db, tmp_path / "s.db", [])
    await define(
        client,
        connection={"url": url},
        interfaces={
            "missing": {"table": "nope"},
            "down": {"url": "mysql+pymysql://u:secret@127.0.0.1:1/db", "table": "t"},
        },
    )
    task = await run_task(client, "full_sync", interface_id="missing")
    assert task["status"] == "failed"
    assert "table 'nope' does not exist" in task["error"]
    task = await run_task(client, "full_sync", interface_id="down")
    assert task["status"] == "failed"
    assert "cannot connect to mysql+pymysql://u:***@127.0.0.1:1/db" in task["error"]
    assert "secret" not in task["error"]


async def test_missing_target_table_fails_before_reading(client: Client, tmp_path: Path) -> None:
    url = await asyncio.to_thread(make_source_db, tmp_path / "s.db", [("A", "V", "L", None, 1)])
    await define(client, connection={"url": url, "table": "parts"}, target_table="no_such")
    task = await run_task(client, "full_sync")
    assert task["status"] == "failed"
    assert "target table 'no_such' does not exist" in task["error"]
    resp = await client.put(
        "/api/sync/data-sources/src",
        json={
            "name": "parts",
            "kind": "sql",
            "connection": {"url": url, "table": "parts"},
            "target_table": "lot_partnumbers",
            "key_columns": ["vendor", "partnumber"],
            "column_mapping": {"pn": "partnumber", "maker": "vendor", "lot": "no_column"},
        },
    )
    assert resp.status == 200
    task = await run_task(client, "full_sync")
    assert task["status"] == "failed" and "no column(s) ['no_column']" in task["error"]


# ---- http ---------------------------------------------------------------------------------


def api_app(pages: dict[str, Any], fail_once: set[str]) -> web.Application:
    """A JSON API paged by `?page=`; a page named in `fail_once` answers 500 the first time."""

    async def items(request: web.Request) -> web.Response:
        page = request.query.get("page", "1")
        if page in fail_once:
            fail_once.discard(page)
            return web.Response(status=500, text="try again")
        body = pages.get(page, {"items": []})
        if isinstance(body, str):
            return web.Response(text=body, content_type="application/json")
        return web.json_response(body)

    app = web.Application()
    app.router.add_get("/items", items)
    return app


def page(*pns: str) -> dict[str, Any]:
    return {"items": [{"pn": pn, "maker": "V", "lot": f"L-{pn}"} for pn in pns]}


@pytest.fixture
def http_settings(sqlite_url: str, tmp_path: Path) -> Settings:
    return make_settings(sqlite_url, tmp_path)


async def http_source(
    aiohttp_server: AiohttpServer, pages: dict[str, Any], fail_once: set[str]
) -> TestServer:
    return await aiohttp_server(api_app(pages, fail_once))


async def test_http_full_sync_pages_and_retries(
    client: Client, db: AsyncEngine, aiohttp_server: AiohttpServer
) -> None:
    server = await http_source(
        aiohttp_server, {"1": page("A", "B"), "2": page("C", "D"), "3": page("E")}, {"2"}
    )
    await define(
        client,
        kind="http",
        connection={
            "url": str(server.make_url("/items")),
            "items_path": "items",
            "headers": {"Authorization": "Bearer s3cret"},
            "pagination": {"mode": "page", "size": 2},
            "retry_wait_s": 0,
            "max_retries": 2,
        },
        column_mapping={"pn": "partnumber", "maker": "vendor", "lot": "lot_name"},
    )
    shown = await (await client.get("/api/sync/data-sources/src")).json()
    assert shown["connection"]["headers"] == {"Authorization": "***"}
    task = await run_task(client, "full_sync")
    assert task["status"] == "completed", task
    assert (task["result"]["read"], task["result"]["inserted"]) == (5, 5)
    assert [r[1] for r in await target_rows(db)] == ["A", "B", "C", "D", "E"]


async def test_http_malformed_page_keeps_committed_rows(
    client: Client, db: AsyncEngine, aiohttp_server: AiohttpServer
) -> None:
    pages: dict[str, Any] = {"1": page("A", "B"), "2": page("C", "D"), "3": "{not json"}
    server = await http_source(aiohttp_server, pages, set())
    await define(
        client,
        kind="http",
        connection={
            "url": str(server.make_url("/items")),
            "items_path": "items",
            "pagination": {"mode": "page", "size": 2},
        },
        column_mapping={"pn": "partnumber", "maker": "vendor", "lot": "lot_name"},
    )
    task = await run_task(client, "full_sync")
    assert task["status"] == "failed"
    assert "page 3" in task["error"] and "not JSON" in task["error"]
    assert "2 rows committed before the error" in task["error"]
    assert [r[1] for r in await target_rows(db)] == ["A", "B"]


async def test_cancel_stops_at_a_batch_and_keeps_the_batches_written(
    client: Client, db: AsyncEngine, aiohttp_server: AiohttpServer
) -> None:
    """A cancel is seen at the next batch: the batch being written then commits, the one
    just read is not written, and at most the page after it (read ahead) is asked for."""
    cancelled, waiting = asyncio.Event(), asyncio.Event()
    asked: list[str] = []

    async def items(request: web.Request) -> web.Response:
        number = request.query.get("page", "1")
        asked.append(number)
        if number == "3":
            waiting.set()
            await cancelled.wait()  # answers once the cancel was accepted
        pns = [f"{number}-{i}" for i in range(2)] if int(number) <= 5 else []
        return web.json_response(page(*pns))

    app = web.Application()
    app.router.add_get("/items", items)
    server = await aiohttp_server(app)
    await define(
        client,
        kind="http",
        connection={
            "url": str(server.make_url("/items")),
            "items_path": "items",
            "pagination": {"mode": "page", "size": 2},
        },
        column_mapping={"pn": "partnumber", "maker": "vendor", "lot": "lot_name"},
    )
    body = {"task_type": "full_sync", "data_source_id": "src", "max_attempts": 1}
    created = await (await client.post("/api/sync/tasks", json=body)).json()
    await asyncio.wait_for(waiting.wait(), 30)  # batches 1 and 2 are read
    resp = await client.post(f"/api/sync/tasks/{created['id']}/cancel")
    assert resp.status == 202, await resp.text()
    cancelled.set()
    task = await task_json_once(client, created["id"])
    assert task["status"] == "cancelled", task
    assert [r[1] for r in await target_rows(db)] == ["1-0", "1-1", "2-0", "2-1"]
    assert asked[:3] == ["1", "2", "3"] and asked[3:] in ([], ["4"])


# ---- files --------------------------------------------------------------------------------


def write_files(folder: Path) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    xlsx, csv = folder / "parts.xlsx", folder / "parts.csv"
    wb = Workbook()
    ws = wb.active
    assert ws is not None
    ws.append(["pn", "maker", "lot", "version"])
    ws.append(["X1", "V", "L1", 1])
    ws.append(["X2", "V", "L2", 5])
    wb.save(xlsx)
    csv.write_text("pn;maker;lot;version\nY1;V;L1;1\nY2;V;L2;7\n", encoding="utf-8")
    return xlsx, csv


async def test_file_sources_xlsx_and_csv(
    client: Client, db: AsyncEngine, app_settings: Settings
) -> None:
    xlsx, csv = await asyncio.to_thread(write_files, app_settings.source_dirs[0])
    await define(
        client,
        kind="file",
        connection={"path": str(xlsx)},
        interfaces={"csv": {"path": str(csv)}},
        column_mapping={"pn": "partnumber", "maker": "vendor", "lot": "lot_name"},
        watermark_column="version",
    )
    task = await run_task(client, "full_sync")
    assert task["result"]["inserted"] == 2, task
    task = await run_task(client, "incremental_sync", interface_id="csv")
    assert task["result"]["inserted"] == 2, task
    await asyncio.to_thread(
        csv.write_text, "pn;maker;lot;version\nY1;V;L1;1\nY3;V;L3;8\n", encoding="utf-8"
    )
    task = await run_task(client, "incremental_sync", interface_id="csv")
    assert (task["result"]["read"], task["result"]["inserted"]) == (1, 1)
    assert [r[1] for r in await target_rows(db)] == ["X1", "X2", "Y1", "Y2", "Y3"]


# ---- the definitions' API -------------------------------------------------------------------


async def test_data_source_crud_and_masking(client: Client) -> None:
    created = await define(
        client,
        connection={"url": "mysql+pymysql://user:pw123@db.example:3306/erp", "table": "parts"},
        interfaces={"other": {"table": "other"}},
    )
    assert created["connection"]["url"] == "mysql+pymysql://user:***@db.example:3306/erp"
    listed = (await (await client.get("/api/sync/data-sources")).json())["data_sources"]
    assert [s["id"] for s in listed] == ["src"]
    assert "pw123" not in str(listed)
    # PUT with the masked values sent back keeps the stored secret.
    body = {k: v for k, v in created.items() if k not in ("created_at", "updated_at")}
    body["name"] = "renamed"
    resp = await client.put("/api/sync/data-sources/src", json=body)
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["name"] == "renamed"
    store = client.app[DATA_SOURCES]
    assert (await store.require("src")).connection["url"].endswith("user:pw123@db.example:3306/erp")
    dup = await client.post("/api/sync/data-sources", json={**body, "id": "src"})
    assert dup.status == 409
    assert (await client.delete("/api/sync/data-sources/src")).status == 204
    assert (await client.get("/api/sync/data-sources/src")).status == 404
    assert (await client.delete("/api/sync/data-sources/src")).status == 404


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"kind": "ftp"}, "kind"),
        ({"connection": {"table": "x"}}, "connection.url"),
        ({"connection": {"url": "postgresql://h/db", "table": "x"}}, "connection.url"),
        ({"connection": {"url": "sqlite:////nonexistent/x.db"}}, "connection.table"),
        ({"kind": "http", "connection": {"url": "ftp://x"}}, "connection.url"),
        ({"kind": "file", "connection": {"path": "relative.csv"}}, "connection.path"),
        ({"key_columns": []}, "key_columns"),
        ({"target_table": "bad name"}, "target_table"),
        ({"column_mapping": {"a": "b"}}, "key_columns"),
    ],
)
async def test_data_source_validation_names_fields(
    client: Client, fields: dict[str, Any], field: str
) -> None:
    body = {
        "id": "src",
        "name": "n",
        "kind": "sql",
        "connection": {"url": "sqlite:////nonexistent/x.db", "table": "t"},
        "target_table": "lot_partnumbers",
        "key_columns": ["partnumber"],
        **fields,
    }
    resp = await client.post("/api/sync/data-sources", json=body)
    assert resp.status == 422, await resp.text()
    details = (await resp.json())["error"]["details"]
    assert field in [d["field"] for d in details], details


async def test_sync_task_needs_data_source(client: Client) -> None:
    resp = await client.post("/api/sync/tasks", json={"task_type": "full_sync"})
    assert resp.status == 422
    task = await run_task(client, "full_sync", data_source_id="ghost")
    assert task["status"] == "failed" and "no data source 'ghost'" in task["error"]
