"""Property-based fuzz of the OpenAPI document against a real `syncd serve` (schemathesis).

The document fuzzed is the daemon's own `/api/openapi.json` (`test_served_document_is_fuzzed`
checks that the copy built here at collection time is the one the daemon serves). Every
operation is called with an admin token, with each other role's token and without a token,
through the real HTTP stack, on a real SQLite database holding a few tasks, an import, an
external task and a data source whose ids the fuzz also puts in paths. Every answer must:

- never be a 5xx, nor take longer than `REQUEST_TIMEOUT_S` (no hang);
- have a status code, a content type and a body that the document gives that operation;
- reject what the document says is invalid (schemathesis' negative data) with a 4xx;
- be a 401 without a token and a 403 for a role the operation's `x-roles` leave out.

Bounded and reproducible: a fixed example count per operation and role, derandomized generation
(the same requests for the same document), no example database, and every request bounded by
`REQUEST_TIMEOUT_S`. A failure prints the request as a `curl` command (the tokens are these test
values, not secrets). Locally, `SYNCD_FUZZ_EXAMPLES` raises the count and `SYNCD_FUZZ_SEED`
draws other inputs (see docs/security.md, Fuzzing).

No request may make the daemon reach beyond this host: a data-source definition whose
connection names a URL with a host other than loopback is never sent (such a source, once run by
a sync, would connect there).
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import checks

from config.settings import ROLES, Role
from controllers.app import routes_only
from controllers.openapi import build_spec
from tests.acceptance.daemon import wait_until
from tests.daemon import Daemon, running_daemon

pytestmark = pytest.mark.fuzz
Case = schemathesis.Case[Any]

TOKENS: dict[Role, str] = {role: f"fuzz-{role}-token" for role in ROLES}
#: Examples per operation: for the admin (who may call everything), and for each other role
#: and for no token (most of whose calls end at authentication). Raise for a longer run.
EXAMPLES = int(os.environ.get("SYNCD_FUZZ_EXAMPLES", "40"))
OTHER_EXAMPLES = max(1, EXAMPLES // 4)
#: Unset: derandomized (the same inputs every run, as CI needs); a number: inputs drawn from it.
SEED = os.environ.get("SYNCD_FUZZ_SEED")
REQUEST_TIMEOUT_S = 10.0
LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})

CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
    checks.negative_data_rejection,
    checks.unsupported_method,
    checks.allow_header_conformance,
    checks.ignored_auth,
]

SPEC = build_spec(routes_only(), "fuzz")
CONFIG = schemathesis.Config.from_dict(
    {"output": {"sanitization": {"enabled": False}}} | ({"seed": int(SEED)} if SEED else {})
)
schema = schemathesis.openapi.from_dict(SPEC, config=CONFIG)

SETTINGS = settings(
    derandomize=SEED is None,
    database=None,
    deadline=None,
    print_blob=False,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
)


class Seeded:
    """Ids of things the fuzz finds in the database, offered as path parameters."""

    def __init__(self) -> None:
        self.values: dict[str, list[str]] = {}

    def add(self, name: str, *values: str) -> None:
        self.values.setdefault(name, []).extend(values)


@pytest.fixture(scope="module")
def daemon(sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """`syncd serve` on a copy of the migrated template, with a token per role."""
    workdir = tmp_path_factory.mktemp("fuzz")
    tokens = ",".join(f"{token}:{role}" for role, token in TOKENS.items())
    with running_daemon(sqlite_template, workdir, SYNCD_API_TOKENS=tokens) as running:
        yield running


@pytest.fixture(scope="module")
def seeded(daemon: Daemon) -> Seeded:
    """A pending, a failed and an external (claimed) task, a finished import with rejected
    records, a data source and the schedules: what the fuzz's path parameters may name."""
    admin, worker = TOKENS["admin"], TOKENS["worker"]
    out = Seeded()
    pending = daemon.call(
        "POST",
        "/api/sync/tasks",
        {"task_type": "noop", "run_after": "2999-01-01T00:00:00Z"},
        admin,
    )
    failed = daemon.call(
        "POST",
        "/api/sync/tasks",
        {"task_type": "noop", "parameters": {"fail_permanently": True}},
        admin,
    )
    daemon.call(
        "POST",
        "/api/sync/tasks",
        {"task_type": "external", "parameters": {"service": "fuzz"}},
        admin,
    )
    external = daemon.call("GET", "/api/crontask?service=fuzz", token=worker)
    imported = daemon.call(
        "POST",
        "/api/tools/import",
        {"data": [{"tool_id": "t1", "tool_name": "Tool"}, {"tool_id": ""}]},
        admin,
    )
    for task in (pending, failed, external):
        out.add("id", task["id"], task["reference"])
    out.add("ref", imported["task_reference"])
    wait_until(
        lambda: _finished(daemon, failed["id"]) and _finished(daemon, imported["task_reference"]),
        30,
        "the seeded tasks to finish",
    )
    sources = Path(daemon.database_url.removeprefix("sqlite:///")).parent / "state" / "sources"
    sources.mkdir(parents=True, exist_ok=True)
    (sources / "tools.csv").write_text("tool_id,tool_name\nt2,Other\n")
    source = daemon.call(
        "POST",
        "/api/sync/data-sources",
        {
            "id": "fuzz-source",
            "name": "fuzz",
            "kind": "file",
            "connection": {"path": str(sources / "tools.csv")},
            "target_table": "tools",
            "key_columns": ["tool_id"],
        },
        admin,
    )
    out.add("id", source["id"])
    out.add(
        "id", *(s["id"] for s in daemon.call("GET", "/api/schedules", token=admin)["schedules"])
    )
    out.add("target", "tools")
    return out


def _finished(daemon: Daemon, key: str) -> bool:
    task = daemon.call("GET", f"/api/tasks/{key}", token=TOKENS["read"])
    return bool(task["status"] != "running")


def reaches_out(value: Any) -> bool:
    """Whether a JSON value holds a URL with a host beyond loopback."""
    if isinstance(value, dict):
        return any(reaches_out(k) or reaches_out(v) for k, v in value.items())
    if isinstance(value, list):
        return any(reaches_out(v) for v in value)
    if isinstance(value, str) and "://" in value:
        try:
            host = urlsplit(value.strip()).hostname
        except ValueError:
            return True
        return host is not None and host not in LOOPBACK
    return False


def prepare(case: Case, seeded: Seeded) -> None:
    """Put a seeded id in about half the path parameters that may name one (chosen from the
    generated value, so the same inputs make the same requests); never send a data source that
    would reach beyond this host."""
    for name, value in (case.path_parameters or {}).items():
        known = seeded.values.get(name)
        pick = zlib.crc32(str(value).encode())
        if known and pick % 2 == 0:
            assert case.path_parameters is not None
            case.path_parameters[name] = known[pick // 2 % len(known)]
    if case.operation.path.startswith("/api/sync/data-sources") and reaches_out(case.body):
        hypothesis.reject()


def call(case: Case, daemon: Daemon, role: Role | None) -> schemathesis.Response:
    """Send the case with this role's token (None: without one) and run every check. A case
    whose point is a missing or malformed token (schemathesis' negative cases) goes as made."""
    headers = {}
    if role is not None and not case.operation.schema.is_security_param_negated(case):
        headers["Authorization"] = f"Bearer {TOKENS[role]}"
    return case.call_and_validate(
        base_url=daemon.url, headers=headers, checks=CHECKS, timeout=REQUEST_TIMEOUT_S
    )


def caller(response: schemathesis.Response) -> Role | None:
    """The role whose token the request carried (None: none, or not a valid one: schemathesis'
    negative cases drop or change the Authorization header)."""
    sent = response.request.headers.get("Authorization")
    return next((role for role, token in TOKENS.items() if sent == f"Bearer {token}"), None)


def check_access(case: Case, response: schemathesis.Response) -> None:
    """A caller the operation's roles leave out got 401 (no valid token) or 403 (a role not in
    `x-roles`), or a 404/405 when the path matched no route at all."""
    definition: Mapping[str, Any] = case.operation.definition.raw
    role = caller(response)
    if definition.get("security") == [] or role in definition.get("x-roles", []):
        return
    expected = 401 if role is None else 403
    status = response.status_code
    what = f"{role or 'no valid token'}: {case.method} {case.formatted_path} answered {status}"
    assert status in (expected, 404, 405), what
    if status != expected:
        assert response.json()["error"]["code"] in ("not_found", "method_not_allowed"), what


@schema.parametrize()
@settings(SETTINGS, max_examples=EXAMPLES)
def test_admin(case: Case, daemon: Daemon, seeded: Seeded) -> None:
    """The admin may call every operation: only the document's answers, never a 5xx."""
    prepare(case, seeded)
    check_access(case, call(case, daemon, "admin"))


@schema.parametrize()
@settings(SETTINGS, max_examples=OTHER_EXAMPLES)
@pytest.mark.parametrize("role", [r for r in ROLES if r != "admin"] + [None], ids=str)
def test_other_callers(case: Case, role: Role | None, daemon: Daemon, seeded: Seeded) -> None:
    """Each other role and a caller without a token: the document's answers, and 403/401
    wherever the operation's roles leave the caller out."""
    prepare(case, seeded)
    check_access(case, call(case, daemon, role))


def test_served_document_is_fuzzed(daemon: Daemon) -> None:
    """What is fuzzed is what the daemon serves (but for the version)."""
    served = daemon.call("GET", "/api/openapi.json", token=TOKENS["read"])
    assert {**served, "info": SPEC["info"]} == SPEC
