"""Targets of record imports (`records_import`, `POST /api/imports/{target}`), declared in code.

A target names the pydantic model each record is validated with, the table valid records are
upserted into and the key columns of that upsert. `tools` is seed 002's.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
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


def _plain_text(value: object, longest: int) -> bool:
    """True for an ASCII `str` of 1..`longest` characters that starts and ends with a printable
    character: what a stripped, length-limited model field accepts unchanged (in ASCII every
    space, and every character either side strips, sorts at or below " ")."""
    return (
        type(value) is str
        and 0 < len(value) <= longest
        and value.isascii()
        and value[0] > " "
        and value[-1] > " "
    )


def _plain_texts(values: object) -> bool:
    """True for a list of at most 1,000 ASCII `str` of at most 1,000 characters each."""
    if type(values) is not list or len(values) > 1000:
        return False
    for value in values:
        if type(value) is not str or len(value) > 1000 or not value.isascii():
            return False
    return True


def tool_row_fast(record: object) -> dict[str, Any] | None:
    """The `tools` row of a record that plainly satisfies `ToolRecord`, without the model.

    Returns None whenever the record is not of the plain shape checked here (any non-ASCII
    text, surrounding spaces, a port in the URL, a wrong type...); the caller then validates it
    with the model, which decides and words the error. Every record this accepts the model
    accepts with the same row (the tests compare both on tricky records), so the fast path
    changes the cost of an import, never its outcome. It exists because model validation with
    the URL check in Python costs several times the database write of the same record.
    """
    if type(record) is not dict or not record.keys() <= TOOL_FIELDS:
        return None
    get = record.get
    row = {
        "tool_id": get("tool_id"),
        "tool_name": get("tool_name"),
        "category": get("category"),
        "description": get("description"),
        "features": get("features", []),
        "url": get("url"),
    }
    category, description, url = row["category"], row["description"], row["url"]
    if (
        _plain_text(row["tool_id"], 64)
        and _plain_text(row["tool_name"], 255)
        and (category is None or _plain_text(category, 255))
        and (
            description is None
            or (type(description) is str and len(description) <= 65535 and description.isascii())
        )
        and _plain_texts(row["features"])
        and (
            url is None
            or (type(url) is str and len(url) <= 2048 and _PLAIN_HTTP_URL.fullmatch(url))
        )
    ):
        return row
    return None


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
    fast_row: Callable[[object], dict[str, Any] | None] | None = None
    """Optional: the row of a record that plainly passes `model`, or None to ask the model."""


TARGETS: dict[str, ImportTarget] = {
    "tools": ImportTarget(
        name="tools",
        model=ToolRecord,
        table=tools,
        keys=("tool_id",),
        to_row=ToolRecord.to_row,
        stamp_columns=("task_id", "updated_at"),
        fast_row=tool_row_fast,
    ),
}


def get_target(name: str) -> ImportTarget | None:
    """The target called `name`, or None."""
    return TARGETS.get(name)
