"""Import routes: stock workbook uploads (seed 000), record imports (seed 002) and the generic
`POST /api/imports/{target}`. Validation and shaping only: the work is the tasks'."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, BinaryIO

from aiohttp import BodyPartReader, MultipartReader, web
from aiohttp.http_exceptions import BadHttpMessage
from pydantic import BaseModel, ConfigDict, Field

from controllers.auth import caller_role
from controllers.errors import ApiError, parse_json, parse_query, validation_error
from controllers.jsonio import json_response
from controllers.keys import IMPORT_FILES, SERVICE, SETTINGS
from controllers.models import TaskOut, UploadQuery, task_json
from controllers.openapi import doc
from controllers.roles import OPERATORS, READERS
from engine.sources.exceptions import (
    ACCEPTED_UPLOAD_FORMATS,
    SheetError,
    UnpackLimitError,
    UnsupportedFormatError,
)
from engine.sources.sheets import XLSX_MAGIC, sniff_upload
from engine.sources.workbook import UnpackLimits, check_file
from engine.targets import TARGETS, get_target
from engine.uploads import PARSED, ImportFiles
from schedule.records import Page, TaskRequest
from schedule.task import TaskRecord, TaskStatus

routes = web.RouteTableDef()
CHUNK = 256 * 1024
WRITE_BUFFER = 1024 * 1024
PARSE_IN_THREAD_BYTES = 256 * 1024
SEED002_STATUS = {
    TaskStatus.PENDING: "IN_PROGRESS",
    TaskStatus.RUNNING: "IN_PROGRESS",
    TaskStatus.COMPLETED: "COMPLETED",
    TaskStatus.FAILED: "FAILED",
    TaskStatus.CANCELLED: "FAILED",
}


class ImportBody(BaseModel):
    """`{"data": [...]}`: the records to import; each is validated by the task, one by one."""

    model_config = ConfigDict(extra="forbid")

    data: list[Any]


class StatusQuery(BaseModel):
    """How many rejected records `errors` lists at most."""

    model_config = ConfigDict(extra="forbid")

    errors_limit: int = Field(1000, ge=0, le=10_000)


class Seed002Accepted(BaseModel):
    """Seed 002's answer to an import request."""

    task_reference: str
    status: str


class Seed002Status(BaseModel):
    """Seed 002's status answer; `imported_records` and `errors` once the task ended."""

    task_reference: str
    status: str
    progress: str
    imported_records: int | None = None
    errors: list[Any] | None = None
    error: str | None = None


# ---- stock workbook upload ------------------------------------------------------------------


class StockUpload(BaseModel):
    """The parts of a stock upload (multipart/form-data); parts with other names are skipped."""

    file: bytes = Field(description="the .xlsx workbook")


@routes.post("/api/imports/stock")
@doc(
    "Upload a stock .xlsx (multipart/form-data, field `file`) and start its import",
    roles=OPERATORS,
    query=UploadQuery,
    body=StockUpload,
    body_content_type="multipart/form-data",
    responses={
        202: "the stock_import task",
        400: "a malformed multipart body, or one cut short (no closing boundary)",
        413: "larger than SYNCD_MAX_UPLOAD_MB, or unpacking beyond SYNCD_XLSX_MAX_UNPACKED_MB"
        " or SYNCD_XLSX_MAX_PART_MB (the message names the part)",
        415: "not an .xlsx workbook (the message lists the accepted formats)",
        422: "no `file` field; a workbook that is not a readable zip, compressed beyond"
        " SYNCD_XLSX_MAX_RATIO or with more members than SYNCD_XLSX_MAX_MEMBERS",
    },
    tags=["imports"],
    response=TaskOut,
)
async def upload_stock(request: web.Request) -> web.Response:
    """Stream the workbook to the state directory, check how far it unpacks, then enqueue
    `stock_import`."""
    query = parse_query(request, UploadQuery)
    files = request.app[IMPORT_FILES]
    settings = request.app[SETTINGS]
    limit = settings.max_upload_mb * 1024 * 1024
    if request.content_length is not None and request.content_length > limit + CHUNK:
        raise _too_large(limit)
    reader, part = await _file_part(request)
    filename = part.filename or ""
    name = ImportFiles.new_name("xlsx")
    path = files.path(name)
    await _store_part(part, path, filename, limit, files)
    try:
        await _read_to_the_end(reader)
        await _check_workbook(path, filename, UnpackLimits.from_settings(settings))
        task, _ = await request.app[SERVICE].create(
            TaskRequest(
                task_type="stock_import",
                parameters={"file": name, "filename": filename},
                priority=query.priority,
            ),
            role=caller_role(request),
        )
    except BaseException:
        await files.remove(name)
        raise
    return json_response(task_json(task), status=202)


async def _file_part(request: web.Request) -> tuple[MultipartReader, BodyPartReader]:
    """The multipart reader and its part named `file` (other fields are skipped)."""
    try:
        reader = await request.multipart()
    except (ValueError, AssertionError, KeyError) as exc:
        raise ApiError(
            415,
            "unsupported_media_type",
            f"send multipart/form-data with the workbook in a `file` field ({exc});"
            f" {ACCEPTED_UPLOAD_FORMATS}",
        ) from None
    while True:
        try:
            part = await reader.next()
        except (ValueError, AssertionError, BadHttpMessage) as exc:
            raise _malformed(exc) from None
        if part is None:
            raise validation_error([{"field": "file", "message": "no `file` part in the upload"}])
        if isinstance(part, BodyPartReader) and part.name == "file":
            return reader, part
        try:
            await part.release()  # reads the skipped part up to its boundary
        except (ValueError, AssertionError, BadHttpMessage) as exc:
            raise _malformed(exc) from None


async def _read_to_the_end(reader: MultipartReader) -> None:
    """Skip the parts after `file` up to the closing boundary; a body that stops before it
    (cut short on the way: the file may be too) is a 400."""
    try:
        while (part := await reader.next()) is not None:
            await part.release()
    except (ValueError, AssertionError, BadHttpMessage) as exc:
        raise ApiError(
            400,
            "invalid_multipart",
            f"the multipart body ends before its closing boundary (cut short?): {exc}",
        ) from None


async def _check_workbook(path: Path, filename: str, limits: UnpackLimits) -> None:
    """How far the stored workbook unpacks, from its zip directory: 413 past a size limit,
    422 for a bomb-like ratio, too many members or a file that is not a readable zip."""
    try:
        await asyncio.to_thread(check_file, path, limits, filename or "the upload")
    except UnpackLimitError as exc:
        details = [{"field": "file", "message": problem} for problem in exc.problems]
        if exc.too_large:
            raise ApiError(413, "too_large", str(exc), details) from None
        raise validation_error(details) from None
    except SheetError as exc:
        raise validation_error([{"field": "file", "message": str(exc)}]) from None


async def _store_part(
    part: BodyPartReader, path: Path, filename: str, limit: int, files: ImportFiles
) -> None:
    """Write the part to `path` in chunks, checking its type first and its size throughout."""
    head = b""
    while len(head) < len(XLSX_MAGIC):
        chunk = await _read_chunk(part)
        if not chunk:
            break
        head += chunk
    try:
        sniff_upload(head, filename)
    except UnsupportedFormatError as exc:
        raise ApiError(415, "unsupported_media_type", str(exc)) from None
    await asyncio.to_thread(files.ensure_root)
    stream: BinaryIO = await asyncio.to_thread(path.open, "wb")
    written, buffer, ok = 0, bytearray(head), False
    try:
        while True:
            chunk = await _read_chunk(part)
            buffer += chunk
            if written + len(buffer) > limit:
                raise _too_large(limit)
            if len(buffer) >= WRITE_BUFFER or (not chunk and buffer):
                await asyncio.to_thread(stream.write, bytes(buffer))
                written += len(buffer)
                buffer.clear()
            if not chunk:
                break
        ok = True
    finally:
        await asyncio.to_thread(stream.close)
        if not ok:
            await files.remove(path.name)


async def _read_chunk(part: BodyPartReader) -> bytes:
    """The next chunk of the part; the client going away mid-upload is its fault (400), not
    the database's (aiohttp reports it as a connection error)."""
    try:
        return await part.read_chunk(CHUNK)
    except ConnectionError as exc:
        raise ApiError(
            400, "invalid_multipart", f"the upload stopped before its end ({exc})"
        ) from None


def _malformed(exc: Exception) -> ApiError:
    """A 400 for a multipart body aiohttp cannot split into parts (a part's headers that are not
    HTTP headers arrive as `BadHttpMessage`, which is neither a ValueError nor a 4xx by itself)."""
    reason = exc.message if isinstance(exc, BadHttpMessage) else str(exc)
    return ApiError(400, "invalid_multipart", f"malformed multipart body: {reason}")


def _too_large(limit: int) -> ApiError:
    mb = limit // (1024 * 1024)
    return ApiError(413, "too_large", f"the upload is larger than SYNCD_MAX_UPLOAD_MB={mb} MB")


# ---- record imports -------------------------------------------------------------------------


async def _read_import_body(request: web.Request) -> tuple[bytes, list[Any]]:
    """The raw body, checked to be `{"data": [...]}` (400 when not JSON, 422 otherwise), and
    its parsed `data`."""
    raw = await request.read()
    if len(raw) > PARSE_IN_THREAD_BYTES:
        body = await asyncio.to_thread(parse_json, raw)
    else:
        body = parse_json(raw)
    if not isinstance(body, dict):
        raise validation_error([{"field": "body", "message": 'must be an object {"data": [...]}'}])
    extra = sorted(set(body) - {"data"})
    problems = [{"field": k, "message": "Extra inputs are not permitted"} for k in extra]
    if "data" not in body:
        problems.insert(0, {"field": "data", "message": "Field required"})
    elif not isinstance(body["data"], list):
        problems.insert(0, {"field": "data", "message": "Input should be a valid list"})
    if problems:
        raise validation_error(problems)
    return raw, body["data"]


async def _start_import(request: web.Request, target: str) -> TaskRecord:
    """Store the payload, hand its parsed records to the task, enqueue `records_import`."""
    raw, data = await _read_import_body(request)
    files = request.app[IMPORT_FILES]
    name = ImportFiles.new_name("json")
    await files.write(name, raw)
    PARSED.keep(name, data, len(raw))
    try:
        task, _ = await request.app[SERVICE].create(
            TaskRequest(task_type="records_import", parameters={"target": target, "file": name}),
            role=caller_role(request),
        )
    except BaseException:
        await files.remove(name)
        raise
    return task


@routes.post("/api/tools/import")
@doc(
    "Seed 002: import tools records in the background",
    roles=OPERATORS,
    body=ImportBody,
    responses={202: '`{"task_reference", "status": "IN_PROGRESS"}`'},
    tags=["imports"],
    response=Seed002Accepted,
)
async def import_tools(request: web.Request) -> web.Response:
    """Validate the envelope, store the records and answer with the task's reference."""
    task = await _start_import(request, "tools")
    return json_response({"task_reference": task.reference, "status": "IN_PROGRESS"}, status=202)


@routes.get("/api/tools/import/status/{ref}")
@doc(
    "Seed 002: status of a records import",
    roles=READERS,
    query=StatusQuery,
    responses={
        200: "status, progress, and once ended imported_records and errors",
        404: "no such import",
    },
    tags=["imports"],
    response=Seed002Status,
)
async def import_status(request: web.Request) -> web.Response:
    """The task in seed 002's shape; `errors` are the rejected records as they were sent."""
    query = parse_query(request, StatusQuery)
    service = request.app[SERVICE]
    task = await service.find(request.match_info["ref"])
    if task.task_type != "records_import":
        raise ApiError(404, "not_found", f"{request.match_info['ref']} is not a records import")
    body: dict[str, Any] = {
        "task_reference": task.reference,
        "status": SEED002_STATUS[task.status],
        "progress": f"{100 if task.status.finished else task.progress}%",
    }
    if task.status.finished:
        result = task.result or {}
        body["imported_records"] = int(result.get("imported", 0))
        found = await service.errors(task.id, Page(1, max(query.errors_limit, 1)))
        body["errors"] = [e.record for e in found.errors][: query.errors_limit]
        if task.status is not TaskStatus.COMPLETED:
            body["error"] = task.error or task.status.value
    return json_response(body)


@routes.post("/api/imports/{target}")
@doc(
    "Import records into a declared target (`tools`, ...) in the background",
    roles=OPERATORS,
    body=ImportBody,
    responses={202: "the records_import task", 404: "no such target"},
    tags=["imports"],
    response=TaskOut,
)
async def import_records(request: web.Request) -> web.Response:
    """Like seed 002's import, for any target declared in `engine.targets`."""
    target = request.match_info["target"]
    if get_target(target) is None:
        known = ", ".join(sorted(TARGETS))
        raise ApiError(404, "not_found", f"no import target {target!r}; targets: {known}, stock")
    task = await _start_import(request, target)
    return json_response(task_json(task), status=202)
