"""`bench/queue_throughput.py` runs end to end with tiny counts, so it cannot rot unnoticed.

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


def test_bench_runs_small(mariadb_url: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNCD_")}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.queue_throughput",
            "--tasks=60",
            "--latency-samples=5",
            "--idle-s=0.5",
            f"--mariadb={mariadb_url}",
            "--mariadb-tasks=60",
            "--mariadb-nodes=1,2",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    for part in ("throughput (60 noop tasks", "idle pickup latency", "MariaDB (60 noop tasks"):
        assert part in out, out
    figures = json.loads(out.strip().splitlines()[-1])
    assert figures["syncd_rate"] > 0 and figures["huey_rate"] > 0
    assert 0 < figures["latency_p50_ms"] <= figures["latency_p99_ms"]
    assert set(figures["mariadb_rates"]) == {"1", "2"}


def test_schedule_bench_runs_small(mariadb_url: str) -> None:
    """`bench/schedules.py` with 10 schedules every 2 s, on SQLite and two daemons on MariaDB."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNCD_")}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.schedules",
            "--schedules=10",
            "--every-s=1",
            "--duration-s=2",
            f"--mariadb={mariadb_url}",
            "--nodes=2",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    for part in ("SQLite, 1 daemon (10 schedules)", "MariaDB, 2 daemons (10 schedules)"):
        assert part in out, out
    figures = json.loads(out.strip().splitlines()[-1])
    for name, nodes in (("sqlite", 1), ("mariadb", 2)):
        run = figures[name]
        assert run["expected_fires"] == 30 and run["tasks"] >= 30, run
        assert run["duplicates"] == 0, run
        assert 0 <= run["lag_p50_s"] <= run["lag_p99_s"], run
        assert 0 <= run["visible_p50_s"] <= run["visible_max_s"] <= 1, run
        assert run["create_rate"] > 0 and len(run["scheduler_cpu_share"]) == nodes, run
