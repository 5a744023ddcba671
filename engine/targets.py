"""Targets of record imports (`records_import`, `POST /api/imports/{target}`), declared in code.

A target names the pydantic model each record is validated with, the table valid records are
upserted into and the key columns of that upsert. `tools` is seed 002's.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from itertools import chain, repeat
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints
from sqlalchemy import Table

from schedule.models import tools


def _http_url(value: str) -> str:
    """An absolute http(s) URL, kept exactly as sent (no normalisation)."""
    try:
        parts = urlsplit(value)
        _ = parts.port  # raises ValueError for a bad port
    except ValueError as exc:
        raise ValueError(f"not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an absolute http:// or https:// URL")
    return value


HttpUrl = Annotated[
    str, StringConstraints(min_length=1, max_length=2048), AfterValidator(_http_url)
]
Text255 = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=255)]


class ToolRecord(BaseModel):
    """One record of seed 002's payload."""

    model_config = ConfigDict(extra="forbid")

    tool_id: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
    tool_name: Text255
    category: Text255 | None = None
    description: str | None = Field(None, max_length=65535)
    features: list[Annotated[str, StringConstraints(max_length=1000)]] = Field(
        default_factory=list, max_length=1000
    )
    url: HttpUrl | None = None

    def to_row(self) -> dict[str, Any]:
        """The `tools` row of this record."""
        return {
            "tool_id": self.tool_id,
            "tool_name": self.tool_name,
            "category": self.category,
            "description": self.description,
            "features": self.features,
            "url": self.url,
        }


TOOL_FIELDS = frozenset(ToolRecord.model_fields)
_PLAIN_HTTP_URL = re.compile(r"https?://[A-Za-z0-9.-]+(?:[/?#][!-~]*)?")
"""URLs `_http_url` accepts as they are, checkable without parsing: a lower-case http(s)
scheme, a host of letters, digits, dots and hyphens (no user, port or brackets) and printable
ASCII after it. Anything else goes through the model."""
_NO_FEATURES: list[str] = []
"""What a record without `features` gets (shared: rows are only read)."""


def _plain_strings(
    values: list[Any], longest: int, *, shortest: int = 0, stripped: bool = False
) -> bool:
    """True when every value is an ASCII `str` of `shortest`..`longest` characters (and, with
    `stripped`, without leading or trailing whitespace): what a length-limited (stripping) model
    field keeps unchanged. Python's `str.strip` removes every ASCII character pydantic's strip
    does (and the separators U+001C..U+001F too), so a value it leaves alone pydantic does."""
    if not values:
        return True
    if set(map(type, values)) != {str}:
        return False
    lengths = list(map(len, values))
    if max(lengths) > longest or min(lengths) < shortest:
        return False
    if not "".join(values).isascii():
        return False
    return not stripped or list(map(str.strip, values)) == values


def _present(values: list[Any]) -> list[Any]:
    return [v for v in values if v is not None]


def tool_columns_fast(records: list[Any]) -> dict[str, list[Any]] | None:
    """The `tools` rows of records that all plainly satisfy `ToolRecord`, column by column,
    without the model; None when any record is not of the plain shape checked here.

    Plain: an object with only the model's fields, ASCII text without surrounding spaces within
    the length limits, `features` a list of ASCII strings, an `http(s)://host/...` URL without
    port or user. The caller validates the records of a batch this refuses with the model,
    which decides and words the errors. Every batch this accepts the model accepts with the
    same rows (the tests compare both on tricky records), so the fast path changes the cost of
    an import, never its outcome. It checks whole columns with C-level calls (`map`, `join`,
    `max`) because validating record by record in Python, let alone with the model, cost
    several times the database write of the same records.
    """
    if not records or set(map(type, records)) != {dict}:
        return None
    if not all(map(TOOL_FIELDS.issuperset, records)):
        return None
    get = dict.get
    count = len(records)

    def column(name: str, default: Any = None) -> list[Any]:
        return list(map(get, records, repeat(name, count), repeat(default, count)))

    tool_id, tool_name = column("tool_id"), column("tool_name")
    if not (
        _plain_strings(tool_id, 64, shortest=1, stripped=True)
        and _plain_strings(tool_name, 255, shortest=1, stripped=True)
    ):
        return None
    category = column("category")
    if not _plain_strings(_present(category), 255, shortest=1, stripped=True):
        return None
    description = column("description")
    if not _plain_strings(_present(description), 65535):
        return None
    features = column("features", _NO_FEATURES)
    if set(map(type, features)) != {list} or max(map(len, features)) > 1000:
        return None
    if not _plain_strings(list(chain.from_iterable(features)), 1000):
        return None
    url = column("url")
    urls = _present(url)
    if not _plain_strings(urls, 2048) or not all(map(_PLAIN_HTTP_URL.fullmatch, urls)):
        return None
    return {
        "tool_id": tool_id,
        "tool_name": tool_name,
        "category": category,
        "description": description,
        "features": features,
        "url": url,
    }


@dataclass(frozen=True)
class ImportTarget:
    """A table records can be imported into."""

    name: str
    model: type[BaseModel]
    table: Table
    keys: tuple[str, ...]
    to_row: Callable[[Any], dict[str, Any]]
    stamp_columns: tuple[str, ...] = ()
    """Columns set by the import itself: `task_id`, `updated_at` when the table has them."""
    fast_columns: Callable[[list[Any]], dict[str, list[Any]] | None] | None = None
    """Optional: the rows (as columns, named as `to_row` names them) of records that all plainly
    pass `model`, or None to ask the model."""


TARGETS: dict[str, ImportTarget] = {
    "tools": ImportTarget(
        name="tools",
        model=ToolRecord,
        table=tools,
        keys=("tool_id",),
        to_row=ToolRecord.to_row,
        stamp_columns=("task_id", "updated_at"),
        fast_columns=tool_columns_fast,
    ),
}


def get_target(name: str) -> ImportTarget | None:
    """The target called `name`, or None."""
    return TARGETS.get(name)
