"""Workbook bombs over HTTP: refused at upload (413/422), failing their task when they get past
the upload (a file put in place, a `file` source), and truncated multipart bodies (400).

On SQLite and MariaDB, against the real app; the bombs are real archives (`tests.zips`).
"""

from __future__ import annotations

import asyncio
import io
import shutil
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from config.settings import Settings
from controllers.app import create_app
from engine.uploads import ImportFiles
from tests.conftest import make_settings
from tests.helpers import task_json_once
from tests.zips import deflated, repeated, skeleton, text_member, write_zip

Client = TestClient[Any, Any]


@pytest.fixture
def app_settings(database_url: str, tmp_path: Path) -> Settings:
    return make_settings(database_url, tmp_path, max_upload_mb=8, xlsx_max_members=20)


@pytest.fixture
async def client(aiohttp_client: AiohttpClient, app_settings: Settings) -> Client:
    return await aiohttp_client(create_app(app_settings))


def form(path: Path, filename: str = "stock.xlsx") -> aiohttp.FormData:
    data = aiohttp.FormData()
    data.add_field(
        "file", io.BytesIO(path.read_bytes()), filename=filename, content_type="application/zip"
    )
    return data


async def stored(settings: Settings) -> list[str]:
    folder = settings.state_dir / "uploads"
    return await asyncio.to_thread(lambda: sorted(p.name for p in folder.glob("*")))


async def task_count(client: Client) -> int:
    body = await (await client.get("/api/sync/tasks")).json()
    total: int = body["pagination"]["total"]
    return total


async def wait_task(client: Client, task_id: str) -> dict[str, Any]:
    return await task_json_once(client, task_id)


async def test_the_sheet_bomb_is_refused_at_upload(
    client: Client, app_settings: Settings, sheet_bomb_xlsx: Path
) -> None:
    resp = await client.post("/api/imports/stock", data=form(sheet_bomb_xlsx))
    assert resp.status == 413, await resp.text()
    error = (await resp.json())["error"]
    assert error["code"] == "too_large"
    assert error["message"].startswith("stock.xlsx: refused before reading: ")
    assert [d["field"] for d in error["details"]] == ["file", "file"]
    assert "1,029:1, above SYNCD_XLSX_MAX_RATIO=100" in error["details"][0]["message"]
    assert "2,048.0 MB in all, above SYNCD_XLSX_MAX_UNPACKED_MB" in error["details"][1]["message"]
    assert await stored(app_settings) == []
    assert await task_count(client) == 0


async def test_the_workbook_xml_bomb_is_refused_at_upload(
    client: Client, app_settings: Settings, workbook_bomb_xlsx: Path
) -> None:
    resp = await client.post("/api/imports/stock", data=form(workbook_bomb_xlsx))
    assert resp.status == 413
    message = (await resp.json())["error"]["message"]
    assert "xl/workbook.xml unpacks to 1,024.0 MB, above SYNCD_XLSX_MAX_PART_MB=64" in message
    assert await stored(app_settings) == []


async def test_a_bomb_by_its_ratio_alone_or_too_many_members_is_a_422(
    client: Client, app_settings: Settings, tmp_path: Path
) -> None:
    # 200 MB unpacked (under every size limit) from about 0.2 MB.
    sheet = deflated(
        "xl/worksheets/sheet1.xml",
        [b"<worksheet><sheetData>", *repeated(b" " * 1024 * 1024, 200 * 1024 * 1024), b"</x>"],
    )
    path = write_zip(tmp_path / "ratio.xlsx", skeleton(sheet=sheet))
    resp = await client.post("/api/imports/stock", data=form(path))
    assert resp.status == 422
    error = (await resp.json())["error"]
    assert error["code"] == "validation_error"
    assert error["details"][0]["field"] == "file"
    assert "above SYNCD_XLSX_MAX_RATIO=100" in error["details"][0]["message"]
    extra = [text_member(f"xl/media/image{i}.png", b"x") for i in range(20)]
    path = write_zip(tmp_path / "many.xlsx", skeleton(extra=extra))
    resp = await client.post("/api/imports/stock", data=form(path))
    assert resp.status == 422
    assert "25 zip members, above SYNCD_XLSX_MAX_MEMBERS=20" in await resp.text()
    assert await stored(app_settings) == []


@pytest.mark.parametrize("cut", ["closing boundary", "half the file"])
async def test_a_truncated_multipart_upload_is_a_400(
    client: Client, app_settings: Settings, tmp_path: Path, cut: str
) -> None:
    content = write_zip(tmp_path / "good.xlsx", skeleton()).read_bytes()
    boundary = "XyZzy"
    head = (
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="file"; filename="stock.xlsx"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    body = head + (content if cut == "closing boundary" else content[: len(content) // 2])
    resp = await client.post(
        "/api/imports/stock",
        data=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert resp.status == 400, await resp.text()
    error = (await resp.json())["error"]
    assert error["code"] == "invalid_multipart"
    assert "ends before its closing boundary" in error["message"]
    assert await stored(app_settings) == []
    assert await task_count(client) == 0
    # The same body, whole, is accepted.
    resp = await client.post(
        "/api/imports/stock",
        data=head + content + f"\r\n--{boundary}--\r\n".encode(),
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert resp.status == 202, await resp.text()
    assert (await wait_task(client, (await resp.json())["id"]))["status"] == "completed"


async def test_a_bomb_that_got_past_the_upload_fails_its_task(
    client: Client, app_settings: Settings, sheet_bomb_xlsx: Path
) -> None:
    # As if uploaded before the limits were lowered, or by hand: the task checks again.
    files = ImportFiles(app_settings.state_dir)
    name = ImportFiles.new_name("xlsx")
    await asyncio.to_thread(files.ensure_root)
    await asyncio.to_thread(shutil.copyfile, sheet_bomb_xlsx, files.path(name))
    resp = await client.post(
        "/api/sync/tasks",
        json={
            "task_type": "stock_import",
            "parameters": {"file": name, "filename": "stock.xlsx"},
            "max_attempts": 1,
        },
    )
    assert resp.status == 201, await resp.text()
    task = await wait_task(client, (await resp.json())["id"])
    assert task["status"] == "failed"
    assert task["error"].startswith("stock.xlsx: refused before reading: xl/worksheets/sheet1.xml")
    assert "above SYNCD_XLSX_MAX_RATIO=100" in task["error"]


async def test_a_file_source_bomb_fails_its_sync(
    client: Client, app_settings: Settings, sheet_bomb_xlsx: Path
) -> None:
    # File sources read only under the source directories: the bomb is put where one may be.
    sources = app_settings.source_dirs[0]
    await asyncio.to_thread(sources.mkdir, parents=True, exist_ok=True)
    bomb = sources / sheet_bomb_xlsx.name
    await asyncio.to_thread(shutil.copyfile, sheet_bomb_xlsx, bomb)
    resp = await client.post(
        "/api/sync/data-sources",
        json={
            "id": "bomb",
            "name": "a workbook bomb",
            "kind": "file",
            "connection": {"path": str(bomb)},
            "target_table": "lot_partnumbers",
            "key_columns": ["vendor", "partnumber"],
        },
    )
    assert resp.status == 201, await resp.text()
    resp = await client.post(
        "/api/sync/tasks",
        json={"task_type": "full_sync", "data_source_id": "bomb", "max_attempts": 1},
    )
    task = await wait_task(client, (await resp.json())["id"])
    assert task["status"] == "failed"
    assert "sheet-bomb.xlsx: refused before reading" in task["error"]
    assert "0 rows committed before the error" in task["error"]


async def test_a_disguised_workbook_part_fails_its_task_when_loaded(
    aiohttp_client: AiohttpClient, database_url: str, tmp_path: Path
) -> None:
    settings = make_settings(database_url, tmp_path, xlsx_max_part_mb=1)
    client = await aiohttp_client(create_app(settings))
    padding = "".join(f"<!-- {i * 7919 % 1000003:07d} -->" for i in range(100_000))
    book = text_member(
        "xl/worksheets/book.xml",
        '<workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"'
        ' xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships">'
        f'<sheets><sheet name="Stock" sheetId="1" r:id="rId1"/></sheets>{padding}</workbook>',
    )
    members = skeleton(workbook=book, workbook_part="xl/worksheets/book.xml")
    path = await asyncio.to_thread(write_zip, tmp_path / "disguised.xlsx", members)
    resp = await client.post("/api/imports/stock", data=form(path))
    assert resp.status == 202, await resp.text()  # by name, every part is within its limit
    task = await wait_task(client, (await resp.json())["id"])
    assert task["status"] == "failed"
    assert "xl/worksheets/book.xml, which is loaded whole, unpacks to 1.5 MB" in task["error"]
