"""Signing in to the dashboard with API tokens; each role is offered only the actions the API
takes from it: a read-only user sees no mutating buttons, an operator no Retry, Run now or
Backfill of a maintenance task type (retention), which the API refuses it with 403."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from bench.daemon import Daemon, running_daemon, wait_until
from tests.browser.conftest import accessibility_problems, screenshot
from tests.conftest import FAST

ADMIN, READER, WORKER = "admin-token-123", "read-token-456", "worker-token-789"
OPERATOR = "operator-token-246"
LATER = "2099-01-01T00:00:00Z"
#: The built-in schedule whose task type is a maintenance one (it deletes finished tasks).
RETENTION = "task_retention"


@pytest.fixture(scope="module")
def daemon(sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    tokens = f"{ADMIN}:admin,{OPERATOR}:operator,{READER}:read,{WORKER}:worker"
    with running_daemon(
        sqlite_template, tmp_path_factory.mktemp("auth-daemon"), FAST, SYNCD_API_TOKENS=tokens
    ) as d:
        yield d


@pytest.fixture(scope="module")
def pending(daemon: Daemon) -> dict[str, Any]:
    """A task that waits (so it can be cancelled) and a failed one (so it can be retried)."""
    body = {"task_type": "noop", "run_after": LATER}
    task: dict[str, Any] = daemon.call("POST", "/api/sync/tasks", body, token=ADMIN)
    return task


def failed_task(daemon: Daemon, body: dict[str, Any]) -> dict[str, Any]:
    """A task created (by the admin) from `body` and run to `failed` by the daemon."""
    task: dict[str, Any] = daemon.call("POST", "/api/sync/tasks", body, token=ADMIN)

    def failed() -> dict[str, Any] | None:
        now: dict[str, Any] = daemon.call("GET", f"/api/sync/tasks/{task['id']}", token=ADMIN)
        assert now["status"] in ("pending", "running", "failed"), now
        return now if now["status"] == "failed" else None

    return wait_until(failed, 10, f"{body['task_type']} task {task['id']} to fail")


@pytest.fixture(scope="module")
def failed_retention(daemon: Daemon) -> dict[str, Any]:
    """A failed task of a maintenance type: `task_retention` given a timeout it cannot meet
    (a millionth of a second) and one attempt."""
    body = {"task_type": RETENTION, "timeout_s": 0.000001, "max_attempts": 1}
    task = failed_task(daemon, body)
    assert task["error"].startswith("timed out"), task
    return task


@pytest.fixture(scope="module")
def failed_noop(daemon: Daemon) -> dict[str, Any]:
    """A failed task of an ordinary type, which an operator may retry."""
    body = {"task_type": "noop", "parameters": {"fail_permanently": True}, "max_attempts": 1}
    return failed_task(daemon, body)


def retries_of(daemon: Daemon, task: dict[str, Any]) -> list[dict[str, Any]]:
    """The tasks made by retrying `task`."""
    tasks = daemon.call("GET", "/api/sync/tasks?size=100", token=ADMIN)["tasks"]
    return [t for t in tasks if t["retry_of"] == task["id"]]


def sign_in(page: Any, daemon: Daemon, token: str) -> None:
    page.goto(daemon.url + "/#/tasks")
    expect(page.locator("#login")).to_be_visible()
    page.fill("#login-token", token)
    page.click("#login-form button[type=submit]")


def test_wrong_token_stays_on_the_login_form(daemon: Daemon, page: Any) -> None:
    sign_in(page, daemon, "not-a-token")
    expect(page.locator("#login-error")).to_have_text("Sign-in failed: unknown bearer token")
    expect(page.locator("#nav")).to_be_hidden()
    assert page.evaluate("sessionStorage.getItem('syncd.token')") is None
    screenshot(page, "login")
    assert accessibility_problems(page) == []
    page.emulate_media(color_scheme="dark")
    assert accessibility_problems(page) == []


def test_admin_signs_in_sees_buttons_and_signs_out(
    daemon: Daemon, page: Any, pending: dict[str, Any]
) -> None:
    sign_in(page, daemon, ADMIN)
    expect(page.locator("#whoami")).to_have_text("admin")
    expect(page.locator("#live-state")).to_have_text("live")  # ?token= on /api/ws
    line = page.locator(f'tr[data-id="{pending["id"]}"]')
    expect(line.locator("button[data-action=cancel]")).to_be_visible()
    expect(line.locator("td.check input")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('syncd.token')") == ADMIN
    page.reload()  # the token survives a reload of the tab (session storage)
    expect(page.locator("#whoami")).to_have_text("admin")

    page.click("#logout")
    expect(page.locator("#login")).to_be_visible()
    expect(page.locator("#login-error")).to_have_text("You are signed out.")
    assert page.evaluate("sessionStorage.getItem('syncd.token')") is None


def test_read_only_user_sees_no_mutating_buttons(
    daemon: Daemon,
    page: Any,
    pending: dict[str, Any],
    failed_noop: dict[str, Any],
    failed_retention: dict[str, Any],
) -> None:
    sign_in(page, daemon, READER)
    expect(page.locator("#whoami")).to_have_text("read")
    expect(page.locator(f'tr[data-id="{pending["id"]}"]')).to_be_visible()
    for failed in (failed_noop, failed_retention):
        expect(page.locator(f'tr[data-id="{failed["id"]}"] .badge')).to_have_text("failed")
    expect(page.locator("button[data-action]")).to_have_count(0)
    expect(page.locator("td.check")).to_have_count(0)
    screenshot(page, "tasks-read-only")
    for failed in (failed_noop, failed_retention):
        page.goto(f"{daemon.url}/#/task/{failed['id']}")
        expect(page.locator("main h1")).to_contain_text(failed["reference"])
        expect(page.locator("button[data-action]")).to_have_count(0)
    page.goto(daemon.url + "/#/schedules")
    expect(page.locator(f'tr[data-id="{RETENTION}"]')).to_be_visible()
    expect(page.locator("button[data-action]")).to_have_count(0)
    page.goto(daemon.url + "/#/books")
    expect(page.locator("#create-snapshot")).to_have_count(0)
    page.goto(daemon.url + "/#/upload")
    expect(page.locator(".alert.info")).to_contain_text("Your role can only read")


def test_worker_token_cannot_use_the_dashboard(daemon: Daemon, page: Any) -> None:
    sign_in(page, daemon, WORKER)
    expect(page.locator("#login-error")).to_contain_text("worker")
    expect(page.locator("#nav")).to_be_hidden()


def test_an_expired_token_sends_the_user_back_to_the_login_form(daemon: Daemon, page: Any) -> None:
    assert daemon.request("GET", "/api/sync/tasks")[0] == 401
    sign_in(page, daemon, ADMIN)
    expect(page.locator("#whoami")).to_have_text("admin")
    expect(page.locator("main .loading")).to_have_count(0)  # the first list load is done
    page.evaluate("sessionStorage.setItem('syncd.token', 'revoked-token')")
    page.click("button:text('Refresh')")
    expect(page.locator("#login")).to_be_visible()
    expect(page.locator("#login-error")).to_have_text(
        "Your session ended: unknown bearer token. Sign in again."
    )


def test_a_401_during_the_session_shows_the_login_form_with_the_message(
    daemon: Daemon, page: Any
) -> None:
    """The page's side of an expired token, whatever the server: any 401 answer ends the
    session. (The real server's 401 is covered above.)"""
    sign_in(page, daemon, ADMIN)
    expect(page.locator("#whoami")).to_have_text("admin")
    expect(page.locator("main .loading")).to_have_count(0)  # the first list load is done
    body = '{"error": {"code": "unauthorized", "message": "token expired", "details": null}}'
    page.route(
        "**/api/sync/tasks?*",
        lambda route: route.fulfill(status=401, body=body, content_type="application/json"),
    )
    page.click("button:text('Refresh')")
    expect(page.locator("#login-error")).to_have_text(
        "Your session ended: token expired. Sign in again."
    )
    assert page.evaluate("sessionStorage.getItem('syncd.token')") is None
    expect(page.locator("#live-state")).to_be_hidden()


def test_operator_is_offered_no_retry_or_run_of_a_maintenance_type(
    daemon: Daemon, page: Any, failed_noop: dict[str, Any], failed_retention: dict[str, Any]
) -> None:
    """What the API refuses an operator (403) is not on the page: no Retry of a failed
    retention task (list row and task page), no Run now or Backfill of the retention schedule;
    a batch retry leaves the retention task out and says so. The rest is offered as before."""
    refused = daemon.request(
        "POST", f"/api/sync/tasks/{failed_retention['id']}/retry", token=OPERATOR
    )
    assert refused[0] == 403, refused
    assert daemon.request("POST", f"/api/schedules/{RETENTION}/run", token=OPERATOR)[0] == 403

    type_reads: list[str] = []  # which types are maintenance: read once for the whole visit
    page.on("request", lambda r: type_reads.append(r.url) if "/task-types" in r.url else None)
    sign_in(page, daemon, OPERATOR)
    expect(page.locator("#whoami")).to_have_text("operator")
    retention_row = page.locator(f'tr[data-id="{failed_retention["id"]}"]')
    noop_row = page.locator(f'tr[data-id="{failed_noop["id"]}"]')
    expect(retention_row.locator(".badge")).to_have_text("failed")
    expect(noop_row.locator("button[data-action=retry]")).to_be_visible()
    expect(retention_row.locator("button[data-action=retry]")).to_have_count(0)
    # Cancelling stays an operator's right, whatever the type: the rows can still be selected.
    retention_row.locator("td.check input").check()
    noop_row.locator("td.check input").check()
    bar = page.locator(".batch-bar")
    expect(bar).to_contain_text("2 selected")
    expect(bar.locator("button[data-action=batch-retry]")).to_have_text("Retry 1")
    expect(bar.locator(".batch-note")).to_have_text(
        f"1 not retried: {RETENTION} is a maintenance task type (it deletes data): "
        "only an admin may enqueue it by hand"
    )
    screenshot(page, "tasks-operator-batch")
    assert accessibility_problems(page) == []
    bar.locator("button[data-action=batch-retry]").click()
    expect(page.locator("#confirm-title")).to_have_text("Retry 1 task(s)?")
    page.click("#confirm-ok")
    expect(page.locator(".toast.success")).to_have_text("1 task(s) retried")
    assert len(retries_of(daemon, failed_noop)) == 1
    assert retries_of(daemon, failed_retention) == []

    page.goto(f"{daemon.url}/#/task/{failed_retention['id']}")
    expect(page.locator("main h1")).to_contain_text(failed_retention["reference"])
    expect(page.locator(".action-note")).to_contain_text(
        f"No Retry: {RETENTION} is a maintenance task type"
    )
    expect(page.locator("button[data-action=retry]")).to_have_count(0)
    screenshot(page, "task-operator-maintenance")
    assert accessibility_problems(page) == []
    page.goto(f"{daemon.url}/#/task/{failed_noop['id']}")
    expect(page.locator("main h1")).to_contain_text(failed_noop["reference"])
    expect(page.locator("button[data-action=retry]")).to_be_visible()

    page.goto(daemon.url + "/#/schedules")
    retention = page.locator(f'tr[data-id="{RETENTION}"]')
    expect(retention.locator("button[data-action=pause]")).to_be_visible()
    expect(retention.locator("button[data-action=run]")).to_have_count(0)
    expect(retention.locator("button[data-action=backfill]")).to_have_count(0)
    snapshot = page.locator('tr[data-id="partnumber_book_create"]')
    expect(snapshot.locator("button[data-action=run]")).to_be_visible()
    expect(snapshot.locator("button[data-action=backfill]")).to_be_visible()
    screenshot(page, "schedules-operator")
    assert len(type_reads) == 1, type_reads


def test_admin_is_offered_retry_and_run_of_a_maintenance_type(
    daemon: Daemon, page: Any, failed_retention: dict[str, Any]
) -> None:
    sign_in(page, daemon, ADMIN)
    expect(page.locator("#whoami")).to_have_text("admin")
    line = page.locator(f'tr[data-id="{failed_retention["id"]}"]')
    expect(line.locator(".badge")).to_have_text("failed")
    line.locator("button[data-action=retry]").click()
    page.click("#confirm-ok")
    expect(page.locator(".toast.success")).to_contain_text("Retry created: ")
    assert len(retries_of(daemon, failed_retention)) == 1

    page.goto(f"{daemon.url}/#/task/{failed_retention['id']}")
    expect(page.locator("main h1")).to_contain_text(failed_retention["reference"])
    expect(page.locator("button[data-action=retry]")).to_be_visible()
    expect(page.locator(".action-note")).to_have_count(0)

    page.goto(daemon.url + "/#/schedules")
    retention = page.locator(f'tr[data-id="{RETENTION}"]')
    expect(retention.locator("button[data-action=backfill]")).to_be_visible()
    before = scheduled(daemon, RETENTION)
    retention.locator("button[data-action=run]").click()
    page.click("#confirm-ok")
    expect(page.locator(".toast", has_text=f"{RETENTION}: task ")).to_contain_text("enqueued")
    after = scheduled(daemon, RETENTION)
    assert len(after) == len(before) + 1
    assert {t["task_type"] for t in after} == {RETENTION}


def scheduled(daemon: Daemon, schedule_id: str) -> list[dict[str, Any]]:
    """The tasks a schedule enqueued (by its fires or by hand)."""
    path = f"/api/sync/tasks?size=100&schedule_id={schedule_id}"
    tasks: list[dict[str, Any]] = daemon.call("GET", path, token=ADMIN)["tasks"]
    return tasks
