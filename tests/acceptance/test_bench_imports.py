"""`bench/imports.py` runs end to end against a real daemon (small counts: a smoke run)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.acceptance
ROOT = Path(__file__).resolve().parents[2]


def test_bench_imports_smoke(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.imports",
            "--records",
            "300",
            "--rows",
            "300",
            "--rss-rows",
            "500",
            "--dir",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    for line in (
        "rate import / raw:",
        "ratio import / bare read:",
        "daemon peak RSS (VmHWM):",
        "/healthz, during import:    p50",
    ):
        assert line in out, out
    assert "500-row import" in out
