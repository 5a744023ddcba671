"""The access log never shows a `?token=` value (the dashboard's websocket URL has one)."""

from __future__ import annotations

import logging

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from config.logging import ACCESS_LOG_FORMAT
from controllers.identity import RedactingAccessLogger, redact_token


def test_redact_token_keeps_everything_else() -> None:
    assert redact_token("GET /api/ws?token=abc HTTP/1.1") == "GET /api/ws?token=*** HTTP/1.1"
    assert redact_token("/x?a=1&token=t%20x&b=2") == "/x?a=1&token=***&b=2"
    assert redact_token("/api/sync/tasks?page=2") == "/api/sync/tasks?page=2"
    assert redact_token("/x?mytoken=keep") == "/x?mytoken=keep"


def test_access_log_line_is_redacted(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("test.access")
    access = RedactingAccessLogger(logger, ACCESS_LOG_FORMAT)
    request = make_mocked_request("GET", "/api/ws?token=s3cret-value")
    with caplog.at_level(logging.INFO, logger="test.access"):
        access.log(request, web.Response(status=101), 0.01)
    (record,) = caplog.records
    assert "s3cret-value" not in record.getMessage()
    assert "GET /api/ws?token=*** HTTP/1.1" in record.getMessage()
