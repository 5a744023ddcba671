"""A terminal session with the CLI, in tmux against a real daemon: `--follow` redraws its line
through a retry (the wait says "attempt 2 of 3 at ...") to the end, and a cancel typed in a
second window ends another follow with exit code 3."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bench.daemon import Daemon, running_daemon

pytestmark = pytest.mark.acceptance
ROOT = Path(__file__).resolve().parents[2]
SCREEN_WAIT_S = 20.0
EXITED = re.compile(r"^EXIT=(\d+)$", re.MULTILINE)


@pytest.fixture(scope="module")
def daemon(sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    # A retry waits 2 s: long enough to be seen on the screen, short enough for a test.
    with running_daemon(
        sqlite_template,
        tmp_path_factory.mktemp("tmux-daemon"),
        SYNCD_RETRY_BACKOFF_S="2",
        SYNCD_RETRY_BACKOFF_MAX_S="2",
    ) as d:
        yield d


class Tmux:
    """A tmux server of its own (its own socket), 160 x 24, driven like a person would."""

    def __init__(self, env: dict[str, str]) -> None:
        self.socket = f"syncd-test-{uuid.uuid4().hex[:8]}"
        self.env = env

    def run(self, *args: str) -> str:
        done = subprocess.run(
            ["tmux", "-L", self.socket, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        return done.stdout

    def start(self, window: str) -> None:
        self.run("new-session", "-d", "-s", "cli", "-n", window, "-x", "160", "-y", "24", "bash")

    def window(self, name: str) -> None:
        self.run("new-window", "-t", "cli", "-n", name, "bash")

    def type(self, window: str, line: str) -> None:
        self.run("send-keys", "-t", f"cli:{window}", "-l", line)
        self.run("send-keys", "-t", f"cli:{window}", "Enter")

    def screen(self, window: str) -> str:
        return self.run("capture-pane", "-p", "-t", f"cli:{window}")

    def wait_for(self, window: str, seen: Callable[[str], bool], what: str) -> str:
        """Read the screen until `seen(screen)` (bounded): the CLI redraws it on its own."""
        deadline = time.monotonic() + SCREEN_WAIT_S
        while True:
            screen = self.screen(window)
            if seen(screen):
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(f"never saw {what}; the screen:\n{screen}")
            time.sleep(0.05)

    def kill(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], env=self.env, timeout=10)


@pytest.fixture
def tmux(daemon: Daemon) -> Iterator[Tmux]:
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed: run scripts/install-test-deps.sh")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SYNCD_", "TMUX"))}
    env.update(SYNCD_URL=daemon.url, TZ="UTC", PS1="$ ", TERM="xterm-256color")
    session = Tmux(env)
    yield session
    session.kill()


def syncd_line(*args: str) -> str:
    """The command line a person would type (the module, as `syncd` is in the venv)."""
    quoted = " ".join(f"'{a}'" for a in args)
    return f"cd {ROOT} && {sys.executable} -m controllers.cli {quoted}; echo EXIT=$?"


def exited(screen: str) -> bool:
    return EXITED.search(screen) is not None


def exit_code(screen: str) -> int:
    found = EXITED.search(screen)
    assert found is not None, screen
    return int(found[1])


def test_follow_through_a_retry_and_a_cancel_in_a_terminal(tmux: Tmux) -> None:
    tmux.start("retry")
    tmux.type(
        "retry",
        syncd_line(
            "tasks", "create", "noop", "-p", "fail_times=1", "-p", "steps=2",
            "-p", "sleep_s=0.4", "--max-attempts", "3", "--follow",
        ),
    )  # fmt: skip
    waiting = tmux.wait_for("retry", lambda s: "retry: attempt 2 of 3 at " in s, "the retry's wait")
    line = next(x for x in waiting.splitlines() if "retry: attempt 2 of 3 at " in x)
    assert " pending " in line and "[------------------------]   0%" in line  # no false 100%
    assert re.search(r"at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d\+00:00", line)  # a time with its offset
    assert "last error: noop: planned failure 1/1" in line
    done = tmux.wait_for("retry", exited, "the follow to end")
    assert exit_code(done) == 0
    assert re.search(r" completed \[#{24}\] 100% ", done)

    tmux.window("follow")
    tmux.type(
        "follow",
        syncd_line("tasks", "create", "noop", "-p", "sleep_s=60", "-p", "steps=600", "-f"),
    )
    running = tmux.wait_for("follow", lambda s: " running " in s, "the slow task running")
    reference = next(x for x in running.splitlines() if " running " in x).split()[0]
    tmux.window("cancel")
    tmux.type("cancel", syncd_line("tasks", "cancel", reference))
    said = tmux.wait_for("cancel", exited, "the cancel command")
    assert f"cancel requested for {reference} (it is running)" in said
    assert exit_code(said) == 0
    ended = tmux.wait_for("follow", exited, "the followed task to end")
    assert f"{reference} cancelled: " in ended
    assert exit_code(ended) == 3
