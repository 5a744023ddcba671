"""Logging set-up: JSON lines for journald and log shippers, or one readable line per record.

Code logs with `logging.getLogger(__name__)` and structured context in `extra=` (`task_id`,
`task_type`, `action`, ...); `configure_logging` decides how that reaches the output, once, in
`main()`. Secrets must not reach the logs: the aiohttp access log format below carries no headers,
and a filter on the handler redacts `Bearer <token>` (and `?token=` query values, however the
name is spelt or percent-encoded) anywhere as a second line of defence.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal, TextIO
from urllib.parse import unquote_plus

#: aiohttp access log format: client, time, request line, status, size, seconds. No headers, so
#: an `Authorization` value can never be logged (pass as `access_log_format=` to aiohttp).
ACCESS_LOG_FORMAT = '%a %t "%r" %s %b %Tf'

#: Extras shown first, in this order, when present; any other `extra=` key follows.
CONTEXT_KEYS = ("task_id", "task_type", "node_id", "action")

_CORE_KEYS = frozenset({"ts", "level", "logger", "msg", "exc", "stack"})
# Attributes every LogRecord has; anything else on a record came from `extra=`.
_RECORD_ATTRS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
_BEARER = re.compile(r"\b(Bearer)\s+[A-Za-z0-9\-._~+/]+=*", re.IGNORECASE)
_REDACTED = r"\1 [REDACTED]"
# The dashboard's websocket URL carries its token as `?token=` (browsers cannot set headers).
# aiohttp decodes query names, so `?tok%65n=` is the token too: every `name=value` after `?`,
# `&` or `;` is looked at, and its value redacted when the decoded name is "token".
_QUERY_PAIR = re.compile(r"([?&;])([^=&;?\s\"'#]*)=([^&;\s\"'#]*)")
_NOT_NAME = re.compile(r"[\W_]+")


def redact(text: str) -> str:
    """`text` with every `Bearer <token>` replaced by `Bearer [REDACTED]`, and the value of
    every query parameter named `token` by `[REDACTED]`, whatever the name's case, spelling
    in percent-escapes (`tok%65n`, even escaped twice) or stray punctuation (`token[]`)."""
    text = _BEARER.sub(_REDACTED, text)
    if "=" not in text:
        return text
    return _QUERY_PAIR.sub(_redact_pair, text)


def _redact_pair(match: re.Match[str]) -> str:
    if not _is_token_name(match[2]):
        return match[0]
    return f"{match[1]}{match[2]}=[REDACTED]"


def _is_token_name(raw: str) -> bool:
    name = raw
    for _ in range(3):  # escaped up to three times over
        decoded = unquote_plus(name)
        if decoded == name:
            break
        name = decoded
    return _NOT_NAME.sub("", name).casefold() == "token"


class RedactBearerFilter(logging.Filter):
    """Redacts bearer tokens from a record's message and string extras before it is written.

    Installed on the handler (not a logger) so it sees records from every logger, including
    `aiohttp.access`. The message is rendered first so tokens passed as `%s` arguments are caught.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record in place; never drops it."""
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        for key, value in extras(record).items():
            if isinstance(value, str) and value != (cleaned_value := redact(value)):
                setattr(record, key, cleaned_value)
            elif isinstance(value, dict):
                setattr(record, key, _redact_mapping(value))
        return True


def _redact_mapping(value: dict[Any, Any]) -> dict[Any, Any]:
    return {k: redact(v) if isinstance(v, str) else v for k, v in value.items()}


def extras(record: logging.LogRecord) -> dict[str, Any]:
    """The `extra=` keys of a record: its attributes that a plain LogRecord does not have."""
    return {k: v for k, v in vars(record).items() if k not in _RECORD_ATTRS}


def _timestamp(record: logging.LogRecord) -> str:
    moment = datetime.fromtimestamp(record.created, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


#: What aiohttp's access logger adds as extras (one per format directive): the message already
#: says all of it, so only the status is kept, as `http_status`, for filtering.
ACCESS_EXTRAS = frozenset(
    {
        "remote_address",
        "request_start_time",
        "process_id",
        "first_request_line",
        "response_status",
        "response_size",
        "request_time",
        "request_time_frac",
        "request_time_micro",
        "request_header",
        "response_header",
    }
)


def _context(record: logging.LogRecord, node_id: str | None) -> dict[str, Any]:
    """Extras with the well-known keys first; `node_id` filled in unless the record has one."""
    found = extras(record)
    if record.name == "aiohttp.access":
        status = found.get("response_status")
        found = {k: v for k, v in found.items() if k not in ACCESS_EXTRAS}
        if status is not None:
            found["http_status"] = int(status) if str(status).isdigit() else status
    if node_id is not None:
        found.setdefault("node_id", node_id)
    ordered = {k: found.pop(k) for k in CONTEXT_KEYS if k in found}
    ordered.update(found)
    return ordered


def _json_default(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: `ts`, `level`, `logger`, `msg`, the extras, then `exc`.

    An extra named like a core field is written with a trailing underscore (`level_`) rather
    than overwrite it. Values JSON cannot express are written as their `str()`.
    """

    def __init__(self, node_id: str | None = None) -> None:
        super().__init__()
        self._node_id = node_id

    def format(self, record: logging.LogRecord) -> str:
        """Render the record as a single line of JSON."""
        entry: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in _context(record, self._node_id).items():
            entry[f"{key}_" if key in _CORE_KEYS else key] = value
        if record.exc_info:
            entry["exc"] = redact(self.formatException(record.exc_info))
        elif record.exc_text:
            entry["exc"] = redact(record.exc_text)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=_json_default, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """`<ts> <LEVEL> <logger>: <msg> key=value ...`, then the traceback if there is one."""

    def __init__(self, node_id: str | None = None) -> None:
        super().__init__()
        self._node_id = node_id

    def format(self, record: logging.LogRecord) -> str:
        """Render the record as one human-readable line (plus traceback lines)."""
        pairs = " ".join(
            f"{key}={_text_value(value)}" for key, value in _context(record, self._node_id).items()
        )
        line = f"{_timestamp(record)} {record.levelname} {record.name}: {record.getMessage()}"
        if pairs:
            line = f"{line} {pairs}"
        if record.exc_info:
            line = f"{line}\n{redact(self.formatException(record.exc_info))}"
        if record.stack_info:
            line = f"{line}\n{self.formatStack(record.stack_info)}"
        return line


def _text_value(value: object) -> str:
    text = value.isoformat() if isinstance(value, datetime) else str(value)
    if not text or any(c in text for c in ' "=\n'):
        return json.dumps(text, ensure_ascii=False)
    return text


def resolve_format(
    fmt: str, environ: Mapping[str, str] | None = None, stream: TextIO | None = None
) -> Literal["json", "text"]:
    """`auto`: JSON lines under systemd (it sets `JOURNAL_STREAM` or `INVOCATION_ID` for the
    unit's processes) and when the output is a file or a pipe (a log shipper), readable lines
    on a terminal. `json` and `text` are taken as they are."""
    if fmt == "json":
        return "json"
    if fmt == "text":
        return "text"
    env = os.environ if environ is None else environ
    if env.get("JOURNAL_STREAM") or env.get("INVOCATION_ID"):
        return "json"
    out = sys.stderr if stream is None else stream
    try:
        return "text" if out.isatty() else "json"
    except ValueError:  # a closed stream
        return "json"


class _SyncdHandler(logging.StreamHandler[TextIO]):
    """Marks the handler `configure_logging` installed, so a second call replaces it."""


def configure_logging(
    fmt: Literal["auto", "json", "text"],
    level: str = "INFO",
    node_id: str | None = None,
    stream: TextIO | None = None,
) -> None:
    """Send every log record to `stream` (stderr by default) as JSON lines or text lines
    (`auto`: see `resolve_format`).

    Installs one handler on the root logger, replacing the one a previous call installed (so it
    is safe to call again, e.g. after reading the settings) and leaving other handlers alone.
    `node_id` is added to every record that does not carry its own. Raises ValueError for an
    unknown format or level, naming it.
    """
    if fmt not in ("auto", "json", "text"):
        raise ValueError(f"SYNCD_LOG_FORMAT: expected auto, json or text, got {fmt!r}")
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"SYNCD_LOG_LEVEL: unknown level {level!r}")
    out = sys.stderr if stream is None else stream
    handler = _SyncdHandler(out)
    chosen = resolve_format(fmt, stream=out)
    handler.setFormatter(JsonFormatter(node_id) if chosen == "json" else TextFormatter(node_id))
    handler.addFilter(RedactBearerFilter())
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _SyncdHandler)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(numeric)
