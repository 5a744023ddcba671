"""`bench/api_reads.py` runs end to end with tiny counts on both databases, so it cannot rot
unnoticed (wrk comes from scripts/install-test-deps.sh).

The figures themselves are not checked (the bench is not a timed test); the run must finish,
print every part, and report sane numbers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_read_bench_runs_small(mariadb_url: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNCD_")}
    only = "list cursor, last page;list before, deep page;statistics, 7 days"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.api_reads",
            "--counts=80",
            "--seconds=1",
            "--single-seconds=1",
            f"--only={only}",
            f"--mariadb={mariadb_url}",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    for part in ("SQLite, 80 tasks", "MariaDB, 80 tasks", "GET one task / /healthz", "growth"):
        assert part in out, out
    figures = json.loads(out.strip().splitlines()[-1])
    for database in ("sqlite", "mariadb"):
        runs = figures[database]
        assert set(runs) == {"80", "growth"}
        measured = runs["80"]["figures"]
        assert set(measured) == {"/healthz", "GET one task", *only.split(";")}
        assert runs["80"]["get_ratio"] > 0
        assert all(rate > 0 and 0 < p50 <= p99 for rate, p50, p99 in measured.values())
        assert set(runs["growth"]) == set(measured)
