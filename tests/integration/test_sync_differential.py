"""The target after `full_sync`, `incremental_sync` and `delete_missing` equals an independent
reference, on SQLite and MariaDB, with tricky source rows.

The reference below is written from the documented rules alone (docs/imports.md), row by row
in plain Python: keys and text columns as text, booleans from `yes`/`0`/..., a row with an
empty key or a value that is not a boolean rejected, a key repeated within a batch written
once (its last row) and counted once, `updated` for keys the table held before the batch.
The sync runs through the daemon's app on a real SQLite source with batches of 4 rows, so
duplicates fall within one batch and across batches; and on an HTTP source read in pages of 3,
whose `full_sync` writes a page per batch and whose `incremental_sync` keeps the rows above the
watermark from every page and writes them in batches of 4, in the source's order.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient, AiohttpServer
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from config.settings import Settings
from controllers.app import create_app
from schedule.database import create_engine
from tests.conftest import make_settings
from tests.helpers import task_json_once

Client = TestClient[Any, Any]
BATCH = 4
PAGE = 3
FIELDS = ("pn", "maker", "lot", "descr", "main", "version")
MAPPING = {
    "pn": "partnumber",
    "maker": "vendor",
    "lot": "lot_name",
    "descr": "description",
    "main": "is_primary_pn",
}
TRUE = {"1", "true", "yes", "y", "t", "on"}
FALSE = {"0", "false", "no", "n", "f", "off"}
Key = tuple[str, str]
# (pn, maker, lot, descr, main, version); `maker` and `main` have no declared type in the
# source, so integers, floats and text reach the sync as the driver reads them.
ROWS: list[tuple[Any, ...]] = [
    ("PN-1", "HP", "L1", "disk", "yes", 1),
    ("PN-2", "HP", "L2", None, 1, 1),
    (None, "HP", "L3", "no key", 1, 1),  # NULL key: rejected
    ("PN-1", "HP", "L1b", "again, same batch", "0", 1),  # a duplicate within the first batch
    ("部品-α", "Üñï", "Лот", "emoji \U0001f680 and 'quotes'", "true", 2),
    ("PN-3", 42, "L4", "an integer maker", 0, 2),
    ("PN-4", "HP", "L5", "not a boolean", "maybe", 2),  # wrong type: rejected, key kept
    ("PN-5", 7.0, "L6", "a float maker", "no", 2),
    ("", "HP", "L7", "empty key", 1, 3),  # an empty key is not a value: kept as text
    ("PN-2", "HP", "L2b", "a duplicate in a later batch", "n", 3),
    ("PN-6", "HP", None, None, "1", 3),
]


def as_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def as_bool(value: Any) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    text_ = str(value).strip().lower()
    if text_ in TRUE:
        return True
    if text_ in FALSE:
        return False
    return None


@dataclass
class Reference:
    """The target table as the documented rules make it, with the counts of each run."""

    rows: dict[Key, tuple[Any, ...]] = field(default_factory=dict)

    def sync(
        self,
        source: Sequence[tuple[Any, ...]],
        *,
        delete_missing: bool = False,
        batch_size: int = BATCH,
    ) -> dict[str, int]:
        """Write `source` in batches of `batch_size` rows."""
        counts = {"read": 0, "inserted": 0, "updated": 0, "deleted": 0, "failed": 0}
        seen: set[Key] = set()
        for start in range(0, len(source), batch_size):
            batch: dict[Key, tuple[Any, ...]] = {}
            for pn, maker, lot, descr, main, _ in source[start : start + batch_size]:
                counts["read"] += 1
                key = (as_text(maker), as_text(pn))
                flag = as_bool(main)
                if key[0] is None or key[1] is None or flag is None:
                    counts["failed"] += 1
                    if key[0] is not None and key[1] is not None:
                        seen.add((key[0], key[1]))
                    continue
                batch[(key[0], key[1])] = (key[0], key[1], as_text(lot), as_text(descr), flag)
            updated = sum(1 for key in batch if key in self.rows)
            counts["updated"] += updated
            counts["inserted"] += len(batch) - updated
            self.rows.update(batch)
            seen.update(batch)
        if delete_missing:
            gone = [key for key in self.rows if key not in seen]
            for key in gone:
                del self.rows[key]
            counts["deleted"] = len(gone)
        return counts


def write_source(path: Path, rows: Sequence[tuple[Any, ...]]) -> None:
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("DROP TABLE IF EXISTS parts")
        conn.execute("CREATE TABLE parts (pn TEXT, maker, lot TEXT, descr TEXT, main, version INT)")
        conn.executemany("INSERT INTO parts VALUES (?, ?, ?, ?, ?, ?)", rows)
    conn.close()


@pytest.fixture
def app_settings(database_url: str, tmp_path: Path) -> Settings:
    # The HTTP source's test server listens on 127.0.0.1, which the egress policy refuses
    # unless listed.
    return make_settings(database_url, tmp_path, egress_allowed_hosts=["127.0.0.1"])


@pytest.fixture
async def client(aiohttp_client: AiohttpClient, app_settings: Settings) -> Client:
    return await aiohttp_client(create_app(app_settings))


@pytest.fixture
async def db(app_settings: Settings) -> Any:
    engine = await asyncio.to_thread(create_engine, app_settings)
    yield engine
    await engine.dispose()


async def define(client: Client, source_id: str, **fields: Any) -> None:
    """A data source `source_id` of the SQLite table `parts` at `url`, or of what `fields`
    say (`kind` and `connection`)."""
    url = fields.pop("url", "")
    body = {
        "id": source_id,
        "name": source_id,
        "kind": "sql",
        "connection": {"url": url, "table": "parts"},
        "target_table": "lot_partnumbers",
        "key_columns": ["vendor", "partnumber"],
        "column_mapping": MAPPING,
        "watermark_column": "version",
        "batch_size": BATCH,
        **fields,
    }
    resp = await client.post("/api/sync/data-sources", json=body)
    assert resp.status == 201, await resp.text()


async def run(client: Client, task_type: str, source_id: str) -> dict[str, Any]:
    body = {"task_type": task_type, "data_source_id": source_id, "max_attempts": 1}
    resp = await client.post("/api/sync/tasks", json=body)
    assert resp.status == 201, await resp.text()
    task = await task_json_once(client, (await resp.json())["id"])
    assert task["status"] == "completed", task
    errors = await (await client.get(f"/api/sync/tasks/{task['id']}/errors")).json()
    assert len(errors["errors"]) == task["result"]["failed"]
    for error in errors["errors"]:
        assert set(error["record"]) == {"pn", "maker", "lot", "descr", "main", "version"}
    result: dict[str, Any] = task["result"]
    return {k: result[k] for k in ("read", "inserted", "updated", "deleted", "failed")}


async def target(db: AsyncEngine) -> dict[Key, tuple[Any, ...]]:
    async with db.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT vendor, partnumber, lot_name, description, is_primary_pn"
                " FROM lot_partnumbers"
            )
        )
        return {(r[0], r[1]): (r[0], r[1], r[2], r[3], bool(r[4])) for r in rows}


async def test_target_equals_reference_after_full_incremental_and_delete(
    client: Client, db: AsyncEngine, tmp_path: Path
) -> None:
    path = tmp_path / "source.db"
    url = f"sqlite:///{path}"
    await asyncio.to_thread(write_source, path, ROWS)
    await define(client, "parts", url=url)
    await define(client, "parts-dm", url=url, delete_missing=True)
    ref = Reference()
    async with db.begin() as conn:  # a row the source never had: delete_missing removes it
        await conn.execute(
            text("INSERT INTO lot_partnumbers (vendor, partnumber) VALUES ('X', 'OLD')")
        )
    ref.rows[("X", "OLD")] = ("X", "OLD", None, None, True)

    assert await run(client, "full_sync", "parts") == ref.sync(ROWS)
    assert await target(db) == ref.rows

    # The first incremental run reads every row (no watermark yet) and stores version 3.
    ordered = sorted(ROWS, key=lambda r: r[5])
    assert await run(client, "incremental_sync", "parts") == ref.sync(ordered)
    changed = [
        *ROWS,
        ("PN-1", "HP", "L1c", "changed", "off", 4),
        ("PN-7", "Üñï", "L8", "new", "on", 4),
        ("PN-7", "Üñï", "L8b", "new, then changed", "t", 5),
        ("PN-8", None, "L9", "NULL vendor", 1, 5),
        ("PN-3", 42, "L4b", "changed", "bogus", 6),
    ]
    await asyncio.to_thread(write_source, path, changed)
    above = sorted((r for r in changed if r[5] > 3), key=lambda r: r[5])
    assert await run(client, "incremental_sync", "parts") == ref.sync(above)
    assert await target(db) == ref.rows
    assert await run(client, "incremental_sync", "parts") == ref.sync([])

    left = [r for r in changed if r[0] not in ("PN-5", "PN-6")]
    await asyncio.to_thread(write_source, path, left)
    counts = await run(client, "full_sync", "parts-dm")
    assert counts == ref.sync(left, delete_missing=True)
    assert counts["deleted"] == 3  # PN-5, PN-6 and X/OLD; PN-3 (rejected) and PN-4 stay
    assert await target(db) == ref.rows


async def test_http_source_equals_reference(
    client: Client, db: AsyncEngine, aiohttp_server: AiohttpServer
) -> None:
    served: list[list[tuple[Any, ...]]] = [ROWS]

    async def items(request: web.Request) -> web.Response:
        number, size = int(request.query["page"]), int(request.query["size"])
        rows = served[0][(number - 1) * size : number * size]
        return web.json_response({"items": [dict(zip(FIELDS, r, strict=True)) for r in rows]})

    app = web.Application()
    app.router.add_get("/items", items)
    server = await aiohttp_server(app)
    connection = {
        "url": str(server.make_url("/items")),
        "items_path": "items",
        "pagination": {"mode": "page", "size": PAGE},
    }
    await define(client, "pages", kind="http", connection=connection)
    await define(client, "pages-dm", kind="http", connection=connection, delete_missing=True)
    ref = Reference()

    # A full_sync writes each page as it comes; an incremental_sync (the first one reads
    # every row: no watermark yet) keeps the rows above the watermark in the pages' order
    # and writes them in batches of BATCH, across pages.
    assert await run(client, "full_sync", "pages") == ref.sync(ROWS, batch_size=PAGE)
    assert await target(db) == ref.rows
    assert await run(client, "incremental_sync", "pages") == ref.sync(ROWS)
    changed = [
        *ROWS,
        ("PN-1", "HP", "L1c", "changed", "off", 4),
        ("PN-7", "Üñï", "L8", "new", "on", 4),  # a page after PN-1's, the same batch
        ("PN-7", "Üñï", "L8b", "new, then changed", "t", 5),
        ("PN-8", None, "L9", "NULL vendor", 1, 5),
        ("PN-3", 42, "L4b", "changed", "bogus", 6),
    ]
    served[0] = changed
    above = [r for r in changed if r[5] > 3]
    assert await run(client, "incremental_sync", "pages") == ref.sync(above)
    assert await target(db) == ref.rows
    assert await run(client, "incremental_sync", "pages") == ref.sync([])

    left = [r for r in changed if r[0] not in ("PN-5", "PN-6")]
    served[0] = left
    counts = await run(client, "full_sync", "pages-dm")
    assert counts == ref.sync(left, delete_missing=True, batch_size=PAGE)
    assert counts["deleted"] == 2  # PN-5 and PN-6; PN-3 (rejected) and PN-4 stay
    assert await target(db) == ref.rows
