"""Three real `syncd serve` daemons on one MariaDB: exactly once, a node killed, a DB outage.

The cluster's acceptance test. The daemons are the venv's console script, on free ports, with
distinct node ids and a 3 s lease so that rescue is quick. Every wait polls the API or the
database inside a bounded deadline; the 10 s database outage is the one deliberate pause.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest
from sqlalchemy.engine import make_url

from bench.daemon import Daemon, wait_until
from bench.mariadb import MariaDBServer
from tests.conftest import migrate_url

pytestmark = pytest.mark.acceptance

NODES = 3
LEASE_S = 3


def start_daemon(url: str, node_id: str, tmp_path: Path) -> Daemon:
    env = {
        "SYNCD_DATABASE_URL": url,
        "SYNCD_NODE_ID": node_id,
        "SYNCD_STATE_DIR": str(tmp_path / node_id),
        "SYNCD_LEASE_S": str(LEASE_S),
        "SYNCD_RESCUE_INTERVAL_S": "1",
        "SYNCD_CONCURRENCY": "16",
        "SYNCD_DB_TIMEOUT_S": "2",
        "SYNCD_LOG_FORMAT": "json",
        "SYNCD_LOG_LEVEL": "INFO",
    }
    return Daemon(env, tmp_path / f"{node_id}.log", cwd=tmp_path).launch()


def ready(daemon: Daemon) -> bool:
    assert daemon.alive, daemon.log()[-3000:]
    try:
        return daemon.request("GET", "/readyz")[0] == 200
    except OSError:
        return False


class Db:
    """Direct reads of the shared database (the test's own view, not the daemons')."""

    def __init__(self, url: str) -> None:
        parsed = make_url(url)
        self.kwargs: dict[str, Any] = {
            "host": parsed.host,
            "port": parsed.port,
            "user": parsed.username,
            "password": parsed.password,
            "database": parsed.database,
            "connect_timeout": 2,
            "read_timeout": 10,
            "autocommit": True,
        }

    def rows(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        with pymysql.connect(**self.kwargs) as conn, conn.cursor() as cur:
            cur.execute(sql, args)
            return list(cur.fetchall())

    def done(self, ids: list[str]) -> int:
        marks = ",".join(["%s"] * len(ids))
        sql = f"SELECT COUNT(*) FROM sync_tasks WHERE status='completed' AND id IN ({marks})"
        return int(self.rows(sql, *ids)[0][0])

    def statuses(self, ids: list[str]) -> Counter[str]:
        marks = ",".join(["%s"] * len(ids))
        sql = f"SELECT status, COUNT(*) FROM sync_tasks WHERE id IN ({marks}) GROUP BY status"
        return Counter({s: int(n) for s, n in self.rows(sql, *ids)})

    def attempts(self, ids: list[str]) -> dict[str, list[tuple[int, str, str]]]:
        marks = ",".join(["%s"] * len(ids))
        sql = (
            "SELECT task_id, attempt, node_id, outcome FROM sync_task_attempts "
            f"WHERE task_id IN ({marks}) ORDER BY id"
        )
        out: dict[str, list[tuple[int, str, str]]] = {i: [] for i in ids}
        for task_id, attempt, node, outcome in self.rows(sql, *ids):
            out[task_id].append((attempt, node, outcome))
        return out


def create(daemons: list[Daemon], count: int, parameters: dict[str, Any]) -> list[str]:
    """`count` noop tasks through the batch API, spread over the daemons."""
    ids: list[str] = []
    for index, offset in enumerate(range(0, count, 500)):
        size = min(500, count - offset)
        body = {"tasks": [{"task_type": "noop", "parameters": parameters}] * size}
        status, reply = daemons[index % len(daemons)].request("POST", "/api/sync/tasks/batch", body)
        assert status == 201, reply
        ids.extend(t["id"] for t in reply["tasks"])
    return ids


def executions(daemons: list[Daemon]) -> Counter[str]:
    """Per task id, how many attempts ran to their end on any daemon (from their JSON logs)."""
    seen: Counter[str] = Counter()
    for daemon in daemons:
        for line in daemon.log().splitlines():
            if not line.startswith("{"):
                continue
            record = json.loads(line)
            ended = record.get("action") in ("completed", "failed", "retry", "cancelled")
            if ended and record.get("msg", "").startswith("task ") and "task_id" in record:
                seen[record["task_id"]] += 1
    return seen


@pytest.fixture
def cluster(
    mariadb_url: str, mariadb_server: MariaDBServer, tmp_path: Path
) -> Iterator[tuple[list[Daemon], Db]]:
    migrate_url(mariadb_url)
    daemons = [start_daemon(mariadb_url, f"node-{i + 1}", tmp_path) for i in range(NODES)]
    try:
        for daemon in daemons:
            wait_until(lambda d=daemon: ready(d), 60, f"{daemon.node_id} to be ready")  # type: ignore[misc]
        yield daemons, Db(mariadb_url)
    finally:
        if not mariadb_server.running:
            mariadb_server.start()
        for daemon in daemons:  # all stop at once, then each is waited for
            daemon.begin_stop()
        for daemon in daemons:
            daemon.stop()


def test_three_daemons_exactly_once_then_a_kill_then_an_outage(
    cluster: tuple[list[Daemon], Db], mariadb_server: MariaDBServer
) -> None:
    daemons, db = cluster

    # 1. 3,000 tasks, no crash: each executed exactly once.
    first = create(daemons, 3000, {})
    wait_until(lambda: db.done(first) == 3000, 60, "3000 tasks to complete")
    assert db.rows("SELECT DISTINCT attempt FROM sync_tasks") == [(1,)]  # one claim each
    attempts = db.attempts(first)
    assert all(len(a) == 1 and a[0][2] == "completed" for a in attempts.values())
    by_node = Counter(a[0][1] for a in attempts.values())
    assert set(by_node) <= {d.node_id for d in daemons}
    ran = executions(daemons)
    assert all(ran[task_id] == 1 for task_id in first), "a task ran more than once"

    # 2. One daemon killed with SIGKILL mid-run: every task still completes.
    # Half-second tasks: a victim seen running tasks is still running them when the kill lands
    # (with 0.05 s tasks they could all finish in between, leaving nothing to be lost).
    second = create(daemons, 600, {"sleep_s": 0.5})
    wait_until(lambda: db.done(second) >= 60, 60, "the second batch to be under way")
    victim = daemons[2]
    # The victim must hold running tasks when it is killed; at any one instant it may be
    # between claims, so wait for a moment when it does.
    wait_until(
        lambda: (
            db.rows(
                "SELECT COUNT(*) FROM sync_tasks WHERE status='running' AND lease_owner=%s",
                victim.node_id,
            )[0][0]
            > 0
        ),
        30,
        "the victim to be running tasks",
    )
    victim.kill()
    survivors = daemons[:2]
    wait_until(lambda: db.done(second) == 600, 90, "the second batch after the kill")
    assert db.statuses(second) == Counter({"completed": 600})
    lost = [a for rows in db.attempts(second).values() for a in rows if a[2] == "lost"]
    assert lost and all(node == victim.node_id for _, node, _ in lost)
    assert all(d.alive for d in survivors)

    # 3. The database stopped for 10 s and started again: no daemon exits, nothing is lost.
    third = create(survivors, 1500, {"sleep_s": 0.05})
    wait_until(lambda: db.done(third) >= 100, 60, "the third batch to be under way")
    mariadb_server.stop()
    outage_end = time.monotonic() + 10
    for daemon in survivors:
        assert daemon.request("GET", "/readyz")[0] == 503
        status, reply = daemon.request("GET", "/api/sync/tasks")
        assert status == 503 and reply["error"]["code"] == "unavailable"
    time.sleep(max(0.0, outage_end - time.monotonic()))  # the outage itself
    assert all(d.alive for d in survivors), "a daemon exited during the outage"
    mariadb_server.start()
    wait_until(lambda: all(ready(d) for d in survivors), 60, "the daemons to be ready again")
    wait_until(lambda: db.done(third) == 1500, 90, "the third batch after the outage")
    assert db.statuses(third) == Counter({"completed": 1500})
    assert db.statuses(first + second) == Counter({"completed": 3600})
    assert all(d.alive for d in survivors)
