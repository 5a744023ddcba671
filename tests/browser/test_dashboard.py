"""The dashboard in a real browser against a real daemon (no API tokens configured)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import expect

from bench.daemon import Daemon, running_daemon, wait_until
from schedule.records import COUNT_CAP
from tests.browser.conftest import screenshot
from tests.conftest import FAST

LATER = "2099-01-01T00:00:00Z"
SLOW = {"sleep_s": 60, "steps": 600}


def create(daemon: Daemon, **body: Any) -> dict[str, Any]:
    task: dict[str, Any] = daemon.call("POST", "/api/sync/tasks", {"task_type": "noop", **body})
    return task


def wait_status(daemon: Daemon, task_id: str, status: str) -> dict[str, Any]:
    """The task once the API shows it with `status` (read again until then, bounded)."""

    def reached() -> dict[str, Any] | None:
        task: dict[str, Any] = daemon.call("GET", f"/api/sync/tasks/{task_id}")
        return task if task["status"] == status else None

    return wait_until(reached, 10, f"task {task_id} to become {status}")


def endpoint_missing(daemon: Daemon, path: str) -> bool:
    """True when the daemon answers 404 for a route (a daemon built without that feature)."""
    return bool(daemon.request("GET", path)[0] == 404)


def row(page: Any, task: dict[str, Any]) -> Any:
    return page.locator(f'tr[data-id="{task["id"]}"]')


def test_tasks_list_filters_and_live_progress(daemon: Daemon, page: Any) -> None:
    running = create(daemon, parameters={"sleep_s": 6, "steps": 60})
    failed = create(daemon, parameters={"fail_permanently": True}, max_attempts=1)
    wait_status(daemon, failed["id"], "failed")
    wait_status(daemon, running["id"], "running")

    page.goto(daemon.url + "/#/tasks")
    expect(page.locator("#live-state")).to_have_text("live")
    bar = row(page, running).locator(".progress")
    expect(bar).to_be_visible()
    first = int(bar.get_attribute("aria-valuenow") or 0)
    # Pushed over the websocket without reloading the list: the bar moves on its own.
    expect(bar).not_to_have_attribute("aria-valuenow", str(first))
    expect(row(page, running).locator(".message")).to_contain_text("step ")
    expect(row(page, failed).locator(".badge")).to_have_text("failed")
    screenshot(page, "tasks")

    page.select_option("#f-status", "failed")
    expect(page).to_have_url(f"{daemon.url}/#/tasks?status=failed")
    expect(row(page, failed)).to_be_visible()
    expect(page.locator("tbody tr")).to_have_count(
        daemon.call("GET", "/api/sync/tasks?status=failed")["pagination"]["total"]
    )
    for status in page.locator("tbody tr .badge").all_text_contents():
        assert status == "failed"
    page.fill("#f-source", "no_such_source")
    page.click("button:text('Apply')")
    expect(page.locator(".empty")).to_contain_text("No task matches these filters")
    page.click("button:text('Clear')")
    expect(row(page, running)).to_be_visible()
    daemon.call("POST", f"/api/sync/tasks/{running['id']}/cancel")


def test_cancel_a_running_task_then_retry_it(daemon: Daemon, page: Any) -> None:
    task = create(daemon, parameters=SLOW)
    wait_status(daemon, task["id"], "running")
    page.goto(daemon.url + "/#/tasks")
    line = row(page, task)
    expect(line.locator(".badge")).to_have_text("running")

    line.locator("button[data-action=cancel]").click()
    expect(page.locator("#confirm")).to_be_visible()
    expect(page.locator("#confirm-title")).to_have_text(f"Cancel {task['reference']}?")
    page.click("#confirm-ok")
    expect(line.locator(".badge")).to_have_text("cancelled")  # the finished event, live
    assert daemon.call("GET", f"/api/sync/tasks/{task['id']}")["status"] == "cancelled"

    line.locator("button[data-action=retry]").click()
    page.click("#confirm-ok")
    expect(page.locator(".toast.success")).to_contain_text("Retry created: ")
    retries = [
        t
        for t in daemon.call("GET", "/api/sync/tasks?size=50")["tasks"]
        if t["retry_of"] == task["id"]
    ]
    assert len(retries) == 1
    expect(row(page, retries[0])).to_be_visible()
    screenshot(page, "tasks-after-retry")
    daemon.call("POST", f"/api/sync/tasks/{retries[0]['id']}/cancel")


def test_a_refused_action_shows_the_api_message(daemon: Daemon, page: Any) -> None:
    task = create(daemon, run_after=LATER)
    page.goto(daemon.url + "/#/tasks")
    button = row(page, task).locator("button[data-action=cancel]")
    expect(button).to_be_visible()

    def someone_else_was_faster(route: Any) -> None:
        # Cancelled by another client just before the dashboard's request arrives (cancelling
        # before the click raced the live feed, which redraws the row without its button).
        daemon.call("POST", f"/api/sync/tasks/{task['id']}/cancel")
        route.continue_()

    page.route(f"**/api/sync/tasks/{task['id']}/cancel", someone_else_was_faster)
    button.click()
    page.click("#confirm-ok")
    expect(page.locator(".toast.error")).to_have_text("task is already cancelled")


def test_batch_cancel(daemon: Daemon, page: Any) -> None:
    tasks = [create(daemon, run_after=LATER) for _ in range(3)]
    page.goto(daemon.url + "/#/tasks?status=pending")
    for task in tasks[:2]:
        row(page, task).locator("td.check input").check()
    expect(page.locator(".batch-bar")).to_contain_text("2 selected")
    page.click("button[data-action=batch-cancel]")
    page.click("#confirm-ok")
    expect(page.locator(".toast.success")).to_contain_text("2 task(s) cancelled")
    statuses = [daemon.call("GET", f"/api/sync/tasks/{t['id']}")["status"] for t in tasks]
    assert statuses == ["cancelled", "cancelled", "pending"]
    expect(row(page, tasks[0])).to_have_count(0)  # the list is filtered on pending
    daemon.call("POST", f"/api/sync/tasks/{tasks[2]['id']}/cancel")


def test_task_page_with_attempts_and_paged_record_errors(daemon: Daemon, page: Any) -> None:
    task = create(daemon, parameters={"fail_times": 1}, max_attempts=2)
    done = wait_status(daemon, task["id"], "completed")
    add_record_errors(daemon, done, 25)

    page.goto(f"{daemon.url}/#/task/{task['id']}")
    expect(page.locator("main h1")).to_contain_text(task["reference"])
    expect(page.locator("main h1 .badge")).to_have_text("completed")
    expect(page.locator("pre.json").first).to_contain_text('"fail_times": 1')
    outcomes = page.locator("td .badge").all_text_contents()
    assert outcomes[:2] == ["retry", "completed"]
    expect(page.locator(".pager")).to_contain_text("of 2")
    expect(page.locator(".pager")).to_contain_text("25 total")
    expect(page.locator(".pager input[name=page]")).to_have_value("1")
    expect(page.get_by_role("cell", name="bad row 1", exact=True)).to_be_visible()
    expect(page.get_by_role("cell", name="bad row 21", exact=True)).to_have_count(0)
    screenshot(page, "task")
    with page.expect_request(lambda r: urlsplit(r.url).path.endswith("/errors")) as sent:
        page.click(".pager button:text('Next ›')")
    assert "cursor" in parse_qs(urlsplit(sent.value.url).query)  # the same cost at any depth
    expect(page.locator(".pager input[name=page]")).to_have_value("2")
    expect(page.get_by_role("cell", name="bad row 25", exact=True)).to_be_visible()
    page.click(".pager button:text('‹ Previous')")
    expect(page.locator(".pager input[name=page]")).to_have_value("1")
    expect(page.get_by_role("cell", name="bad row 1", exact=True)).to_be_visible()


def add_record_errors(daemon: Daemon, task: dict[str, Any], count: int) -> None:
    """Per-record errors written straight into the daemon's database (noop records none)."""
    path = daemon.database_url.removeprefix("sqlite:///")
    now = datetime.now(UTC).replace(tzinfo=None).isoformat(sep=" ")
    with sqlite3.connect(path, timeout=10) as conn:
        conn.executemany(
            "INSERT INTO sync_task_errors (task_id, attempt, position, record, reason, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            [
                (task["id"], 2, n, f'{{"sku": "X{n}"}}', f"bad row {n}", now)
                for n in range(1, count + 1)
            ],
        )
        conn.execute("UPDATE sync_tasks SET error_count = ? WHERE id = ?", (count, task["id"]))
    conn.close()


def test_statistics_page_and_throughput_chart(daemon: Daemon, page: Any) -> None:
    done = create(daemon)
    wait_status(daemon, done["id"], "completed")
    page.goto(daemon.url + "/#/stats?window=24h")
    expect(page.locator(".stat-value").first).not_to_have_text("")
    expect(page.locator("svg.chart g.bar")).to_have_count(25)  # this hour and the 24 before
    expect(page.locator("svg.chart rect.seg.completed")).not_to_have_count(0)
    expect(page.locator(".legend")).to_contain_text("Completed")
    screenshot(page, "statistics")
    page.select_option("#stats-window", "1h")
    expect(page).to_have_url(f"{daemon.url}/#/stats?window=1h")
    expect(page.locator(".hbar").first).to_be_visible()
    expect(page.locator("svg.chart g.bar")).to_have_count(2)  # the window spans two hours
    page.select_option("#stats-window", "7d")  # beyond 48 hours: a bar per day
    expect(page.locator("#throughput h2")).to_contain_text("Finished per day, last 7 days")
    # 169 hours (this one and 7 days of them before) touch 8 calendar days.
    expect(page.locator("svg.chart g.bar")).to_have_count(8)


def test_live_updates_fall_back_to_polling_and_reconnect(daemon: Daemon, page: Any) -> None:
    page.goto(daemon.url + "/#/tasks")
    state = page.locator("#live-state")
    expect(state).to_have_text("live")
    page.evaluate("window.syncd.live.ws.close()")
    expect(state).to_have_text("polling")
    task = create(daemon, run_after=LATER)  # shown by polling (500 ms) while the socket is down
    expect(row(page, task)).to_be_visible()
    expect(state).to_have_text("live")  # reconnected after about a second
    daemon.call("POST", f"/api/sync/tasks/{task['id']}/cancel")


@pytest.mark.parametrize(
    ("section", "path", "title"),
    [
        ("schedules", "/api/schedules", "Could not load the schedules"),
        ("books", "/api/admin/pricing/partnumber-books", "Could not load the partnumber books"),
        ("sources", "/api/sync/data-sources", "Could not load the data sources"),
    ],
)
def test_pages_show_the_api_error_when_an_endpoint_is_missing(
    daemon: Daemon, page: Any, section: str, path: str, title: str
) -> None:
    page.goto(f"{daemon.url}/#/{section}")
    if not endpoint_missing(daemon, path):
        expect(page.locator(".alert.error")).to_have_count(0)
        screenshot(page, section)
        return
    alert = page.locator(".alert.error")
    expect(alert).to_contain_text(title)
    expect(alert).to_contain_text(f"GET {path}: not found on this daemon")
    expect(alert).to_contain_text("HTTP 404")
    screenshot(page, section)


def test_upload_page(daemon: Daemon, page: Any, tmp_path: Any) -> None:
    page.goto(daemon.url + "/#/upload")
    expect(page.locator("label.drop")).to_contain_text("Choose a stock file")
    screenshot(page, "upload")
    sheet = tmp_path / "stock.xlsx"
    from openpyxl import Workbook

    book = Workbook()
    ws = book.active
    assert ws is not None
    ws.append(["partnumber", "vendor", "description", "qty", "price", "warehouse"])
    ws.append(["PN-1", "ACME", "a part", 3, 9.5, "main"])
    book.save(sheet)
    page.set_input_files("#stock-file", str(sheet))
    page.click("button:text('Upload and import')")
    probe_missing = endpoint_missing_post(daemon, "/api/imports/stock")
    if probe_missing:
        alert = page.locator(".alert.error")
        expect(alert).to_contain_text("The upload was refused")
        expect(alert).to_contain_text("HTTP 404")
        return
    expect(page.locator("#import-status .badge")).to_have_text("completed", timeout=20_000)
    screenshot(page, "upload-done")


def endpoint_missing_post(daemon: Daemon, path: str) -> bool:
    return bool(daemon.request("POST", path, {})[0] == 404)


def test_create_a_snapshot_from_the_page_and_watch_it_complete(daemon: Daemon, page: Any) -> None:
    if endpoint_missing(daemon, "/api/admin/pricing/partnumber-books"):
        pytest.skip("this daemon has no partnumber-book endpoints")
    seed_partnumbers(daemon)
    page.goto(daemon.url + "/#/books")
    before = page.locator("tbody tr").count()
    page.click("#create-snapshot")
    card = page.locator("#snapshot-progress .follow")
    expect(card).to_be_visible()
    expect(card.locator(".badge")).to_have_text("completed", timeout=20_000)
    expect(page.locator("tbody tr")).to_have_count(before + 1)
    active = page.locator("tbody tr", has=page.locator(".badge", has_text="active"))
    expect(active).to_have_count(1)
    screenshot(page, "books")
    active.locator("a:text('Browse items')").click()
    expect(page.locator("tbody tr").first).to_contain_text("PN-BROWSER-1")
    screenshot(page, "book-items")


def seed_partnumbers(daemon: Daemon) -> None:
    """Source rows for a snapshot (the tables of DESIGN.md, created by the migrations)."""
    path = daemon.database_url.removeprefix("sqlite:///")
    with sqlite3.connect(path, timeout=10) as conn:
        conn.execute(
            "INSERT OR IGNORE INTO lot (lot_name, lot_category, description) VALUES (?, ?, ?)",
            ("LOT-A", "cpu", "a lot"),
        )
        conn.execute(
            "INSERT OR IGNORE INTO lot_partnumbers (vendor, partnumber, lot_name, description,"
            " is_primary_pn) VALUES (?, ?, ?, ?, ?)",
            ("ACME", "PN-BROWSER-1", "LOT-A", "from the browser test", 1),
        )
    conn.close()


def test_schedules_run_now_pause_resume(daemon: Daemon, page: Any) -> None:
    if endpoint_missing(daemon, "/api/schedules"):
        pytest.skip("this daemon has no schedule endpoints")
    page.goto(daemon.url + "/#/schedules")
    job = "partnumber_book_create"
    built_in = page.locator(f'tr[data-id="{job}"]')
    expect(built_in).to_contain_text("At 03:00 AM")
    expect(built_in.locator("button[data-action=delete]")).to_have_count(0)  # built in
    built_in.locator("button[data-action=pause]").click()
    page.fill("dialog.ask textarea[name=note]", "supplier feed late")
    page.click("dialog.ask button[data-action=ok]")
    expect(built_in).to_contain_text("supplier feed late")
    built_in.locator("button[data-action=resume]").click()
    expect(built_in.locator("button[data-action=pause]")).to_be_visible()
    page.locator('tr[data-id="task_retention"] button[data-action=run]').click()
    page.click("#confirm-ok")
    expect(page.locator(".toast", has_text="task_retention: task ")).to_contain_text("enqueued")
    kinds = [t["task_type"] for t in daemon.call("GET", "/api/sync/tasks?size=100")["tasks"]]
    assert "task_retention" in kinds


def test_schedules_page_turns_pages_of_a_hundred(daemon: Daemon, page: Any) -> None:
    ids = [f"zz-page-{i:03d}" for i in range(101)]
    for schedule_id in ids:
        body = {"id": schedule_id, "task_type": "noop", "trigger": {"cron": "0 4 * * *"}}
        daemon.call("POST", "/api/schedules", body)
    try:
        total = daemon.call("GET", "/api/schedules?size=1")["pagination"]["total"]
        page.goto(daemon.url + "/#/schedules")
        expect(page.locator("tbody tr")).to_have_count(100)
        expect(page.locator('tr[data-id="zz-page-100"]')).to_have_count(0)
        page.click(".pager button[data-page=next]")
        expect(page.locator("tbody tr")).to_have_count(total - 100)
        expect(page.locator('tr[data-id="zz-page-100"]')).to_be_visible()
        assert "page=2" in page.url
    finally:
        for schedule_id in ids:
            daemon.call("DELETE", f"/api/schedules/{schedule_id}")


def test_schedule_form_validates_as_you_type_then_edit_backfill_delete(
    daemon: Daemon, page: Any
) -> None:
    page.goto(daemon.url + "/#/schedules")
    page.click("button[data-action=new]")
    page.fill(".schedule-form input[name=id]", "erp-parts")
    page.fill(".schedule-form input[name=trigger]", "61 * * * *")
    preview = page.locator("#schedule-preview")
    expect(preview).to_contain_text("trigger.cron")  # the cron parser's words, as you type
    page.fill(".schedule-form input[name=trigger]", "*/15 * * * *")
    page.fill(".schedule-form input[name=timezone]", "Europe/Moscow")
    expect(preview).to_contain_text("Every 15 minutes")
    expect(preview.locator("li")).to_have_count(5)
    screenshot(page, "schedule-form")
    page.select_option(".schedule-form select[name=overlap]", "allow")
    page.click(".schedule-form button[data-action=save]")
    made = page.locator('tr[data-id="erp-parts"]')
    expect(made).to_contain_text("Every 15 minutes")
    made.locator("button[data-action=edit]").click()
    page.fill(".schedule-form input[name=trigger]", "0 * * * *")
    expect(preview).to_contain_text("Every hour")
    page.click(".schedule-form button[data-action=save]")
    expect(made).to_contain_text("Every hour")
    made.locator("button[data-action=backfill]").click()
    page.fill("dialog.ask input[name=start]", "2026-01-05T09:00")
    page.fill("dialog.ask input[name=end]", "2026-01-05T11:00")
    page.click("dialog.ask button[data-action=ok]")
    expect(page.locator(".toast", has_text="erp-parts: 3 task(s) enqueued")).to_be_visible()
    screenshot(page, "schedules")
    made.locator("a", has_text="tasks").click()
    expect(page.locator("tbody tr")).to_have_count(3)
    page.goto(daemon.url + "/#/schedules")
    page.locator('tr[data-id="erp-parts"] button[data-action=delete]').click()
    page.click("#confirm-ok")
    expect(page.locator('tr[data-id="erp-parts"]')).to_have_count(0)


def test_schedules_page_at_phone_width(daemon: Daemon, browser: Any) -> None:
    context = browser.new_context(viewport={"width": 360, "height": 740})
    tab = context.new_page()
    try:
        tab.goto(daemon.url + "/#/schedules")
        expect(tab.locator('tr[data-id="task_retention"]')).to_be_visible()
        width = tab.evaluate("document.documentElement.scrollWidth")
        assert width <= 360, f"the page is {width} px wide at a 360 px viewport"
        screenshot(tab, "schedules-360")
    finally:
        context.close()


@pytest.fixture(scope="module")
def deep(sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """A daemon of its own whose list is deeper than the API counts: COUNT_CAP + 50 pending
    tasks (created 1,000 a batch: the tasks of a batch share `created_at`)."""
    with running_daemon(sqlite_template, tmp_path_factory.mktemp("deep-daemon"), FAST) as d:
        batch = [{"task_type": "noop", "run_after": LATER}] * 1000
        for start in range(0, COUNT_CAP + 50, 1000):
            d.call("POST", "/api/sync/tasks/batch", {"tasks": batch[: COUNT_CAP + 50 - start]})
        yield d


def test_the_pager_walks_past_the_counted_pages_and_back(deep: Daemon, page: Any) -> None:
    """Next twice by cursor then Previous twice, at the top and past the pages the API counts:
    the right tasks under the right page number each time; the jump stays within the counted
    pages; no request carries an offset the API refuses, and none is refused."""
    order: list[str] = []
    cursor = None
    while True:  # the list as the API orders it, walked by its cursor
        answer = deep.call(
            "GET", "/api/sync/tasks?size=500" + (f"&cursor={cursor}" if cursor else "")
        )
        order += [t["id"] for t in answer["tasks"]]
        cursor = answer["pagination"]["next_cursor"]
        if cursor is None:
            break
    assert len(order) == COUNT_CAP + 50
    asked: list[dict[str, list[str]]] = []
    answered: list[int] = []
    page.on(
        "request",
        lambda r: (
            asked.append(parse_qs(urlsplit(r.url).query))
            if urlsplit(r.url).path == "/api/sync/tasks" and r.method == "GET"
            else None
        ),
    )
    page.on(
        "response",
        lambda r: answered.append(r.status) if urlsplit(r.url).path == "/api/sync/tasks" else None,
    )
    pager = page.locator(".pager")

    def shown(number: int) -> None:
        expect(pager.locator("input[name=page]")).to_have_value(str(number))
        first = order[(number - 1) * 20]
        expect(page.locator("tbody tr").first).to_have_attribute("data-id", first)
        ids = page.locator("tbody tr").evaluate_all("rows => rows.map((r) => r.dataset.id)")
        assert ids == order[(number - 1) * 20 : number * 20]

    def move(action: str) -> dict[str, list[str]]:
        """Click a pager button; the query of the list request it made."""
        with page.expect_request(lambda r: urlsplit(r.url).path == "/api/sync/tasks") as sent:
            pager.locator(f"button[data-page={action}]").click()
        return parse_qs(urlsplit(sent.value.url).query)

    page.goto(deep.url + "/#/tasks")
    shown(1)
    expect(pager).to_contain_text(f"more than {COUNT_CAP:,}")
    expect(pager.locator("button[data-page=last]")).to_be_disabled()
    expect(pager.locator("button[data-page=previous]")).to_be_disabled()
    walk = [(2, "next", "cursor"), (3, "next", "cursor"), (2, "previous", "before")]
    for number, action, place in walk:
        assert place in move(action)
        shown(number)
    assert move("previous")["page"] == ["1"]  # back to page 1: the top of the list, by number
    shown(1)

    counted = COUNT_CAP // 20
    pager.locator("input[name=page]").fill("999999")  # as deep as numbers go: the last counted
    pager.locator("button:text('Go')").click()
    expect(page).to_have_url(f"{deep.url}/#/tasks?page={counted}")
    shown(counted)
    walk = [
        (counted + 1, "next", "cursor"),
        (counted + 2, "next", "cursor"),
        (counted + 1, "previous", "before"),
        (counted, "previous", "before"),
    ]
    for number, action, place in walk:
        sent = move(action)
        assert place in sent and "page" not in sent
        shown(number)
        expect(pager.locator("input[name=page]")).to_have_attribute("max", str(counted))
    assert move("first")["page"] == ["1"]
    shown(1)
    expect(page).to_have_url(f"{deep.url}/#/tasks")

    numbered = [int(q["page"][0]) for q in asked if "page" in q]
    assert numbered and all((n - 1) * 20 < COUNT_CAP for n in numbered)
    assert answered and set(answered) == {200}

    page.goto(f"{deep.url}/#/tasks?page={counted + 1}")  # an old link deeper than numbers go
    expect(page.locator(".empty")).to_contain_text(f"Page {counted + 1:,} is too deep")
    page.locator("a", has_text="Go to page 1").click()
    shown(1)
