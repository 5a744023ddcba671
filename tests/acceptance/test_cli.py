"""The `syncd` client commands, run as real processes against a real daemon."""

from __future__ import annotations

import json
import os
import pty
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.daemon import Daemon, free_port, running_daemon
from tests.conftest import FAST

pytestmark = pytest.mark.acceptance
LATER = "2099-01-01T00:00:00Z"
FOLLOW_ARGS = ["tasks", "create", "noop", "-p", "steps=3", "-p", "sleep_s=0.3", "--follow"]
COLUMNS = ["REFERENCE", "TYPE", "STATUS", "PROGRESS", "ATTEMPT", "CREATED", "MESSAGE"]


@pytest.fixture(scope="module")
def daemon(sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    with running_daemon(sqlite_template, tmp_path_factory.mktemp("cli-daemon"), FAST) as d:
        yield d


def client_env(daemon: Daemon | None, **extra: str) -> dict[str, str]:
    """An environment where daemon settings are unusable: client commands must not read them."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNCD_")}
    env["SYNCD_PORT"] = "not-a-port"
    env["SYNCD_CONCURRENCY"] = "-1"
    if daemon is not None:
        env["SYNCD_URL"] = daemon.url
    env.update(extra)
    return env


def syncd(daemon: Daemon | None, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "controllers.cli", *args],
        env=client_env(daemon, **env),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_create_and_follow_until_completed(daemon: Daemon) -> None:
    done = syncd(daemon, "tasks", "create", "noop", "-p", "steps=4", "-p", "sleep_s=0.4", "-f")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) >= 2  # a line per change (stdout is not a terminal)
    assert "completed" in lines[-1] and "100%" in lines[-1]
    assert any("step " in line for line in lines)
    assert "\r" not in done.stdout


def test_follow_of_a_failing_task_exits_3(daemon: Daemon) -> None:
    failed = syncd(
        daemon, "tasks", "create", "noop", "--params", '{"fail_permanently": true}', "--follow"
    )
    assert failed.returncode == 3
    assert "failed: noop: asked to fail permanently" in failed.stdout.splitlines()[-1]


def test_follow_draws_in_place_on_a_terminal(daemon: Daemon) -> None:
    primary, replica = pty.openpty()
    try:
        process = subprocess.run(
            [sys.executable, "-m", "controllers.cli", *FOLLOW_ARGS],
            env=client_env(daemon),
            stdout=replica,
            stderr=subprocess.PIPE,
            timeout=60,
        )
        os.close(replica)
        output = b""
        while True:
            try:
                chunk = os.read(primary, 65536)
            except OSError:  # EIO: the process closed the terminal
                break
            if not chunk:
                break
            output += chunk
    finally:
        os.close(primary)
    assert process.returncode == 0, process.stderr
    text = output.decode()
    assert "\r\x1b[2K" in text and "completed" in text


def test_list_table_json_and_filters(daemon: Daemon) -> None:
    made = syncd(daemon, "tasks", "create", "noop", "--run-after", LATER, "--priority", "7")
    assert made.returncode == 0, made.stderr
    reference = made.stdout.split()[1]
    listing = syncd(daemon, "tasks", "list", "--status", "pending")
    assert listing.returncode == 0, listing.stderr
    header, *rows = listing.stdout.splitlines()
    assert header.split() == COLUMNS
    assert any(row.startswith(reference) and " pending " in row for row in rows)
    assert rows[-1].startswith("page 1 of 1")
    as_json = json.loads(syncd(daemon, "tasks", "list", "--json", "--size", "500").stdout)
    assert reference in {t["reference"] for t in as_json["tasks"]}
    failed_only = json.loads(syncd(daemon, "tasks", "list", "--status", "failed", "--json").stdout)
    assert all(t["status"] == "failed" for t in failed_only["tasks"])


def test_list_pages_by_cursor_both_ways(daemon: Daemon) -> None:
    """The footer prints the cursors of the pages beside this one; `--cursor` and `--before`
    follow them (tasks of one batch share `created_at`: the id orders them); a page number
    past the counted part is the API's 422 naming `page`; a number and a cursor are refused."""
    batch = [{"task_type": "noop", "run_after": LATER, "data_source_id": "cli-pages"}] * 5
    made = daemon.call("POST", "/api/sync/tasks/batch", {"tasks": batch})["tasks"]
    order = sorted(made, key=lambda t: (t["created_at"], t["id"]), reverse=True)
    newest_first = [t["reference"] for t in order]
    listed = ["tasks", "list", "--data-source", "cli-pages", "--size", "2"]

    def page(*extra: str) -> tuple[list[str], str, dict[str, list[str]]]:
        shown = syncd(daemon, *listed, *extra)
        assert shown.returncode == 0, shown.stderr
        _, *lines = shown.stdout.splitlines()
        footer = next(i for i, line in enumerate(lines) if line.startswith("page "))
        moves = dict(line.split(": ", 1) for line in lines[footer + 1 :])
        shown_refs = [line.split()[0] for line in lines[:footer]]
        return shown_refs, lines[footer], {k: v.split() for k, v in moves.items()}

    refs, where, moves = page()
    assert refs == newest_first[:2] and where == "page 1 of 3, 5 task(s)"
    assert list(moves) == ["next page"] and moves["next page"][0] == "--cursor"
    refs, where, moves = page(*moves["next page"])
    assert refs == newest_first[2:4] and where == "page by cursor, 5 task(s)"
    assert list(moves) == ["previous page", "next page"]
    refs, _, moves = page(*moves["next page"])
    assert refs == newest_first[4:] and list(moves) == ["previous page"]
    assert moves["previous page"][0] == "--before"
    refs, _, moves = page(*moves["previous page"])
    assert refs == newest_first[2:4]
    refs, _, moves = page(*moves["previous page"])
    assert refs == newest_first[:2] and list(moves) == ["next page"]

    deep = syncd(daemon, *listed, "--page", "501")  # (501 - 1) * 2 = 1,000 tasks before it
    assert deep.returncode == 1
    assert "page: " in deep.stderr and "pagination.next_cursor" in deep.stderr
    both = syncd(daemon, *listed, "--page", "2", "--cursor", "x")
    assert both.returncode == 2 and "not allowed with argument" in both.stderr


def test_show_cancel_retry_and_their_errors(daemon: Daemon) -> None:
    made = json.loads(
        syncd(daemon, "tasks", "create", "noop", "--run-after", LATER, "--json").stdout
    )
    shown = syncd(daemon, "tasks", "show", made["reference"])
    assert shown.returncode == 0 and "status:        pending" in shown.stdout
    assert (
        json.loads(syncd(daemon, "tasks", "show", made["id"], "--json").stdout)["id"] == made["id"]
    )

    cancelled = syncd(daemon, "tasks", "cancel", made["id"])
    assert cancelled.returncode == 0 and cancelled.stdout == f"cancelled {made['reference']}\n"
    again = syncd(daemon, "tasks", "cancel", made["id"])
    assert again.returncode == 1 and again.stdout == ""
    assert again.stderr == "syncd: error: HTTP 409 invalid_state: task is already cancelled\n"

    retried = syncd(daemon, "tasks", "retry", made["reference"], "--json")
    assert retried.returncode == 0, retried.stderr
    assert json.loads(retried.stdout)["retry_of"] == made["id"]

    unknown = syncd(daemon, "tasks", "show", "NOSUCHTASK1")
    assert unknown.returncode == 1
    assert unknown.stderr == "syncd: error: HTTP 404 not_found: no task 'NOSUCHTASK1'\n"
    invalid = syncd(daemon, "tasks", "create", "no_such_type")
    assert invalid.returncode == 1 and "HTTP 422 validation_error: task_type" in invalid.stderr


def test_batch_cancel_reports_each_id(daemon: Daemon) -> None:
    made = json.loads(
        syncd(daemon, "tasks", "create", "noop", "--run-after", LATER, "--json").stdout
    )
    slow = ["tasks", "create", "noop", "-p", "sleep_s=60", "-p", "steps=600", "--json"]
    running, alone = (json.loads(syncd(daemon, *slow).stdout) for _ in range(2))
    wait_running(daemon, running["id"])
    wait_running(daemon, alone["id"])
    result = syncd(daemon, "tasks", "cancel", made["id"], running["reference"], "NOSUCHTASK1")
    assert result.returncode == 1
    # Worded as a single cancel is: the same verbs, one line per task.
    assert result.stdout.splitlines() == [
        f"cancelled {made['id']}",
        f"cancel requested for {running['reference']} (it is running)",
        "NOSUCHTASK1: refused: no task 'NOSUCHTASK1'",
    ]
    single = syncd(daemon, "tasks", "cancel", alone["reference"])
    assert single.stdout == f"cancel requested for {alone['reference']} (it is running)\n"


def wait_running(daemon: Daemon, task_id: str) -> None:
    """Until the task runs (bounded: the daemon claims within its poll interval)."""
    for _ in range(200):
        if daemon.call("GET", f"/api/sync/tasks/{task_id}")["status"] == "running":
            return
        time.sleep(0.05)
    raise AssertionError(f"task {task_id} never started")


def test_stats(daemon: Daemon) -> None:
    stats = syncd(daemon, "tasks", "stats")
    assert stats.returncode == 0, stats.stderr
    assert "success rate:" in stats.stdout and "node test-daemon:" in stats.stdout
    as_json = json.loads(syncd(daemon, "tasks", "stats", "--json").stdout)
    assert set(as_json) == {"database", "engine"}


def test_unreachable_daemon_and_missing_file() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    down = syncd(None, "tasks", "list", "--url", url)
    assert down.returncode == 1
    assert down.stderr.startswith(f"syncd: error: cannot reach {url}: ")
    assert len(down.stderr.splitlines()) == 1
    missing = syncd(None, "import", "stock", "/nonexistent/stock.xlsx", "--url", url)
    assert missing.returncode == 1
    assert missing.stderr == "syncd: error: no such file: /nonexistent/stock.xlsx\n"


def test_snapshot_create_follows_the_task(daemon: Daemon) -> None:
    done = syncd(daemon, "snapshot", "create", "--follow")
    # With no source rows the snapshot fails by design (an empty book is refused).
    assert done.returncode in (0, 3), done.stderr
    assert "partnumber_book_create" in done.stdout


def test_import_stock_uploads_the_file(daemon: Daemon, tmp_path: Path) -> None:
    sheet = tmp_path / "stock.xlsx"
    from openpyxl import Workbook

    book = Workbook()
    sheet_ = book.active
    assert sheet_ is not None
    sheet_.append(["partnumber", "vendor", "description", "qty", "price", "warehouse"])
    sheet_.append(["PN-1", "ACME", "a part", 3, 9.5, "main"])
    book.save(sheet)
    done = syncd(daemon, "import", "stock", str(sheet), "--follow")
    assert "stock_import" in done.stdout
    assert done.returncode in (0, 3), done.stderr


@pytest.fixture(scope="module")
def guarded(sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """A daemon that requires tokens."""
    tokens = "cli-admin-token:admin,cli-read-token:read"
    with running_daemon(
        sqlite_template, tmp_path_factory.mktemp("cli-guarded"), FAST, SYNCD_API_TOKENS=tokens
    ) as d:
        yield d


def test_token_from_option_or_environment(guarded: Daemon) -> None:
    refused = syncd(guarded, "tasks", "list")
    assert refused.returncode == 1
    assert refused.stderr.startswith("syncd: error: HTTP 401 unauthorized: missing Authorization")
    assert syncd(guarded, "tasks", "list", "--token", "cli-read-token").returncode == 0
    assert syncd(guarded, "tasks", "stats", SYNCD_TOKEN="cli-read-token").returncode == 0
    forbidden = syncd(guarded, "tasks", "create", "noop", SYNCD_TOKEN="cli-read-token")
    assert forbidden.returncode == 1
    assert "HTTP 403 forbidden: role 'read' may not POST /api/sync/tasks" in forbidden.stderr
    made = syncd(guarded, "tasks", "create", "noop", "--follow", "--token", "cli-admin-token")
    assert made.returncode == 0, made.stderr
    assert "completed" in made.stdout.splitlines()[-1]


def test_schedules_commands(daemon: Daemon) -> None:
    made = syncd(
        daemon, "schedules", "add", "erp-parts", "noop", "--cron", "*/15 * * * *",
        "--tz", "Europe/Moscow", "-p", "steps=2", "--overlap", "queue_one",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert "Every 15 minutes (Europe/Moscow)" in made.stdout
    assert "NEXT FIRE (UTC)" in made.stdout and "IN Europe/Moscow" in made.stdout
    listed = syncd(daemon, "schedules", "list")
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if line.startswith("erp-parts"))
    assert "Every 15 minutes" in row and "api" in row
    assert "task_retention" in listed.stdout  # the built-ins are schedules too
    edited = syncd(daemon, "schedules", "edit", "erp-parts", "--every", "3600", "--json")
    assert edited.returncode == 0, edited.stderr
    shown = json.loads(edited.stdout)
    assert shown["description"] == "Every hour" and shown["overlap"] == "queue_one"
    assert shown["parameters"] == {"steps": 2}
    paused = syncd(daemon, "schedules", "pause", "erp-parts", "--note", "ERP upgrade")
    assert "paused:      yes (ERP upgrade)" in paused.stdout, paused.stdout
    assert syncd(daemon, "schedules", "resume", "erp-parts").returncode == 0
    ran = syncd(daemon, "schedules", "run", "erp-parts", "--follow")
    assert ran.returncode == 0 and "completed" in ran.stdout.splitlines()[-1], ran.stdout
    hourly = syncd(
        daemon, "schedules", "edit", "erp-parts", "--cron", "0 * * * *", "--overlap", "allow"
    )
    assert hourly.returncode == 0, hourly.stderr
    filled = syncd(
        daemon, "schedules", "backfill", "erp-parts",
        "--start", "2026-01-05T09:00:00Z", "--end", "2026-01-05T11:00:00Z",
    )  # fmt: skip
    assert filled.returncode == 0 and "3 task(s) enqueued" in filled.stdout, filled.stderr
    tasks = syncd(daemon, "tasks", "list", "--schedule", "erp-parts", "--json")
    assert json.loads(tasks.stdout)["pagination"]["total"] == 4
    bad = syncd(daemon, "schedules", "add", "x", "noop", "--cron", "61 * * * *")
    assert bad.returncode == 1 and "trigger.cron" in bad.stderr
    refused = syncd(daemon, "schedules", "rm", "task_retention")
    assert refused.returncode == 1 and "built-in" in refused.stderr
    assert syncd(daemon, "schedules", "rm", "erp-parts").returncode == 0
    gone = syncd(daemon, "schedules", "show", "erp-parts")
    assert gone.returncode == 1 and "no schedule" in gone.stderr


def test_version_and_usage_errors_name_the_command() -> None:
    version = syncd(None, "--version")
    assert version.returncode == 0 and version.stdout.startswith("syncd ")
    assert version.stdout.split()[1][0].isdigit()
    bogus = syncd(None, "tasks", "list", "--bogus")
    assert bogus.returncode == 2
    assert bogus.stderr.startswith("usage: syncd tasks list ")
    assert bogus.stderr.splitlines()[-1] == (
        "syncd tasks list: error: unrecognized arguments: --bogus"
    )
    no_priority = syncd(None, "tasks", "show", "X", "--priority", "3")
    assert no_priority.returncode == 2 and "usage: syncd tasks show " in no_priority.stderr


def test_url_without_a_scheme_and_a_bad_scheme(daemon: Daemon) -> None:
    bare = daemon.url.removeprefix("http://")
    listed = syncd(None, "tasks", "list", "--url", bare)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[-1].startswith("page 1 of ")
    wrong = syncd(None, "tasks", "list", "--url", "ftp://example.org")
    assert wrong.returncode == 1
    assert wrong.stderr == (
        "syncd: error: --url 'ftp://example.org': expected http://HOST:PORT or https://HOST:PORT\n"
    )


def test_show_prints_the_whole_message_and_times_with_their_offset(daemon: Daemon) -> None:
    made = json.loads(
        syncd(daemon, "tasks", "create", "noop", "--run-after", LATER, "--json").stdout
    )
    long_message = "a long message " * 12
    path = daemon.database_url.removeprefix("sqlite:///")
    with sqlite3.connect(path, timeout=10) as conn:
        conn.execute("UPDATE sync_tasks SET message = ? WHERE id = ?", (long_message, made["id"]))
    conn.close()
    shown = syncd(daemon, "tasks", "show", made["reference"], TZ="Asia/Tokyo")
    assert shown.returncode == 0, shown.stderr
    lines = {
        line.split(":", 1)[0]: line.split(":", 1)[1].strip()
        for line in shown.stdout.splitlines()
        if ":" in line
    }
    assert lines["message"] == long_message.strip()
    assert lines["run after"] == "2099-01-01 09:00:00+09:00"
    assert lines["waiting"] == "due at 2099-01-01 09:00:00+09:00"
    in_utc = syncd(daemon, "tasks", "show", made["reference"], "--utc", TZ="Asia/Tokyo")
    assert "run after:     2099-01-01 00:00:00+00:00" in in_utc.stdout
    listed = syncd(daemon, "tasks", "list", "--status", "pending", "--utc")
    row = next(r for r in listed.stdout.splitlines() if r.startswith(made["reference"]))
    assert "+00:00" in row and "due at 2099-01-01 00:00:00+00:00" in row
    syncd(daemon, "tasks", "cancel", made["id"])


def test_priority_of_snapshot_create_and_stock_import(daemon: Daemon, tmp_path: Path) -> None:
    snapshot = syncd(daemon, "snapshot", "create", "--priority", "9", "--json")
    assert snapshot.returncode == 0, snapshot.stderr
    assert json.loads(snapshot.stdout)["priority"] == 9
    sheet = tmp_path / "stock.xlsx"
    from openpyxl import Workbook

    book = Workbook()
    ws = book.active
    assert ws is not None
    ws.append(["partnumber", "vendor", "description", "qty", "price", "warehouse"])
    ws.append(["PN-1", "ACME", "a part", 3, 9.5, "main"])
    book.save(sheet)
    stock = syncd(daemon, "import", "stock", str(sheet), "--priority", "-3", "--json")
    assert stock.returncode == 0, stock.stderr
    assert json.loads(stock.stdout)["priority"] == -3
    refused = syncd(daemon, "import", "stock", str(sheet), "--priority", "300")
    assert refused.returncode == 1 and "HTTP 422 validation_error: priority" in refused.stderr
