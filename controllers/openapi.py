"""The OpenAPI 3.1 document at `/api/openapi.json`, built from the app's own router.

Every route handler carries its documentation next to it (`@doc(...)`: a summary, who may call
it, the pydantic models it validates its body and query with, its answers). `build_spec` walks
`app.router`, so a route added anywhere is in the document; one without `@doc` is listed by
`undocumented` (a test fails on it) and still appears, marked as undocumented. Schemas come from
the very models the handlers parse with (`model_json_schema`), so the document cannot drift from
the validation. The declared roles are each operation's `x-roles` (see `controllers.roles`).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel

from config.settings import ROLES
from controllers.roles import ANY_ROLE, PUBLIC, UNDECLARED, Access, RouteAccess

F = TypeVar("F", bound=Callable[..., Any])
ATTR = "__syncd_openapi__"
REF = "#/components/schemas/{model}"
_PARAM = re.compile(r"\{([^}:]+)(?::[^}]*)?\}")

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "details": {},
            },
        }
    },
}


@dataclass(frozen=True)
class RouteDoc:
    """What the document says about one route, and who may call it (`roles`)."""

    summary: str
    roles: Access
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    responses: Mapping[int, str] = field(default_factory=lambda: {200: "OK"})
    tags: tuple[str, ...] = ()
    content_type: str = "application/json"
    response: type[BaseModel] | None = None
    body_required: bool = True
    body_content_type: str = "application/json"

    @property
    def public(self) -> bool:
        """True when the route needs no bearer token."""
        return self.roles == PUBLIC


def doc(
    summary: str,
    *,
    roles: Access,
    body: type[BaseModel] | None = None,
    query: type[BaseModel] | None = None,
    responses: Mapping[int, str] | None = None,
    tags: list[str] | tuple[str, ...] = (),
    content_type: str = "application/json",
    response: type[BaseModel] | None = None,
    body_required: bool = True,
    body_content_type: str = "application/json",
) -> Callable[[F], F]:
    """Attach OpenAPI metadata to a route handler (put it under the `@routes.<method>`).

    `roles` is who may call it: `controllers.roles.PUBLIC` (no token; only outside `/api`) or
    the roles whose tokens may. `body`/`query` are the models the handler parses with;
    `response` the model of its 2xx JSON answers (other than 204), when there is one;
    `body_required=False` for a route that also takes no body at all; `body_content_type` for
    a body that is not JSON (an upload: `multipart/form-data`, `body` naming its parts).
    """
    meta = RouteDoc(
        summary=summary,
        roles=roles,
        body=body,
        query=query,
        responses=dict(responses or {200: "OK"}),
        tags=tuple(tags),
        content_type=content_type,
        response=response,
        body_required=body_required,
        body_content_type=body_content_type,
    )

    def mark(handler: F) -> F:
        setattr(handler, ATTR, meta)
        return handler

    return mark


def route_doc(route: web.AbstractRoute) -> RouteDoc | None:
    """The metadata of a route: its handler's `@doc`, or a generic entry for static files."""
    if isinstance(route.resource, web.StaticResource):
        return RouteDoc(
            "A static file (dashboard)",
            roles=PUBLIC,
            responses={200: "the file", 404: "no such file"},
            content_type="*/*",
        )
    found = getattr(route.handler, ATTR, None)
    return found if isinstance(found, RouteDoc) else None


def _routes(app: web.Application) -> Iterator[tuple[str, str, web.AbstractRoute]]:
    """(method, OpenAPI path, route) of every route; HEAD twins of GET routes are skipped."""
    for route in app.router.routes():
        if route.method == "HEAD" or route.resource is None:
            continue
        path = _PARAM.sub(r"{\1}", route.resource.canonical)
        if isinstance(route.resource, web.StaticResource):
            path = path.rstrip("/") + "/{filename}"
        yield route.method.lower(), path, route


def undocumented(app: web.Application) -> list[str]:
    """`METHOD path` of every route without metadata (should be empty)."""
    return [f"{m.upper()} {p}" for m, p, r in _routes(app) if route_doc(r) is None]


def access_table(app: web.Application) -> list[RouteAccess]:
    """Who may call each documented route: the rows of docs/security.md's role table."""
    return [
        RouteAccess(m.upper(), p, meta.summary, meta.roles)
        for m, p, r in _routes(app)
        if (meta := route_doc(r)) is not None
    ]


def build_spec(app: web.Application, version: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document of every route of `app`."""
    schemas: dict[str, Any] = {"Error": ERROR_SCHEMA}
    paths: dict[str, dict[str, Any]] = {}
    for method, path, route in _routes(app):
        meta = route_doc(route) or RouteDoc("Undocumented route", roles=UNDECLARED)
        paths.setdefault(path, {})[method] = _operation(method, path, meta, schemas)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "syncd",
            "version": version,
            "description": "Sync-engine daemon: durable task queue, worker pool and HTTP API.",
        },
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": dict(sorted(schemas.items())),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def _operation(method: str, path: str, meta: RouteDoc, schemas: dict[str, Any]) -> dict[str, Any]:
    operation_id = method + "_" + re.sub(r"[^A-Za-z0-9]+", "_", path).strip("_")
    op: dict[str, Any] = {"summary": meta.summary, "operationId": operation_id}
    if meta.tags:
        op["tags"] = list(meta.tags)
    params = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in _PARAM.findall(path)
    ]
    if meta.query is not None:
        params.extend(_query_params(meta.query, schemas))
    if params:
        op["parameters"] = params
    if meta.body is not None:
        op["requestBody"] = {
            "required": meta.body_required,
            "content": {meta.body_content_type: {"schema": _schema_ref(meta.body, schemas)}},
        }
    answer = _schema_ref(meta.response, schemas) if meta.response is not None else {}
    op["responses"] = _responses(meta, path, answer, with_body=meta.body is not None)
    if meta.public:
        op["security"] = []
    else:
        op["security"] = [{"bearer": []}]
        op["x-roles"] = [role for role in ROLES if role in meta.roles]
    return op


def _responses(
    meta: RouteDoc, path: str, answer: dict[str, Any], *, with_body: bool
) -> dict[str, Any]:
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    out: dict[str, Any] = {}
    for status, description in sorted(meta.responses.items()):
        entry: dict[str, Any] = {"description": description}
        if status >= 400:
            entry["content"] = error
        elif status != 204:
            entry["content"] = {meta.content_type: {"schema": answer}}
        out[str(status)] = entry
    defaults: dict[int, str] = {}
    if with_body and meta.body_content_type == "application/json":
        defaults[400] = (
            "the body is not JSON (NaN and Infinity are not; nesting deeper than 32 levels)"
        )
    elif with_body:
        defaults[400] = f"the body is not well-formed {meta.body_content_type}"
    if with_body:
        defaults[422] = "a field is invalid (named in details)"
    if meta.query is not None:
        defaults[422] = "a field is invalid (named in details)"
    if not meta.public:
        defaults[401] = "no, a malformed or an unknown bearer token"
        if meta.roles != ANY_ROLE:
            defaults[403] = "the token's role may not call this (see x-roles)"
        defaults |= {
            503: "the database cannot be reached, or did not answer within SYNCD_DB_TIMEOUT_S",
            507: "the database or its disk is full; nothing was written",
        }
    for status, description in defaults.items():
        out.setdefault(str(status), {"description": description, "content": error})
    return out


def _schema_ref(model: type[BaseModel], schemas: dict[str, Any]) -> dict[str, Any]:
    schema = model.model_json_schema(ref_template=REF)
    schemas.update(schema.pop("$defs", {}))
    schemas[model.__name__] = schema
    return {"$ref": REF.format(model=model.__name__)}


def _query_params(model: type[BaseModel], schemas: dict[str, Any]) -> list[dict[str, Any]]:
    schema = model.model_json_schema(ref_template=REF)
    schemas.update(schema.pop("$defs", {}))
    required = set(schema.get("required", []))
    return [
        {
            "name": name,
            "in": "query",
            "required": name in required,
            "schema": prop,
            **({"description": prop["description"]} if "description" in prop else {}),
        }
        for name, prop in schema.get("properties", {}).items()
    ]


routes = web.RouteTableDef()


@routes.get("/api/openapi.json")
@doc(
    "This OpenAPI document",
    roles=ANY_ROLE,
    responses={200: "the OpenAPI 3.1 document"},
    tags=["meta"],
)
async def openapi_json(request: web.Request) -> web.Response:
    """Serve the document, built from the app's router."""
    return web.json_response(build_spec(request.app, await asyncio.to_thread(_version)))


def _version() -> str:
    """The installed syncd version (reads package metadata from disk)."""
    try:
        return version("syncd")
    except PackageNotFoundError:  # running from a source tree
        return "0+unknown"
