"""What data sources may reach under the settings: target tables, files, hosts, databases.

Built once from the settings (`SourcePolicy.from_settings`); the API checks a definition with it
(422 naming the field) and a sync checks again what it is about to touch, so a definition stored
before a rule existed, or a file, symlink or DNS answer changed since, gains nothing.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import URL, make_url

from config.settings import Settings, is_own_table
from engine.sources.egress import EgressPolicy
from engine.sources.exceptions import SourceError
from engine.sources.files import confine
from engine.sources.sql import SqlTimeouts, is_sqlite, same_database, statement_problem, url_problem
from engine.sources.workbook import UnpackLimits
from schedule.datasources import DOMAIN_TARGETS, sync_targets


@dataclass(frozen=True)
class SourcePolicy:
    """The rules data sources obey; see the module docstring."""

    targets: frozenset[str]
    """Tables a source may write to, lower case."""
    source_dirs: tuple[Path, ...]
    egress: EgressPolicy
    own_database: URL
    timeouts: SqlTimeouts
    """Defaults of SQL sources' `connect_timeout_s` and `read_timeout_s`."""
    unpack: UnpackLimits
    """How far an .xlsx file source may unpack (the `SYNCD_XLSX_*` settings)."""

    @classmethod
    def from_settings(cls, settings: Settings) -> SourcePolicy:
        """The policy of these settings."""
        return cls(
            targets=sync_targets(settings.sync_target_tables),
            source_dirs=tuple(settings.source_dirs),
            egress=EgressPolicy.parse(settings.egress_allowed_hosts),
            own_database=make_url(settings.database_url),
            timeouts=SqlTimeouts(settings.source_connect_timeout_s, settings.source_read_timeout_s),
            unpack=UnpackLimits.from_settings(settings),
        )

    @property
    def own_sqlite_file(self) -> str | None:
        """syncd's SQLite file, when its database is one."""
        return self.own_database.database if is_sqlite(self.own_database) else None

    def target_problem(self, table: str) -> str | None:
        """Why a source may not write to `table`, or None."""
        if is_own_table(table):
            return f"{table!r} is one of syncd's own tables; no data source may write to it"
        if table.lower() not in self.targets:
            extra = sorted(self.targets - DOMAIN_TARGETS)
            shown = ", ".join(sorted(DOMAIN_TARGETS) + extra)
            return (
                f"{table!r} is not a sync target; data sources write to {shown}"
                " (list more in SYNCD_SYNC_TARGET_TABLES)"
            )
        return None

    async def file_problem(self, path: str) -> str | None:
        """Why a file source may not read `path` (resolved in a thread), or None."""
        try:
            await asyncio.to_thread(confine, path, self.source_dirs, self.own_sqlite_file)
        except SourceError as exc:
            return str(exc)
        return None

    async def sql_problem(self, url: URL, query: str | None) -> tuple[str, str] | None:
        """`(field, why)` a SQL source is refused (its URL or its query), or None."""
        problem = url_problem(url)
        if problem is not None:
            return "url", problem
        if await asyncio.to_thread(same_database, url, self.own_database):
            return "url", "this is syncd's own database; a source may not read it"
        if query is not None:
            problem = statement_problem(query, sqlite=is_sqlite(url))
            if problem is not None:
                return "query", problem
        return None
