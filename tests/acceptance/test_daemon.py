"""The real daemon: create over HTTP, cancel a running task, SIGKILL mid-run, restart, SIGTERM."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.daemon import Daemon, wait_until

pytestmark = pytest.mark.acceptance


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {
        "SYNCD_DATABASE_URL": f"sqlite:///{tmp_path / 'syncd.db'}",
        "SYNCD_STATE_DIR": str(tmp_path / "state"),
        "SYNCD_CONCURRENCY": "4",
        "SYNCD_LEASE_S": "2",
        "SYNCD_RESCUE_INTERVAL_S": "0.5",
        "SYNCD_CANCEL_GRACE_S": "5",
        "SYNCD_SHUTDOWN_GRACE_S": "5",
        "SYNCD_RETRY_BACKOFF_S": "0",
        "SYNCD_NODE_ID": "acceptance",
    }


@pytest.fixture
def daemon(env: dict[str, str], tmp_path: Path) -> Iterator[Daemon]:
    d = Daemon(env, tmp_path / "daemon.log")
    yield d
    d.close()


def tasks_by_status(d: Daemon) -> dict[str, int]:
    stats = d.call("GET", "/api/sync/tasks/statistics?since=2000-01-01T00:00:00Z")
    by_status: dict[str, int] = stats["database"]["by_status"]
    return by_status


def test_unmigrated_database_is_refused(daemon: Daemon, tmp_path: Path) -> None:
    result = daemon.run("serve", check=False)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"syncd: no database at {tmp_path / 'syncd.db'}: run `syncd migrate` first"
        " (or set SYNCD_DATABASE_URL)"
    )
    assert not (tmp_path / "syncd.db").exists()
    sqlite3.connect(tmp_path / "syncd.db").close()  # an empty database, never migrated
    result = daemon.run("serve", check=False)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "syncd: database is not migrated: run `syncd migrate` first"
    )


def test_bad_setting_stops_start_up_with_one_line(daemon: Daemon) -> None:
    daemon.env["SYNCD_CONCURRENCY"] = "many"
    result = daemon.run("check-config", check=False)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "SYNCD_CONCURRENCY" in lines[0], lines


def test_nothing_lost_across_cancel_sigkill_and_restart(daemon: Daemon, tmp_path: Path) -> None:
    daemon.run("migrate")
    daemon.start()
    # A long cooperative task, cancelled while it runs.
    long_task = daemon.call(
        "POST",
        "/api/sync/tasks",
        {"task_type": "noop", "parameters": {"sleep_s": 60, "steps": 600}, "priority": 100},
        expect=201,
    )
    wait_until(
        lambda: daemon.call("GET", f"/api/sync/tasks/{long_task['id']}")["status"] == "running",
        10,
        "the long task to start",
    )
    cancel = daemon.call("POST", f"/api/sync/tasks/{long_task['id']}/cancel", expect=202)
    assert cancel["cancel_requested"] is True
    wait_until(
        lambda: daemon.call("GET", f"/api/sync/tasks/{long_task['id']}")["status"] == "cancelled",
        10,
        "the cooperative cancel",
    )
    # Work that is mid-run when the daemon is killed.
    batch = [{"task_type": "noop", "parameters": {"sleep_s": 0.4, "steps": 4}} for _ in range(24)]
    created = daemon.call("POST", "/api/sync/tasks/batch", {"tasks": batch}, expect=201)
    ids = [t["id"] for t in created["tasks"]]
    wait_until(lambda: tasks_by_status(daemon)["running"] >= 2, 10, "tasks to be running")
    daemon.kill()
    running_at_kill = _count(tmp_path, "SELECT COUNT(*) FROM sync_tasks WHERE status='running'")
    assert running_at_kill >= 1

    daemon.start()  # same database: expired leases are rescued and run again
    wait_until(
        lambda: (s := tasks_by_status(daemon))["pending"] + s["running"] == 0,
        60,
        "every task to finish after the restart",
    )
    final = {i: daemon.call("GET", f"/api/sync/tasks/{i}") for i in ids}
    assert {t["status"] for t in final.values()} == {"completed"}
    rescued = [t for t in final.values() if any(a["outcome"] == "lost" for a in t["attempts"])]
    assert len(rescued) == running_at_kill
    assert all(t["attempts"][-1]["outcome"] == "completed" for t in rescued)
    assert daemon.call("GET", f"/api/sync/tasks/{long_task['id']}")["status"] == "cancelled"

    # A graceful stop gives a running task back to pending without counting the attempt.
    slow_body = {"task_type": "noop", "parameters": {"sleep_s": 60, "steps": 60}}
    slow = daemon.call("POST", "/api/sync/tasks", slow_body, expect=201)
    wait_until(
        lambda: daemon.call("GET", f"/api/sync/tasks/{slow['id']}")["status"] == "running",
        10,
        "the slow task to start",
    )
    assert daemon.terminate() == 0
    row: Any = _row(tmp_path, f"SELECT status, attempt FROM sync_tasks WHERE id='{slow['id']}'")
    assert tuple(row) == ("pending", 0)
    assert '"stopping"' in daemon.log_tail(50) or "stopping" in daemon.log_tail(50)


def _count(tmp_path: Path, sql: str) -> int:
    return int(_row(tmp_path, sql)[0])


def _row(tmp_path: Path, sql: str) -> tuple[Any, ...]:
    with sqlite3.connect(tmp_path / "syncd.db") as conn:
        row: tuple[Any, ...] = conn.execute(sql).fetchone()
    return row
