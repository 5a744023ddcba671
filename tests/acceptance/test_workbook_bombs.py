"""The issue's workbook attacks against a real `syncd serve`, and a big legitimate import.

The daemon refuses the 2 GB sheet bomb at upload and fails its task when the file gets past the
upload, without its memory growing (the issue measured 4.3 GB RSS, never given back); and while
a large legitimate workbook imports, `/healthz` keeps answering at once.
"""

from __future__ import annotations

import json
import re
import shutil
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.daemon import Daemon, wait_until
from tests.zips import deflated, skeleton, write_zip

pytestmark = pytest.mark.acceptance
HEADER = ["Артикул", "Производитель", "Наименование", "Количество", "Цена", "Склад"]
BIG_ROWS = 200_000
HEALTHZ_WITHIN_S = 1.0  # generous: a stalled loop (the issue saw 2 s) misses it by far


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    env = {
        "SYNCD_DATABASE_URL": f"sqlite:///{tmp_path / 'syncd.db'}",
        "SYNCD_STATE_DIR": str(tmp_path / "state"),
        "SYNCD_NODE_ID": "bombs",
        "SYNCD_LOG_FORMAT": "text",
        "SYNCD_LOG_LEVEL": "WARNING",
    }
    d = Daemon(env, tmp_path / "daemon.log")
    d.run("migrate")
    yield d.start()
    d.close()


def upload(daemon: Daemon, path: Path, filename: str = "stock.xlsx") -> tuple[int, Any]:
    """`POST /api/imports/stock` as multipart/form-data: (status, JSON answer)."""
    boundary = uuid.uuid4().hex
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    body += path.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(
        daemon.url + "/api/imports/stock",
        data=body,
        method="POST",
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def peak_rss_mb(daemon: Daemon) -> float:
    assert daemon.proc is not None
    status = Path(f"/proc/{daemon.proc.pid}/status").read_text()
    match = re.search(r"VmHWM:\s+(\d+) kB", status)
    assert match is not None
    return int(match.group(1)) / 1024


def finished(daemon: Daemon, task_id: str, within: float = 120) -> Any:
    def ended() -> Any:
        task = daemon.call("GET", f"/api/sync/tasks/{task_id}")
        return task if task["status"] in ("completed", "failed", "cancelled") else None

    return wait_until(ended, within, f"task {task_id} to end")


def test_the_sheet_bomb_is_refused_and_memory_stays_flat(
    daemon: Daemon, sheet_bomb_xlsx: Path
) -> None:
    status, answer = upload(daemon, sheet_bomb_xlsx)
    assert status == 413, answer
    assert "above SYNCD_XLSX_MAX_RATIO=100" in answer["error"]["message"]
    # Past the upload (a file put in place by hand): the task fails before parsing anything.
    uploads = Path(daemon.env["SYNCD_STATE_DIR"]) / "uploads"
    uploads.mkdir(parents=True, exist_ok=True)
    name = uuid.uuid4().hex + ".xlsx"
    shutil.copyfile(sheet_bomb_xlsx, uploads / name)
    task = daemon.call(
        "POST",
        "/api/sync/tasks",
        {"task_type": "stock_import", "parameters": {"file": name}, "max_attempts": 1},
        expect=201,
    )
    done = finished(daemon, task["id"])
    assert done["status"] == "failed"
    assert "refused before reading" in done["error"]
    assert daemon.call("GET", "/healthz") is not None
    assert peak_rss_mb(daemon) < 250, daemon.log_tail()


def stock_rows(count: int) -> Iterator[bytes]:
    """The sheet data of a plausible stock file, `count` rows after the header, in chunks."""
    yield _row(1, HEADER)
    for start in range(0, count, 1000):
        yield b"".join(
            _row(i + 2, [f"PN-{i}", f"VENDOR-{i % 7}", f"Item {i}", str(i % 100 + 1), "9,50", "A"])
            for i in range(start, min(count, start + 1000))
        )


def _row(number: int, values: list[str]) -> bytes:
    cells = "".join(f'<c t="inlineStr"><is><t>{v}</t></is></c>' for v in values)
    return f'<row r="{number}">{cells}</row>'.encode()


def test_healthz_answers_at_once_during_a_big_import(daemon: Daemon, tmp_path: Path) -> None:
    sheet = deflated(
        "xl/worksheets/sheet1.xml",
        [
            b'<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">'
            b"<sheetData>",
            *stock_rows(BIG_ROWS),
            b"</sheetData></worksheet>",
        ],
        level=1,
    )
    path = write_zip(tmp_path / "big.xlsx", skeleton(sheet=sheet))
    status, task = upload(daemon, path)
    assert status == 202, task
    latencies: list[float] = []
    while daemon.call("GET", f"/api/sync/tasks/{task['id']}")["status"] in ("pending", "running"):
        started = time.perf_counter()
        with urllib.request.urlopen(daemon.url + "/healthz", timeout=HEALTHZ_WITHIN_S) as resp:
            assert resp.status == 200
        latencies.append(time.perf_counter() - started)
    done = finished(daemon, task["id"])
    assert done["status"] == "completed", done
    assert done["result"]["inserted"] == BIG_ROWS
    assert len(latencies) >= 10, latencies  # probed all along the import
    assert max(latencies) < HEALTHZ_WITHIN_S
