"""Log output: JSON lines and text lines with context, redaction, and idempotent set-up."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from config.logging import ACCESS_LOG_FORMAT, RedactBearerFilter, configure_logging, redact

TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
TOKEN = "s3cr3t-T0ken_value.with~chars+/="

log = logging.getLogger("syncd.test")


@pytest.fixture(autouse=True)
def restore_root_logger() -> Iterator[None]:
    """configure_logging changes the root logger; put it back as pytest had it."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


def _lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


def _json_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in _lines(stream)]


def test_json_line_has_the_fields_and_extras() -> None:
    out = io.StringIO()
    configure_logging("json", node_id="node-a", stream=out)
    log.info(
        "claimed %s",
        "HD6EKSD8DO9",
        extra={"task_id": "t-1", "task_type": "noop", "action": "claim", "attempt": 2},
    )
    (entry,) = _json_lines(out)
    assert TS.match(entry["ts"])
    assert entry["level"] == "INFO"
    assert entry["logger"] == "syncd.test"
    assert entry["msg"] == "claimed HD6EKSD8DO9"
    assert entry["task_id"] == "t-1"
    assert entry["task_type"] == "noop"
    assert entry["action"] == "claim"
    assert entry["node_id"] == "node-a"
    assert entry["attempt"] == 2
    assert list(entry)[:8] == [
        "ts",
        "level",
        "logger",
        "msg",
        "task_id",
        "task_type",
        "node_id",
        "action",
    ]
    for internal in ("args", "levelno", "pathname", "lineno", "funcName", "process", "exc_info"):
        assert internal not in entry


def test_json_record_node_id_wins_and_odd_values_are_strings() -> None:
    out = io.StringIO()
    configure_logging("json", node_id="node-a", stream=out)
    log.warning("x", extra={"node_id": "node-b", "level": "shadow", "obj": object()})
    (entry,) = _json_lines(out)
    assert entry["node_id"] == "node-b"
    assert entry["level"] == "WARNING"
    assert entry["level_"] == "shadow"
    assert entry["obj"].startswith("<object object")


def test_json_exception_is_text() -> None:
    out = io.StringIO()
    configure_logging("json", stream=out)
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("task failed", extra={"task_id": "t-2"})
    (entry,) = _json_lines(out)
    assert entry["level"] == "ERROR"
    assert entry["exc"].startswith("Traceback")
    assert "ValueError: boom" in entry["exc"]
    assert "node_id" not in entry


def test_level_filters_records() -> None:
    out = io.StringIO()
    configure_logging("json", level="warning", stream=out)
    log.info("hidden")
    log.warning("shown")
    assert [e["msg"] for e in _json_lines(out)] == ["shown"]


def test_text_line_has_the_extras() -> None:
    out = io.StringIO()
    configure_logging("text", node_id="node-a", stream=out)
    log.info("started", extra={"task_id": "t-1", "action": "run", "note": "two words"})
    (line,) = _lines(out)
    assert re.match(
        r"^\S+Z INFO syncd\.test: started task_id=t-1 node_id=node-a action=run "
        r'note="two words"$',
        line,
    ), line


def test_configure_twice_replaces_its_handler() -> None:
    first, second = io.StringIO(), io.StringIO()
    root = logging.getLogger()
    foreign = len(root.handlers)
    configure_logging("json", stream=first)
    configure_logging("text", stream=second)
    log.info("once")
    assert first.getvalue() == ""
    assert len(_lines(second)) == 1
    assert len(root.handlers) == foreign + 1, "other handlers are left alone, ours replaced"


@pytest.mark.parametrize(("fmt", "level"), [("xml", "INFO"), ("json", "LOUD")])
def test_bad_format_or_level_is_refused(fmt: Any, level: str) -> None:
    with pytest.raises(ValueError, match="SYNCD_LOG_"):
        configure_logging(fmt, level=level, stream=io.StringIO())


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_bearer_tokens_are_redacted_everywhere(fmt: Any) -> None:
    out = io.StringIO()
    configure_logging(fmt, stream=out)
    log.info("Authorization: Bearer %s", TOKEN)
    log.info("header was bearer " + TOKEN, extra={"header": f"Bearer {TOKEN}"})
    log.info("nested", extra={"headers": {"Authorization": f"Bearer {TOKEN}"}})
    try:
        raise PermissionError(f"rejected Bearer {TOKEN}")
    except PermissionError:
        log.exception("denied")
    text = out.getvalue()
    assert TOKEN not in text
    assert TOKEN.split(".")[0] not in text
    assert text.count("[REDACTED]") == 5


def test_redact_leaves_other_text_alone() -> None:
    assert redact("GET /api/sync/tasks 200") == "GET /api/sync/tasks 200"
    assert redact("x Bearer abc.def y") == "x Bearer [REDACTED] y"


def test_filter_keeps_records() -> None:
    record = logging.makeLogRecord({"msg": "Bearer %s", "args": ("abc",)})
    assert RedactBearerFilter().filter(record)
    assert record.getMessage() == "Bearer [REDACTED]"


async def access_log_of(path: str, headers: dict[str, str] | None = None) -> io.StringIO:
    """GET `path` (query included) from a real aiohttp server logging as the daemon does."""
    out = io.StringIO()
    configure_logging("json", stream=out)

    async def answer(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_get(path.split("?")[0], answer)
    runner = web.AppRunner(app, access_log_format=ACCESS_LOG_FORMAT)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}{path}", headers=headers) as response,
        ):
            assert response.status == 200
    finally:
        await runner.cleanup()
    return out


async def test_aiohttp_access_log_has_no_authorization_value() -> None:
    headers = {"Authorization": f"Bearer {TOKEN}", "User-Agent": "ua-marker"}
    out = await access_log_of("/ping", headers)
    access = [e for e in _json_lines(out) if e["logger"] == "aiohttp.access"]
    assert len(access) == 1
    assert re.match(
        r'^127\.0\.0\.1 \[.+\] "GET /ping HTTP/1\.1" 200 \d+ \d+\.\d+$', access[0]["msg"]
    )
    assert TOKEN not in out.getvalue()
    assert "ua-marker" not in out.getvalue()


def test_redact_query_tokens_and_nothing_else() -> None:
    assert redact("GET /api/ws?token=abc HTTP/1.1") == "GET /api/ws?token=[REDACTED] HTTP/1.1"
    assert redact("/x?a=1&token=t%20x&b=2") == "/x?a=1&token=[REDACTED]&b=2"
    assert redact("/api/sync/tasks?page=2") == "/api/sync/tasks?page=2"
    assert redact("/x?mytoken=keep") == "/x?mytoken=keep"
    assert redact("/x?token_type=bearer&tokens=2") == "/x?token_type=bearer&tokens=2"


@pytest.mark.parametrize(
    "query",
    [
        "tok%65n=SECRET",  # aiohttp decodes the name: this IS the token
        "%74%6F%6B%65%6E=SECRET",
        "tok%2565n=SECRET",  # escaped twice
        "TOKEN=SECRET",
        "Token=SECRET",
        "token[]=SECRET",
        "to+ken=SECRET",
        "a=1;token=SECRET",
        "token=SECRET&token=SECRET2&tok%65n=SECRET3",
    ],
)
def test_redact_query_tokens_however_the_name_is_spelt(query: str) -> None:
    line = f'127.0.0.1 [x] "GET /api/ws?{query} HTTP/1.1" 101 0 0.001'
    cleaned = redact(line)
    assert "SECRET" not in cleaned
    assert cleaned.count("[REDACTED]") == query.count("SECRET")


async def test_access_log_of_the_websocket_url_has_no_token() -> None:
    query_token = "q7-secret-value-0123456789"  # the dashboard's websocket URL carries one
    out = await access_log_of(f"/api/ws?token={query_token}")
    access = [e for e in _json_lines(out) if e["logger"] == "aiohttp.access"]
    assert len(access) == 1
    assert '"GET /api/ws?token=[REDACTED] HTTP/1.1" 200' in access[0]["msg"]
    assert query_token not in out.getvalue()


class Tty(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("fmt", "environ", "stream", "chosen"),
    [
        ("auto", {}, Tty(), "text"),  # a person at a terminal
        ("auto", {}, io.StringIO(), "json"),  # a pipe or a file: a log shipper
        ("auto", {"JOURNAL_STREAM": "8:1234"}, Tty(), "json"),  # systemd, even on a tty
        ("auto", {"INVOCATION_ID": "0af1"}, io.StringIO(), "json"),
        ("text", {"INVOCATION_ID": "0af1"}, io.StringIO(), "text"),  # said outright: taken
        ("json", {}, Tty(), "json"),
    ],
)
def test_auto_format_is_text_on_a_terminal_and_json_under_systemd(
    fmt: str, environ: dict[str, str], stream: io.StringIO, chosen: str
) -> None:
    from config.logging import resolve_format

    assert resolve_format(fmt, environ, stream) == chosen


def test_auto_format_writes_readable_lines_to_a_terminal() -> None:
    out = Tty()
    configure_logging("auto", stream=out)
    log.warning("hello")
    assert not out.getvalue().startswith("{")
    assert " WARNING syncd.test: hello" in out.getvalue()
