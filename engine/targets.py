"""Targets of record imports (`records_import`, `POST /api/imports/{target}`), declared in code.

A target names the pydantic model each record is validated with, the table valid records are
upserted into and the key columns of that upsert. `tools` is seed 002's.
"""

from __future__ import annotations

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


TARGETS: dict[str, ImportTarget] = {
    "tools": ImportTarget(
        name="tools",
        model=ToolRecord,
        table=tools,
        keys=("tool_id",),
        to_row=ToolRecord.to_row,
        stamp_columns=("task_id", "updated_at"),
    ),
}


def get_target(name: str) -> ImportTarget | None:
    """The target called `name`, or None."""
    return TARGETS.get(name)
