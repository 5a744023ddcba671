"""`bench/syncs.py` runs end to end against a real daemon (small counts: a smoke run)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.mariadb import SKIP_ENV, MariaDBServer

pytestmark = pytest.mark.acceptance
ROOT = Path(__file__).resolve().parents[2]


def test_bench_syncs_smoke(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    kinds = "sqlite,csv,xlsx,http"
    extra: list[str] = []
    if os.environ.get(SKIP_ENV) != "0":  # on the suite's server, not one of its own
        server: MariaDBServer = request.getfixturevalue("mariadb_server")
        kinds += ",mariadb"
        extra = ["--mariadb", f"127.0.0.1:{server.port}"]
    done = subprocess.run(
        [sys.executable, "-m", "bench.syncs", "--rows", "200", "--kinds", kinds, *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "TMPDIR": str(tmp_path)},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    for kind in kinds.split(","):
        assert f"{kind}: full_sync, every row new:" in out, out
        assert f"{kind}: full_sync, every row an update:" in out, out
        assert f"{kind}: incremental_sync, 1% changed:" in out, out
        assert f"{kind}: full_sync + delete_missing, 1% gone:" in out, out
    assert out.count("  ratio:") == len(kinds.split(",")) * 4
    assert "daemon RSS growth:" in out
