"""Imports over HTTP: seed 002's record import, the generic target import, stock uploads."""

from __future__ import annotations

import asyncio
import io
import json
import os
import time
import zipfile
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from openpyxl import Workbook
from pytest_aiohttp import AiohttpClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from config.settings import Settings
from controllers.app import create_app
from controllers.keys import BUS, IMPORT_FILES, SETTINGS
from engine.uploads import ImportFiles
from schedule.database import create_engine
from schedule.store import SqliteConnector, connect
from tests.conftest import make_settings
from tests.helpers import Events, task_json_once

Client = TestClient[Any, Any]

SEED002 = [
    {
        "tool_name": "University Scraper",
        "tool_id": "V001",
        "category": "Education",
        "description": "Extracts data on requirements, fees, and programs.",
        "features": ["Data extraction", "Requirement updates"],
        "url": "https://example.com/university-scraper",
    },
    {
        "tool_name": "Currency Converter",
        "tool_id": "V002",
        "category": "Finance",
        "description": "Calculates real-time exchange rates.",
        "features": ["Real-time rates", "Multiple currencies"],
        "url": "https://example.com/currency-converter",
    },
    {
        "tool_name": "Study Cost Simulator",
        "tool_id": "V003",
        "category": "Education",
        "description": "Estimates the total cost of studying.",
        "features": ["Tuition cost estimation"],
        "url": "https://example.com/study-cost-simulator",
    },
]


@pytest.fixture
def app_settings(database_url: str, tmp_path: Path) -> Settings:
    return make_settings(database_url, tmp_path, max_upload_mb=1)


@pytest.fixture
async def client(aiohttp_client: AiohttpClient, app_settings: Settings) -> Client:
    return await aiohttp_client(create_app(app_settings))


@pytest.fixture
def events(client: Client) -> Events:
    """The app's events from before the test creates any task."""
    return Events(client.app[BUS])


@pytest.fixture
async def db(app_settings: Settings) -> Any:
    engine = await asyncio.to_thread(create_engine, app_settings)
    yield engine
    await engine.dispose()


async def wait_seed002(client: Client, ref: str) -> dict[str, Any]:
    """The seed-002 status of an import once its task has ended."""
    await task_json_once(client, ref)
    resp = await client.get(f"/api/tools/import/status/{ref}")
    assert resp.status == 200, await resp.text()
    body: dict[str, Any] = await resp.json()
    assert body["status"] != "IN_PROGRESS" and body["progress"].endswith("%")
    return body


async def wait_task(client: Client, task_id: str) -> dict[str, Any]:
    return await task_json_once(client, task_id)


async def no_uploads_left(client: Client, events: Events, *keys: str) -> None:
    """Files go when their task ends: once every subscriber heard the tasks of `keys` end and
    the removals that started are done, the upload directory is empty."""
    for key in keys:
        task = await (await client.get(f"/api/sync/tasks/{key}")).json()
        await events.ended(task["id"])
    await client.app[IMPORT_FILES].drain()
    assert await uploads(client.app[SETTINGS]) == []


async def uploads(settings: Settings) -> list[str]:
    folder = settings.state_dir / "uploads"
    return await asyncio.to_thread(lambda: sorted(p.name for p in folder.glob("*")))


async def test_seed002_import_and_status(client: Client, events: Events, db: AsyncEngine) -> None:
    bad_url = {**SEED002[1], "tool_id": "V009", "url": "ftp://example.com/x"}
    no_id = {k: v for k, v in SEED002[2].items() if k != "tool_id"}
    duplicate = {**SEED002[0], "tool_name": "Again"}
    payload = {"data": [*SEED002, bad_url, no_id, "not an object", duplicate]}
    resp = await client.post("/api/tools/import", json=payload)
    assert resp.status == 202
    accepted = await resp.json()
    assert accepted["status"] == "IN_PROGRESS"
    assert len(accepted["task_reference"]) == 11
    body = await wait_seed002(client, accepted["task_reference"])
    assert body["status"] == "COMPLETED"
    assert body["progress"] == "100%"
    assert body["imported_records"] == 3
    assert body["errors"] == [bad_url, no_id, "not an object", duplicate]
    async with db.connect() as conn:
        rows = (await conn.execute(text("SELECT tool_id, url FROM tools ORDER BY tool_id"))).all()
    assert [tuple(r) for r in rows] == [
        ("V001", "https://example.com/university-scraper"),
        ("V002", "https://example.com/currency-converter"),
        ("V003", "https://example.com/study-cost-simulator"),
    ]
    # The reasons name the field; positions are indexes in `data`.
    task = await (await client.get(f"/api/sync/tasks/{accepted['task_reference']}")).json()
    errors = (await (await client.get(f"/api/sync/tasks/{task['id']}/errors")).json())["errors"]
    reasons = {e["position"]: e["reason"] for e in errors}
    assert "url" in reasons[3] and "tool_id" in reasons[4]
    assert "not an object" in reasons[5] and "duplicate" in reasons[6]
    # A second import updates by tool_id instead of adding rows.
    changed = {**SEED002[0], "tool_name": "Renamed"}
    resp = await client.post("/api/tools/import", json={"data": [changed]})
    second = (await resp.json())["task_reference"]
    body = await wait_seed002(client, second)
    assert (body["imported_records"], body["errors"]) == (1, [])
    async with db.connect() as conn:
        name = await conn.scalar(text("SELECT tool_name FROM tools WHERE tool_id = 'V001'"))
        count = await conn.scalar(text("SELECT COUNT(*) FROM tools"))
    assert (name, count) == ("Renamed", 3)
    await no_uploads_left(client, events, accepted["task_reference"], second)


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        (b"{not json", 400, None),
        (b"", 400, None),
        (b'{"items": []}', 422, "data"),
        (b'{"data": {"a": 1}}', 422, "data"),
        (b"[1, 2]", 422, "body"),
    ],
)
async def test_import_bad_envelopes(
    client: Client, body: bytes, status: int, field: str | None
) -> None:
    resp = await client.post(
        "/api/tools/import", data=body, headers={"Content-Type": "application/json"}
    )
    assert resp.status == status
    error = (await resp.json())["error"]
    if field is not None:
        assert field in [d["field"] for d in error["details"]]


async def test_generic_target_and_unknown(client: Client) -> None:
    resp = await client.post("/api/imports/tools", json={"data": SEED002[:1]})
    assert resp.status == 202
    task = await resp.json()
    assert task["task_type"] == "records_import"
    done = await wait_task(client, task["id"])
    assert done["status"] == "completed"
    assert done["result"] == {"target": "tools", "total": 1, "imported": 1, "failed": 0}
    resp = await client.post("/api/imports/nope", json={"data": []})
    assert resp.status == 404
    assert "tools" in (await resp.json())["error"]["message"]
    resp = await client.get(f"/api/tools/import/status/{task['reference']}x")
    assert resp.status == 404


def workbook_bytes(rows: list[list[Any]]) -> bytes:
    wb = Workbook()
    ws = wb.active
    assert ws is not None
    for row in rows:
        ws.append(row)
    out = io.BytesIO()
    wb.save(out)
    return out.getvalue()


def multipart(content: bytes, filename: str) -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field(
        "file", io.BytesIO(content), filename=filename, content_type="application/octet-stream"
    )
    return form


async def test_stock_upload_imports_rows(client: Client, events: Events, db: AsyncEngine) -> None:
    async with db.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO lot_partnumbers (vendor, partnumber, lot_name, is_primary_pn)"
                " VALUES ('HP', 'MAPPED-1', 'LOT1', 1)"
            )
        )
        await conn.execute(
            text(
                "INSERT INTO qt_vendor_partnumber_seen (partnumber, is_ignored, is_pattern)"
                " VALUES ('IGN-*', 1, 1)"
            )
        )
    content = await asyncio.to_thread(
        workbook_bytes,
        [
            ["Артикул", "Производитель", "Наименование", "Кол-во", "Цена", "Склад"],
            ["MAPPED-1", "HP", "Disk", 5, "1 234,50", "Main"],
            ["NEW-1", "Dell", "Fan", "3", 10.5, None],
            ["", "Dell", "no pn", 1, 1, None],
            ["NEW-2", "Dell", "bad qty", "many", 1, None],
            ["IGN-7", "X", "ignored", 1, None, None],
        ],
    )
    resp = await client.post("/api/imports/stock", data=multipart(content, "stock.xlsx"))
    assert resp.status == 202, await resp.text()
    task = await resp.json()
    assert task["task_type"] == "stock_import"
    done = await wait_task(client, task["id"])
    assert done["status"] == "completed", done
    assert done["result"] == {
        "file": "stock.xlsx",
        "rows_total": 5,
        "inserted": 3,
        "failed": 2,
        "unmapped_partnumbers": 1,
    }
    assert (done["processed_rows"], done["total_rows"], done["progress"]) == (5, 5, 100)
    errors = (await (await client.get(f"/api/sync/tasks/{task['id']}/errors")).json())["errors"]
    assert [(e["position"], e["reason"]) for e in errors] == [
        (4, "partnumber is empty"),
        (5, "qty: not a number: 'many'"),
    ]
    async with db.connect() as conn:
        logged = (
            await conn.execute(
                text(
                    "SELECT sheet_row, partnumber, vendor, CAST(qty AS CHAR), CAST(price AS CHAR)"
                    " FROM stock_log ORDER BY sheet_row"
                )
            )
        ).all()
        seen = (
            await conn.execute(
                text(
                    "SELECT partnumber, vendor, source_type FROM qt_vendor_partnumber_seen"
                    " WHERE is_pattern = 0"
                )
            )
        ).all()
    assert [tuple(r[:3]) for r in logged] == [
        (2, "MAPPED-1", "HP"),
        (3, "NEW-1", "Dell"),
        (6, "IGN-7", "X"),
    ]
    assert float(logged[0][3]) == 5 and float(logged[0][4]) == 1234.5
    assert [tuple(r) for r in seen] == [("NEW-1", "Dell", "stock")]
    await no_uploads_left(client, events, task["id"])


@pytest.mark.parametrize(
    ("content", "filename", "status", "code"),
    [
        (b"1C MXL content", "stock.mxl", 415, "unsupported_media_type"),
        (b"a,b\n1,2\n", "stock.csv", 415, "unsupported_media_type"),
        (b"plain text", "stock.xlsx", 415, "unsupported_media_type"),
        (b"PK\x03\x04" + b"x" * (1024 * 1024 + 10), "big.xlsx", 413, "too_large"),
    ],
)
async def test_stock_upload_refused(
    client: Client,
    app_settings: Settings,
    content: bytes,
    filename: str,
    status: int,
    code: str,
) -> None:
    resp = await client.post("/api/imports/stock", data=multipart(content, filename))
    assert resp.status == status
    error = (await resp.json())["error"]
    assert error["code"] == code
    if status == 415:
        assert ".xlsx" in error["message"]
    assert await uploads(app_settings) == []


async def test_stock_upload_needs_file_field(client: Client) -> None:
    form = aiohttp.FormData(default_to_multipart=True)
    form.add_field("other", "x")
    resp = await client.post("/api/imports/stock", data=form)
    assert resp.status == 422
    assert (await resp.json())["error"]["details"][0]["field"] == "file"
    resp = await client.post("/api/imports/stock", json={"file": "x"})
    assert resp.status == 415


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([["Артикул", "Цена"], ["A", 1]], "missing required column(s): qty"),
        ([["Артикул", "Кол-во"]], "no data rows"),
    ],
)
async def test_stock_import_fails_clearly(
    client: Client, rows: list[list[Any]], message: str
) -> None:
    content = await asyncio.to_thread(workbook_bytes, rows)
    resp = await client.post("/api/imports/stock", data=multipart(content, "s.xlsx"))
    done = await wait_task(client, (await resp.json())["id"])
    assert done["status"] == "failed"
    assert message in done["error"]


async def test_corrupt_xlsx_is_refused_or_fails_its_task(client: Client) -> None:
    # No zip directory to check: refused at once.
    resp = await client.post(
        "/api/imports/stock", data=multipart(b"PK\x03\x04 broken zip", "s.xlsx")
    )
    assert resp.status == 422
    error = (await resp.json())["error"]
    assert error["details"][0]["field"] == "file"
    assert "s.xlsx: not a readable .xlsx workbook (no zip directory)" in error["message"]
    # A sound zip that holds no workbook: accepted, its task fails saying so.
    content = io.BytesIO()
    with zipfile.ZipFile(content, "w") as archive:
        archive.writestr("readme.txt", "hello")
    resp = await client.post("/api/imports/stock", data=multipart(content.getvalue(), "s.xlsx"))
    assert resp.status == 202
    done = await wait_task(client, (await resp.json())["id"])
    assert done["status"] == "failed"
    assert "not a readable .xlsx" in done["error"]


def test_payload_json_kept_as_sent() -> None:
    assert json.loads(json.dumps(SEED002)) == SEED002


async def test_startup_sweep_removes_files_no_task_needs(
    aiohttp_client: AiohttpClient, settings: Settings
) -> None:
    folder = settings.state_dir / "uploads"

    def make() -> tuple[Path, Path]:
        folder.mkdir(parents=True)
        old, young = folder / ("a" * 32 + ".xlsx"), folder / ("b" * 32 + ".json")
        old.write_bytes(b"x")
        young.write_bytes(b"y")
        os.utime(old, (time.time() - 3600, time.time() - 3600))
        return old, young

    _old, young = await asyncio.to_thread(make)
    await aiohttp_client(create_app(settings))
    # The old file belongs to no task; the young one may be an upload still streaming in.
    assert await uploads(settings) == [young.name]


async def test_cancel_stops_between_batches_and_removes_payload(
    client: Client, events: Events, app_settings: Settings, db: AsyncEngine
) -> None:
    files = ImportFiles(app_settings.state_dir)
    name = files.new_name("json")
    data = [{"tool_id": f"C{i:05d}", "tool_name": "t"} for i in range(20000)]
    await files.write(name, json.dumps({"data": data}).encode())
    # One record per transaction: far longer than the test, so the cancel lands mid-way.
    params = {"target": "tools", "file": name, "batch_size": 1}
    resp = await client.post(
        "/api/sync/tasks", json={"task_type": "records_import", "parameters": params}
    )
    task = await resp.json()

    async def running() -> bool:
        body = await (await client.get(f"/api/sync/tasks/{task['id']}")).json()
        return bool(body["processed_rows"] > 0)

    await events.until(running, within=20)  # read again as each flush of progress is told
    resp = await client.post(f"/api/sync/tasks/{task['id']}/cancel")
    assert resp.status == 202
    done = await wait_task(client, task["id"])
    assert done["status"] == "cancelled"
    async with db.connect() as conn:
        count = await conn.scalar(text("SELECT COUNT(*) FROM tools"))
    assert count is not None and 0 < count < 20000
    await no_uploads_left(client, events, task["id"])


async def test_seen_keeps_first_seen_and_ignored_flags(db: AsyncEngine) -> None:
    from datetime import UTC, datetime
    from decimal import Decimal

    from schedule.imports import ImportStore, StockEntry

    times = iter([datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 2, 1, tzinfo=UTC)])
    store = ImportStore(connect(db), clock=lambda: next(times))
    async with db.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO qt_vendor_partnumber_seen (partnumber, is_ignored, is_pattern)"
                " VALUES ('IGNORED', 1, 0)"
            )
        )
    entries = [
        StockEntry(2, "NEW", "V", None, Decimal(1), None, None),
        StockEntry(3, "IGNORED", "V", None, Decimal(1), None, None),
    ]
    first = await store.write_stock_batch("t1", entries, [])
    second = await store.write_stock_batch("t2", entries, [])
    assert (first.unmapped_seen, second.unmapped_seen) == (1, 1)
    async with db.connect() as conn:
        rows = (
            await conn.execute(
                text(
                    "SELECT partnumber, first_seen_at, last_seen_at, is_ignored"
                    " FROM qt_vendor_partnumber_seen ORDER BY partnumber"
                )
            )
        ).all()
    assert [r[0] for r in rows] == ["IGNORED", "NEW"]
    assert rows[0][1] is None and bool(rows[0][3])  # an ignored partnumber is left alone
    assert str(rows[1][1]).startswith("2024-01-01") and str(rows[1][2]).startswith("2024-02-01")


async def test_import_body_over_limit_is_413(client: Client) -> None:
    body = io.BytesIO(b'{"data": ["' + b"x" * (1024 * 1024 + 100) + b'"]}')
    resp = await client.post(
        "/api/tools/import", data=body, headers={"Content-Type": "application/json"}
    )
    assert resp.status == 413
    assert (await resp.json())["error"]["code"] == "too_large"


async def test_prepared_upsert_writes_what_sqlalchemy_would(
    ddb: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datetime import datetime

    from schedule import upsert
    from schedule.imports import ImportStore
    from schedule.models import tools

    store = ImportStore(connect(ddb))
    at = datetime(2024, 5, 6, 7, 8, 9, 123456)
    columns = ["tool_id", "tool_name", "category", "description", "features", "url"]
    prepared = store.prepare_upsert(tools, ("tool_id",), [*columns, "task_id", "updated_at"])
    assert prepared is not None
    odd_features: list[Any] = ["ü", 'say "hi"', 1, None, {"k": ["v"]}]  # not only strings
    rows: list[dict[str, Any]] = [
        {"tool_id": "P1", "tool_name": "one", "features": ["a", "é"], "url": None},
        {"tool_id": "P2", "tool_name": "two", "features": odd_features, "url": "https://x"},
    ]
    stamped: list[dict[str, Any]] = [
        {"category": None, "description": "d", **r, "task_id": "t1", "updated_at": at} for r in rows
    ]
    assert await store.upsert_prepared(prepared, prepared.parameters(stamped)) == 2
    stamped[0] = {**stamped[0], "tool_name": "renamed", "features": []}
    assert await store.upsert_prepared(prepared, prepared.parameters(stamped[:1])) == 1
    async with ddb.connect() as conn:
        got = (await conn.execute(tools.select().order_by(tools.c.tool_id))).mappings().all()
        raw = await conn.scalar(text("SELECT features FROM tools WHERE tool_id = 'P2'"))
    assert [(r["tool_name"], r["features"], r["updated_at"]) for r in got] == [
        ("renamed", [], at),
        ("two", odd_features, at),
    ]
    assert json.loads(raw) == odd_features
    # SQLite runs it as multi-row statements, in chunks: five rows, two per statement
    assert (prepared.multi_row is not None) == (ddb.dialect.name == "sqlite")
    monkeypatch.setattr(upsert, "ROWS_PER_STATEMENT", 2)
    many = [{**stamped[1], "tool_id": f"M{i}", "tool_name": f"m{i}"} for i in range(5)]
    assert await store.upsert_prepared(prepared, prepared.parameters(many)) == 5
    async with ddb.connect() as conn:
        names = (
            await conn.execute(
                text("SELECT tool_name FROM tools WHERE tool_id LIKE 'M%' ORDER BY tool_id")
            )
        ).scalars()
        assert list(names) == [f"m{i}" for i in range(5)]


async def test_a_failing_prepared_batch_writes_nothing(
    ddb: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch fails whole, even past its first statement; on SQLite it runs on the store's
    writer thread, and the error is SQLAlchemy's class as on the engine's own path."""
    import threading
    from datetime import datetime

    from sqlalchemy.exc import IntegrityError

    from schedule import upsert
    from schedule.imports import ImportStore
    from schedule.models import tools

    monkeypatch.setattr(upsert, "ROWS_PER_STATEMENT", 2)
    db = connect(ddb)
    store = ImportStore(db)
    columns = ["tool_id", "tool_name", "features", "task_id", "updated_at"]
    prepared = store.prepare_upsert(tools, ("tool_id",), columns)
    assert prepared is not None
    at = datetime(2024, 5, 6, 7, 8, 9)
    rows = [
        {"tool_id": f"F{i}", "tool_name": f"f{i}", "features": [], "task_id": "t", "updated_at": at}
        for i in range(5)
    ]
    rows[4] = {**rows[4], "tool_name": None}  # NOT NULL: the third statement fails
    threads: set[str] = set()
    if isinstance(db, SqliteConnector):
        writer = db.writer
        submit = writer.transaction

        async def transaction(work: Any, limit_s: float | None = None) -> Any:
            def spied(conn: Any) -> Any:
                threads.add(threading.current_thread().name)
                return work(conn)

            return await submit(spied, limit_s)

        monkeypatch.setattr(writer, "transaction", transaction)
    with pytest.raises(IntegrityError):
        await store.upsert_prepared(prepared, prepared.parameters(rows))
    async with ddb.connect() as conn:
        assert await conn.scalar(text("SELECT COUNT(*) FROM tools WHERE tool_id LIKE 'F%'")) == 0
    assert await store.upsert_prepared(prepared, prepared.parameters(rows[:4])) == 4
    async with ddb.connect() as conn:
        assert await conn.scalar(text("SELECT COUNT(*) FROM tools WHERE tool_id LIKE 'F%'")) == 4
    if ddb.dialect.name == "sqlite":
        assert threads and all(t.startswith("syncd-sqlite-writer") for t in threads)
