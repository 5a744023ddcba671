"""Data source routes under /api/sync/data-sources: definitions of what syncs read and write.

Secrets in the connection settings (URL passwords, header values, keys that look like
passwords, secrets, tokens or keys) are masked in every answer; a PUT may send the masked
values back unchanged and the stored secrets are kept. A definition is checked against the
`SourcePolicy` of the settings (sync targets, read-only SQL, source directories, egress) and
refused with a 422 naming each field it breaks.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import BaseModel

from controllers.errors import parse_body, validation_error
from controllers.jsonio import json_response
from controllers.keys import DATA_SOURCES, SETTINGS
from controllers.openapi import doc
from controllers.roles import ADMINS, READERS
from engine.datasources import DataSourceBody, SourceId, definition_problems, mask, unmask
from engine.policy import SourcePolicy
from schedule.datasources import DataSourceRecord

routes = web.RouteTableDef()
PATH = "/api/sync/data-sources"


class NewDataSourceBody(DataSourceBody):
    """A data source definition to create: its `id` is required here (a PUT takes it from the
    path), as the document says."""

    id: SourceId


class DataSourceOut(BaseModel):
    """A data source as the API shows it (secrets masked)."""

    id: str
    name: str
    kind: str
    connection: dict[str, Any]
    target_table: str
    key_columns: list[str]
    column_mapping: dict[str, str]
    watermark_column: str | None
    delete_missing: bool
    interfaces: dict[str, dict[str, Any]]
    batch_size: int
    created_at: str
    updated_at: str


class DataSourceListOut(BaseModel):
    """Every data source."""

    data_sources: list[DataSourceOut]


def source_json(source: DataSourceRecord) -> dict[str, Any]:
    """The API shape of a data source, secrets masked."""
    return {
        "id": source.id,
        "name": source.name,
        "kind": source.kind,
        "connection": mask(source.connection),
        "target_table": source.target_table,
        "key_columns": source.key_columns,
        "column_mapping": source.column_mapping,
        "watermark_column": source.watermark_column,
        "delete_missing": source.delete_missing,
        "interfaces": mask(source.interfaces),
        "batch_size": source.batch_size,
        "created_at": _iso(source.created_at),
        "updated_at": _iso(source.updated_at),
    }


def _iso(value: Any) -> str:
    return str(value.isoformat().replace("+00:00", "Z"))


async def _values(request: web.Request, body: DataSourceBody) -> dict[str, Any]:
    """The stored fields of a definition, after every check (422 naming each problem)."""
    policy = SourcePolicy.from_settings(request.app[SETTINGS])
    problems = await definition_problems(body, policy)
    if problems:
        raise validation_error(problems)
    return body.model_dump(exclude={"id"})


@routes.post(PATH)
@doc(
    "Define a data source",
    roles=ADMINS,
    body=NewDataSourceBody,
    responses={201: "the data source (secrets masked)", 409: "the id is taken"},
    tags=["data sources"],
    response=DataSourceOut,
)
async def create_source(request: web.Request) -> web.Response:
    """Store a new definition after the kind-specific checks of its connection."""
    body = await parse_body(request, NewDataSourceBody)
    source = await request.app[DATA_SOURCES].create(body.id, await _values(request, body))
    return json_response(source_json(source), status=201)


@routes.get(PATH)
@doc("List data sources", roles=READERS, tags=["data sources"], response=DataSourceListOut)
async def list_sources(request: web.Request) -> web.Response:
    """Every definition, by id, secrets masked."""
    sources = await request.app[DATA_SOURCES].list()
    return json_response({"data_sources": [source_json(s) for s in sources]})


@routes.get(PATH + "/{id}")
@doc(
    "One data source",
    roles=READERS,
    responses={200: "the data source (secrets masked)", 404: "no such data source"},
    tags=["data sources"],
    response=DataSourceOut,
)
async def get_source(request: web.Request) -> web.Response:
    """One definition, secrets masked."""
    source = await request.app[DATA_SOURCES].require(request.match_info["id"])
    return json_response(source_json(source))


@routes.put(PATH + "/{id}")
@doc(
    "Replace a data source's definition (masked secrets sent back are kept)",
    roles=ADMINS,
    body=DataSourceBody,
    responses={200: "the data source (secrets masked)", 404: "no such data source"},
    tags=["data sources"],
    response=DataSourceOut,
)
async def replace_source(request: web.Request) -> web.Response:
    """Replace every field; `***` values keep what is stored."""
    source_id = request.match_info["id"]
    body = await parse_body(request, DataSourceBody)
    if body.id is not None and body.id != source_id:
        raise validation_error(
            [{"field": "id", "message": f"does not match the path {source_id!r}"}]
        )
    store = request.app[DATA_SOURCES]
    old = await store.require(source_id)
    body = body.model_copy(
        update={
            "connection": unmask(body.connection, old.connection),
            "interfaces": unmask(body.interfaces, old.interfaces),
        }
    )
    source = await store.replace(source_id, await _values(request, body))
    return json_response(source_json(source))


@routes.delete(PATH + "/{id}")
@doc(
    "Delete a data source (and its watermarks)",
    roles=ADMINS,
    responses={204: "deleted", 404: "no such data source"},
    tags=["data sources"],
)
async def delete_source(request: web.Request) -> web.Response:
    """Remove a definition; tasks that name it fail when they run."""
    await request.app[DATA_SOURCES].delete(request.match_info["id"])
    return web.Response(status=204)
