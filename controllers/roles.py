"""Who may call each route: the access a route declares, and the table made from those.

Every route declares its access where it is defined, as the required `roles=` of its
`@doc(...)`: `PUBLIC` (no token, only outside `/api`) or the set of roles whose tokens may call
it. That declaration is the one table: `controllers.auth.auth_middleware` looks it up from the
route a request matched, the OpenAPI document carries it as `x-roles`, and docs/security.md's
role table is `markdown_table` of `controllers.openapi.access_table(app)` (printed by
`syncd roles`; a test compares the two).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Literal

from config.settings import ROLES, Role
from schedule.service import MAINTAINERS

PUBLIC: Final = "public"
#: A route's declared access: `PUBLIC`, or the roles whose tokens may call it.
Access = frozenset[Role] | Literal["public"]

READERS: frozenset[Role] = frozenset({"admin", "operator", "read"})
OPERATORS: frozenset[Role] = frozenset({"admin", "operator"})
WORKERS: frozenset[Role] = frozenset({"admin", "worker"})
ADMINS: frozenset[Role] = frozenset({"admin"})
ANY_ROLE: frozenset[Role] = frozenset(ROLES)

#: Who may call a route that declares nothing (a bug `undocumented` reports): fail closed.
UNDECLARED: frozenset[Role] = ADMINS


def api_path(path: str) -> bool:
    """True for `/api` and everything under it (where every request needs a token)."""
    return path == "/api" or path.startswith("/api/")


@dataclass(frozen=True)
class RouteAccess:
    """One row of the role table: a route, what it does, and who may call it."""

    method: str
    path: str
    summary: str
    access: Access

    def allows(self, role: Role | None) -> bool:
        """Whether a caller with this role (None: no token) gets past authentication."""
        return self.access == PUBLIC or (role is not None and role in self.access)


def misdeclared(rows: Iterable[RouteAccess]) -> list[str]:
    """Routes whose access contradicts the `/api` rule (should be empty).

    Every `/api` route needs a token and nothing outside `/api` does (the probes, `/metrics`
    and the dashboard's files stay reachable without one).
    """
    return [
        f"{r.method} {r.path}"
        for r in rows
        if (r.access == PUBLIC) == api_path(r.path) or r.access == frozenset()
    ]


def markdown_table(rows: Iterable[RouteAccess], maintenance_types: Iterable[str]) -> str:
    """The role table of docs/security.md (Markdown), one row per route, by path."""
    lines = [
        "| route | does | " + " | ".join(ROLES) + " | no token |",
        "| --- | --- | " + " | ".join("---" for _ in ROLES) + " | --- |",
    ]
    for row in sorted(rows, key=_order):
        cells = ["yes" if row.allows(role) else "-" for role in (*ROLES, None)]
        summary = row.summary.replace("|", "\\|")
        lines.append(f"| `{row.method} {row.path}` | {summary} | " + " | ".join(cells) + " |")
    types = ", ".join(f"`{t}`" for t in sorted(maintenance_types))
    lines.append("")
    lines.append(
        f"Maintenance task types, which only {_names(MAINTAINERS)} may enqueue by hand "
        f"(create, batch create, retry, batch retry, a schedule's run now or backfill): {types}."
    )
    return "\n".join(lines) + "\n"


_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


def _order(row: RouteAccess) -> tuple[str, int, str]:
    """By path, then GET, POST, PUT, PATCH, DELETE, then any other method."""
    rank = _METHODS.index(row.method) if row.method in _METHODS else len(_METHODS)
    return row.path, rank, row.method


def _names(roles: frozenset[Role]) -> str:
    return " and ".join(f"`{r}`" for r in ROLES if r in roles)
