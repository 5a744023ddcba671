"""Signing in to the dashboard with API tokens; a read-only user sees no mutating buttons."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from bench.daemon import Daemon, running_daemon
from tests.browser.conftest import accessibility_problems, screenshot
from tests.conftest import FAST

ADMIN, READER, WORKER = "admin-token-123", "read-token-456", "worker-token-789"
LATER = "2099-01-01T00:00:00Z"


@pytest.fixture(scope="module")
def daemon(sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    tokens = f"{ADMIN}:admin,{READER}:read,{WORKER}:worker"
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
    daemon: Daemon, page: Any, pending: dict[str, Any]
) -> None:
    failed = daemon.call(
        "POST",
        "/api/sync/tasks",
        {"task_type": "noop", "parameters": {"fail_permanently": True}, "max_attempts": 1},
        token=ADMIN,
    )
    sign_in(page, daemon, READER)
    expect(page.locator("#whoami")).to_have_text("read")
    expect(page.locator(f'tr[data-id="{pending["id"]}"]')).to_be_visible()
    expect(page.locator(f'tr[data-id="{failed["id"]}"] .badge')).to_have_text("failed")
    expect(page.locator("button[data-action]")).to_have_count(0)
    expect(page.locator("td.check")).to_have_count(0)
    screenshot(page, "tasks-read-only")
    page.goto(f"{daemon.url}/#/task/{failed['id']}")
    expect(page.locator("main h1")).to_contain_text(failed["reference"])
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
