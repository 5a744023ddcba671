"""Browser tests: Playwright (Python) driving Debian's Chromium against a real daemon.

Never downloads a browser: Chromium comes from the distribution (scripts/install-test-deps.sh)
and is launched by its path. Screenshots of every page go to build/screenshots/.
"""

from __future__ import annotations

from collections.abc import Iterator
from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest

from bench.daemon import Daemon, running_daemon
from tests.conftest import FAST

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "build" / "screenshots"
PHONE = {"width": 390, "height": 844}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test in this folder carries the `browser` marker."""
    for item in items:
        if Path(str(item.fspath)).parent == Path(__file__).parent:
            item.add_marker(pytest.mark.browser)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium per module. Not per session: Playwright's sync API keeps its event
    loop set as the running loop while it is open, which would break the async tests that run
    after the browser modules."""
    if not CHROMIUM.exists():
        pytest.skip("Chromium is not installed: run scripts/install-test-deps.sh")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def daemon(sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """A daemon without API tokens (everyone on loopback is an admin)."""
    with running_daemon(
        sqlite_template, tmp_path_factory.mktemp("browser-daemon"), FAST, SYNCD_CONCURRENCY="3"
    ) as d:
        yield d


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh tab (own session storage); a JavaScript error in the page fails the test."""
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    tab = context.new_page()
    tab.set_default_timeout(10_000)
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    yield tab
    context.close()
    assert not errors, f"JavaScript errors in the page: {errors}"


@pytest.fixture
def phone(browser: Any) -> Iterator[Any]:
    """A fresh tab the size of a phone held upright (390 x 844 CSS pixels, touch)."""
    context = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
    tab = context.new_page()
    tab.set_default_timeout(10_000)
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    yield tab
    context.close()
    assert not errors, f"JavaScript errors in the page: {errors}"


#: axe-core, from the wheel of axe-playwright-python (a test extra): no network at test time.
AXE_SCRIPT = files("axe_playwright_python").joinpath("axe.min.js").read_text()
AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]


def accessibility_problems(page: Any) -> list[str]:
    """What axe-core finds against WCAG 2.1 A and AA in the page as it is drawn now: every
    violation, and every check it could not decide, except for text drawn inside an SVG chart
    (axe cannot find the background behind SVG text; the axis is drawn in the muted colour it
    judges everywhere else) and text too short to judge. Colour contrast is one of the rules
    (AA: 4.5:1)."""
    if not page.evaluate("() => typeof window.axe === 'object'"):
        page.add_script_tag(content=AXE_SCRIPT)
    found = page.evaluate(
        """async (tags) => {
          const result = await axe.run(document, {runOnly: {type: "tag", values: tags}});
          const say = (kind) => (rule) => rule.nodes.map((node) => {
            const check = node.any[0] || node.all[0] || node.none[0] || {};
            return `${kind} ${rule.id}: ${node.target.join(" ")}: ${check.message || ""}`;
          });
          const inSvg = (node) => {
            const element = document.querySelector(node.target.join(" "));
            return !!element && !!element.closest("svg");
          };
          const undecided = result.incomplete.map(
            (rule) => ({...rule, nodes: rule.nodes.filter((node) => !inSvg(node))}));
          return [...result.violations.flatMap(say("violation")),
                  ...undecided.flatMap(say("undecided"))];
        }""",
        AXE_TAGS,
    )
    return [p for p in found if "content is too short" not in p]


def screenshot(page: Any, name: str) -> Path:
    """Save a full-page screenshot under build/screenshots/ for people to look at."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
