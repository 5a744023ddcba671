"""Seed 000's routes: partnumber books for QuoteForge and its task polling endpoint."""

from __future__ import annotations

from aiohttp import web

from controllers.auth import caller_role
from controllers.errors import parse, parse_query, read_json
from controllers.jsonio import json_response
from controllers.keys import BOOKS, SERVICE
from controllers.models import (
    BookItemsOut,
    BookItemsQuery,
    BookListOut,
    CreateBookBody,
    Seed000TaskOut,
    SnapshotTaskOut,
    book_item_json,
    book_json,
    pagination_json,
    seed000_task_json,
)
from controllers.openapi import doc
from controllers.roles import OPERATORS, READERS
from schedule.records import Page, TaskRequest

routes = web.RouteTableDef()
BOOKS_PATH = "/api/admin/pricing/partnumber-books"
CREATE_DEDUPE_KEY = "partnumber_book_create@api"


@routes.get("/api/tasks/{id}")
@doc(
    "One task in seed 000's shape (running | completed | error)",
    roles=READERS,
    responses={200: "the task", 404: "no such task"},
    tags=["partnumber books"],
    response=Seed000TaskOut,
)
async def get_task(request: web.Request) -> web.Response:
    """A task in seed 000's shape, for clients that poll it every 500 ms."""
    task = await request.app[SERVICE].find(request.match_info["id"])
    return json_response(seed000_task_json(task))


@routes.get(BOOKS_PATH)
@doc(
    "List partnumber books, newest first, with item counts",
    roles=READERS,
    tags=["partnumber books"],
    response=BookListOut,
)
async def list_books(request: web.Request) -> web.Response:
    """Every book, newest first, with its item count and whether it is the active one."""
    books = await request.app[BOOKS].list_books()
    return json_response({"books": [book_json(b) for b in books]})


@routes.post(BOOKS_PATH)
@doc(
    "Start a partnumber-book snapshot",
    roles=OPERATORS,
    body=CreateBookBody,
    body_required=False,
    responses={200: '{"task_id": ...} of the (possibly already running) snapshot task'},
    response=SnapshotTaskOut,
    tags=["partnumber books"],
)
async def create_book(request: web.Request) -> web.Response:
    """Enqueue a snapshot; a snapshot requested here and not finished yet is reused."""
    body = parse(CreateBookBody, await read_json(request)) if request.can_read_body else None
    task, _ = await request.app[SERVICE].create(
        TaskRequest(
            task_type="partnumber_book_create",
            dedupe_key=CREATE_DEDUPE_KEY,
            priority=body.priority if body else None,
        ),
        role=caller_role(request),
    )
    return json_response({"task_id": task.id})


@routes.get(BOOKS_PATH + "/{version}/items")
@doc(
    "Items of one partnumber book, paged",
    roles=READERS,
    query=BookItemsQuery,
    responses={200: "a page of items", 404: "no such version"},
    response=BookItemsOut,
    tags=["partnumber books"],
)
async def book_items(request: web.Request) -> web.Response:
    """A page of one book's items, optionally for one partnumber."""
    query = parse_query(request, BookItemsQuery)
    store = request.app[BOOKS]
    book = await store.get_book(request.match_info["version"])
    items, total = await store.items(book.id, Page(query.page, query.size), query.partnumber)
    return json_response(
        {
            "book": book_json(book),
            "items": [book_item_json(i) for i in items],
            "pagination": pagination_json(query.page, query.size, total),
        }
    )
