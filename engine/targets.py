"""Targets of record imports (`records_import`, `POST /api/imports/{target}`), declared in code.

A target names the pydantic model each record is validated with, the table valid records are
upserted into and the key columns of that upsert. `tools` is seed 002's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import AnyUrl, BaseModel, ConfigDict, Field, StringConstraints, UrlConstraints
from sqlalchemy import Table

from schedule.models import tools

HttpUrl = Annotated[AnyUrl, UrlConstraints(allowed_schemes=["http", "https"], max_length=2048)]
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
            "url": str(self.url) if self.url is not None else None,
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
