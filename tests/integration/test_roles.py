"""The role table: one declaration per route, obeyed by the middleware, carried by the OpenAPI
document and the docs; maintenance task types are admin's to enqueue by hand."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from config.settings import ROLES, Role, Settings
from controllers.app import create_app, routes_only
from controllers.cli import main
from controllers.keys import BUS, SCHEDULER
from controllers.openapi import access_table, undocumented
from controllers.roles import PUBLIC, RouteAccess, api_path, misdeclared
from engine.handlers import default_registry
from tests.conftest import make_settings
from tests.helpers import Events

Client = TestClient[Any, Any]
TOKENS: dict[str, Role] = {
    "adm-1": "admin",
    "ops-1": "operator",
    "read-1": "read",
    "wrk-1": "worker",
}
TOKEN_OF: dict[Role, str] = {role: token for token, role in TOKENS.items()}
SECURITY_MD = Path(__file__).resolve().parents[2] / "docs" / "security.md"
#: A value for each path parameter that names nothing, so an allowed call has no effect.
PATH_VALUES = {
    "id": "nope-0",
    "path": "nope.txt",
    "version": "nope",
    "ref": "nope",
    "target": "nope",
}


@pytest.fixture
def token_settings(sqlite_url: str, tmp_path: Path) -> Settings:
    return make_settings(sqlite_url, tmp_path, api_tokens=TOKENS)


@pytest.fixture
async def client(aiohttp_client: Any, token_settings: Settings) -> Client:
    c: Client = await aiohttp_client(create_app(token_settings))
    return c


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# ---- the table ----------------------------------------------------------------------------


def test_every_route_declares_who_may_call_it() -> None:
    app = routes_only()
    assert undocumented(app) == []
    rows = access_table(app)
    assert len(rows) == len([r for r in app.router.routes() if r.method != "HEAD"])
    assert misdeclared(rows) == []


def test_misdeclared_routes_are_reported() -> None:
    rows = [
        RouteAccess("GET", "/api/open", "an open API route", PUBLIC),
        RouteAccess("GET", "/guarded", "a guarded route outside /api", frozenset({"admin"})),
        RouteAccess("GET", "/api/nobody", "a route no role may call", frozenset()),
        RouteAccess("GET", "/api/fine", "fine", frozenset({"read"})),
        RouteAccess("GET", "/fine", "fine", PUBLIC),
    ]
    assert misdeclared(rows) == ["GET /api/open", "GET /guarded", "GET /api/nobody"]


def test_policy_invariants() -> None:
    """What the roles mean (docs/operations.md): read only reads, worker only pulls external
    tasks, data sources and deleting are admin's."""
    for row in access_table(routes_only()):
        if row.access == PUBLIC:
            continue
        assert "admin" in row.access, row
        if "read" in row.access:
            assert row.method == "GET", row
        if "worker" in row.access:
            assert row.path.startswith("/api/crontask") or row.access == set(ROLES), row
        if row.path.startswith("/api/sync/data-sources") and row.method != "GET":
            assert row.access == {"admin"}, row
        if row.method == "DELETE":
            assert row.access == {"admin"}, row


def test_docs_role_table_is_the_generated_one(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["roles"]) == 0
    printed = capsys.readouterr().out
    text = SECURITY_MD.read_text()
    found = re.search(r"<!-- roles:begin[^>]*-->\n(.*?)<!-- roles:end -->", text, re.S)
    assert found is not None, "docs/security.md lost its roles:begin/roles:end markers"
    assert found.group(1) == printed, "docs/security.md's role table is stale: `syncd roles`"
    assert (
        "| `POST /api/sync/data-sources` | Define a data source | yes | - | - | - | - |" in printed
    )
    assert "`partnumber_book_retention`, `task_retention`." in printed


def test_maintenance_types_are_flagged_on_the_task_type() -> None:
    flagged = {spec.task_type for spec in default_registry() if spec.maintenance}
    assert flagged == {"task_retention", "partnumber_book_retention"}


# ---- the middleware against the document -----------------------------------------------------


async def test_every_operation_with_every_role(client: Client) -> None:
    """Walk every operation of the served document as each role, without a token and with an
    unknown one; 401/403/other must match what the operation declares (and never a 5xx)."""
    resp = await client.get("/api/openapi.json", headers=bearer("adm-1"))
    assert resp.status == 200
    spec = await resp.json()
    declared = {(r.method.lower(), r.path): r for r in access_table(client.app)}
    walked = 0
    for path, operations in spec["paths"].items():
        for method, op in operations.items():
            row = declared[method, path]
            public = op["security"] == []
            assert public == (row.access == PUBLIC), (method, path)
            if not public:
                assert op["x-roles"] == [r for r in ROLES if r in row.access], (method, path)
            url = path.format(**PATH_VALUES)
            # a body is never valid (nothing is written); the path values name nothing
            body: list[Any] | None = [] if "requestBody" in op else None
            callers: list[tuple[str, dict[str, str]]] = [
                ("no token", {}),
                ("unknown token", bearer("not-a-token")),
                *((role, bearer(TOKEN_OF[role])) for role in ROLES),
            ]
            for caller, headers in callers:
                got = await client.request(method, url, json=body, headers=headers)
                answer = await got.read()
                assert got.status < 500, (method, path, caller, got.status, answer)
                allowed = public or (caller in ROLES and caller in op["x-roles"])
                if allowed:
                    assert got.status not in (401, 403), (method, path, caller, got.status)
                elif caller in ROLES:
                    assert got.status == 403, (method, path, caller, got.status)
                    error = (await got.json())["error"]
                    assert error["code"] == "forbidden" and caller in error["message"]
                else:
                    assert got.status == 401, (method, path, caller, got.status)
                    assert (await got.json())["error"]["code"] == "unauthorized"
                walked += 1
    assert walked == len(declared) * (len(ROLES) + 2)
    tasks = await (await client.get("/api/sync/tasks", headers=bearer("read-1"))).json()
    sources = await (await client.get("/api/sync/data-sources", headers=bearer("read-1"))).json()
    assert tasks["tasks"] == [] and sources["data_sources"] == []  # the walk changed nothing


async def test_unmatched_api_paths_still_need_a_token(client: Client) -> None:
    for method, path, other in [
        ("GET", "/api/nope", 404),
        ("GET", "/api", 404),
        ("POST", "/api/sync/tasks/nope-0/nope", 404),
        ("DELETE", "/api/openapi.json", 405),
        ("PATCH", "/api/sync/tasks/nope-0", 405),
    ]:
        assert api_path(path)
        assert (await client.request(method, path)).status == 401, (method, path)
        unknown = await client.request(method, path, headers=bearer("nope"))
        assert unknown.status == 401, (method, path)
        for role in ROLES:
            got = await client.request(method, path, headers=bearer(TOKEN_OF[role]))
            assert got.status == other, (method, path, role)
    assert (await client.get("/nope")).status == 404  # outside /api nothing needs a token


async def test_a_route_that_declares_nothing_is_admins(
    aiohttp_client: Any, token_settings: Settings
) -> None:
    """Fail closed: an undeclared route (which `undocumented` reports) is admin's only."""
    app = create_app(token_settings)

    async def bare(request: web.Request) -> web.Response:
        return web.Response(text="bare")

    app.router.add_get("/api/bare", bare)
    app.router.add_get("/bare", bare)
    assert undocumented(app) == ["GET /api/bare", "GET /bare"]
    c: Client = await aiohttp_client(app)
    for path in ("/api/bare", "/bare"):
        assert (await c.get(path)).status == 401
        assert (await c.get(path, headers=bearer("ops-1"))).status == 403
        assert (await c.get(path, headers=bearer("adm-1"))).status == 200


async def test_without_tokens_every_caller_is_admin(
    aiohttp_client: Any, settings: Settings
) -> None:
    c: Client = await aiohttp_client(create_app(settings))
    assert await (await c.get("/api/whoami")).json() == {"role": "admin", "auth": False}
    body = {"task_type": "task_retention", "run_after": "2999-01-01T00:00:00Z"}
    assert (await c.post("/api/sync/tasks", json=body)).status == 201


# ---- maintenance task types ----------------------------------------------------------------


@pytest.fixture
def dialect_settings(database_url: str, tmp_path: Path) -> Settings:
    return make_settings(database_url, tmp_path, api_tokens=TOKENS)


@pytest.fixture
async def dialect_client(aiohttp_client: Any, dialect_settings: Settings) -> Client:
    c: Client = await aiohttp_client(create_app(dialect_settings))
    return c


LATER = "2999-01-01T00:00:00Z"


async def call(c: Client, method: str, path: str, token: str, body: Any = None) -> Any:
    resp = await c.request(method, path, json=body, headers=bearer(token))
    return resp.status, await resp.json() if resp.status != 204 else None


async def task_count(c: Client) -> int:
    _, page = await call(c, "GET", "/api/sync/tasks", "read-1")
    return int(page["pagination"]["total"])


def refuses(answer: Any, task_type: str, role: str = "operator") -> bool:
    status, body = answer
    error = body["error"]
    return (
        status == 403
        and error["code"] == "forbidden"
        and task_type in error["message"]
        and repr(role) in error["message"]
        and error["details"]["task_type"] == task_type
    )


async def test_maintenance_types_are_admins_to_enqueue_by_hand(dialect_client: Client) -> None:
    c = dialect_client
    retention = {"task_type": "task_retention", "parameters": {"older_than_days": 1}}
    later = {**retention, "run_after": LATER}
    noop = {"task_type": "noop", "run_after": LATER}

    # create and batch create: refused for operator, and nothing is written
    answer = await call(c, "POST", "/api/sync/tasks", "ops-1", retention)
    assert refuses(answer, "task_retention")
    answer = await call(
        c, "POST", "/api/sync/tasks", "ops-1", {"task_type": "partnumber_book_retention"}
    )
    assert refuses(answer, "partnumber_book_retention")
    answer = await call(c, "POST", "/api/sync/tasks/batch", "ops-1", {"tasks": [noop, later]})
    assert refuses(answer, "task_retention") and answer[1]["error"]["details"]["field"] == (
        "tasks.1.task_type"
    )
    assert await task_count(c) == 0
    # an operator still creates and retries other types
    status, plain = await call(c, "POST", "/api/sync/tasks", "ops-1", noop)
    assert status == 201
    assert (await call(c, "POST", f"/api/sync/tasks/{plain['id']}/cancel", "ops-1"))[0] == 200

    # admin may; a cancelled retention task is what the retries below start from
    status, kept = await call(c, "POST", "/api/sync/tasks", "adm-1", later)
    assert status == 201 and kept["task_type"] == "task_retention"
    assert (await call(c, "POST", "/api/sync/tasks/batch", "adm-1", {"tasks": [noop, later]}))[
        0
    ] == 201
    assert (await call(c, "POST", f"/api/sync/tasks/{kept['id']}/cancel", "adm-1"))[0] == 200
    before = await task_count(c)

    # retry and batch retry: refused for operator before anything is retried
    answer = await call(c, "POST", f"/api/sync/tasks/{kept['id']}/retry", "ops-1")
    assert refuses(answer, "task_retention")
    ids = {"ids": [plain["id"], kept["id"]]}
    answer = await call(c, "POST", "/api/sync/tasks/batch/retry", "ops-1", ids)
    assert refuses(answer, "task_retention") and kept["id"] in answer[1]["error"]["message"]
    assert await task_count(c) == before
    assert (await call(c, "POST", f"/api/sync/tasks/{plain['id']}/retry", "ops-1"))[0] == 201
    status, batch = await call(c, "POST", "/api/sync/tasks/batch/retry", "adm-1", ids)
    assert status == 200 and [r["ok"] for r in batch["results"]] == [True, True]
    status, again = await call(c, "POST", f"/api/sync/tasks/{kept['id']}/retry", "adm-1")
    assert status == 201 and again["task_type"] == "task_retention"

    # a schedule's run now is by hand too
    for job in ("task_retention", "partnumber_book_retention"):
        assert refuses(await call(c, "POST", f"/api/schedules/{job}/run", "ops-1"), job)
    assert (await call(c, "POST", "/api/schedules/partnumber_book_create/run", "ops-1"))[0] == 201
    status, ran = await call(c, "POST", "/api/schedules/task_retention/run", "adm-1")
    assert status == 201 and ran["task_type"] == "task_retention"

    # the scheduler is not a role: its fires of the built-in retention jobs still enqueue
    scheduler = c.app[SCHEDULER]
    events = Events(c.app[BUS])
    jobs = ("task_retention", "partnumber_book_retention")
    for job in jobs:
        record = await scheduler.store.require(job)
        due = replace(record, next_fire_at=datetime.now(UTC) - timedelta(seconds=1))
        await scheduler.store.save(due, create=False)
    scheduler.wake()

    async def fired() -> list[Any]:
        found = [(await scheduler.store.runs(job, 1)) for job in jobs]
        return [runs[0] for runs in found] if all(found) else []

    for task, job in zip(await events.until(fired), jobs, strict=True):
        assert task.task_type == job and task.schedule_id == job
