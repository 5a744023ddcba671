"""Reading a JSON API page by page: the `http` kind of data source.

`HttpPager` GETs the configured URL with the caller's `aiohttp.ClientSession`, follows one of
four pagination schemes and yields each page's list of records. Connection errors, timeouts,
429 and 5xx answers are retried with exponential backoff and jitter (tenacity), a bounded
number of times; other 4xx answers and malformed pages fail at once, since retrying cannot fix
them. Error messages name the page and its URL with credentials masked, as they end up in the
task's stored error.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Literal

import aiohttp
from pydantic import BaseModel, ConfigDict, Field, field_validator
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)
from yarl import URL

from engine.sources.egress import refusal_of
from engine.sources.exceptions import (
    HttpStatusError,
    MalformedPageError,
    SourceError,
    SourceUnavailableError,
)

logger = logging.getLogger(__name__)

Item = dict[str, object]

RETRY_STATUSES = frozenset({408, 429})
"""4xx answers that mean "not now" rather than "never": retried like 5xx."""
PARSE_IN_THREAD_BYTES = 1 << 20
"""Bodies larger than this are decoded in a worker thread, to keep the event loop responsive."""
SECRET_NAME = re.compile(r"token|key|secret|pass|auth|sig|session|cookie|credential", re.I)
"""Header and query parameter names whose values are masked in messages and in `redacted()`."""
MASK = "***"
_PLAIN_HEADERS = frozenset({"accept", "accept-language", "content-type", "user-agent"})


# --- configuration -----------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NoPagination(_Strict):
    """One request; the response holds every record."""

    mode: Literal["none"] = "none"


class PagePagination(_Strict):
    """Numbered pages: `?page=1&size=100`, then 2, 3, ...

    Stops at an empty page, or at a page shorter than `size` when `stop_on_short_page` (turn
    that off for an API that may cap the page size below the one asked for, lest it stop after
    the first page).
    """

    mode: Literal["page"]
    page_param: str = "page"
    size_param: str | None = "size"
    size: int = Field(100, ge=1)
    start: int = 1
    stop_on_short_page: bool = True


class CursorPagination(_Strict):
    """Opaque cursors: the response names the next cursor, sent back as `?cursor=...`; a null,
    empty or missing cursor ends the listing."""

    mode: Literal["cursor"]
    cursor_param: str = "cursor"
    next_cursor_path: str = "next"


class LinkPagination(_Strict):
    """The response holds the next page's URL (absolute or relative) at `next_url_path`, or,
    when that is null, in the `Link: <...>; rel="next"` header. Links to another origin are
    refused, since the request headers may carry credentials."""

    mode: Literal["link"]
    next_url_path: str | None = "next"


Pagination = Annotated[
    NoPagination | PagePagination | CursorPagination | LinkPagination,
    Field(discriminator="mode"),
]


class HttpSourceConfig(_Strict):
    """Connection settings of an `http` data source (its `connection` object)."""

    url: str
    headers: dict[str, str] = Field(default_factory=dict)
    params: dict[str, str | int | float] = Field(default_factory=dict)
    items_path: str = ""
    """Dotted path to the list of records in each response ("data.items"); "" = the body."""
    pagination: Pagination = Field(default_factory=NoPagination)
    timeout_s: float = Field(30.0, gt=0, le=3600)
    """Limit on each request, from connecting to reading the whole body."""
    max_retries: int = Field(5, ge=0, le=20)
    """Retries after the first attempt of a request, so up to `max_retries + 1` attempts."""
    retry_wait_s: float = Field(1.0, ge=0, le=600)
    """Backoff base: the n-th wait is `retry_wait_s * 2**(n-1)`, at most `retry_max_wait_s`,
    plus a random jitter of up to `retry_wait_s`."""
    retry_max_wait_s: float = Field(30.0, ge=0, le=3600)
    max_pages: int = Field(100_000, ge=1)
    """Safety bound: a listing longer than this fails rather than being cut short silently."""

    @field_validator("url")
    @classmethod
    def _absolute_http_url(cls, value: str) -> str:
        try:
            url = URL(value)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"not a URL: {exc}") from None
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError("must be an absolute http:// or https:// URL")
        return value

    def redacted(self) -> dict[str, object]:
        """This configuration as JSON data, fit to show: header values (but a few harmless
        ones) and secret-looking query parameters masked, URL credentials removed."""
        data = self.model_dump(mode="json")
        data["url"] = redact_url(URL(self.url))
        data["headers"] = {
            name: value if name.lower() in _PLAIN_HEADERS else MASK
            for name, value in self.headers.items()
        }
        data["params"] = {
            name: MASK if SECRET_NAME.search(name) else value for name, value in self.params.items()
        }
        return data


def redact_url(url: URL) -> str:
    """The URL without user and password, secret-looking query values masked."""
    if url.user is not None or url.password is not None:
        url = url.with_user(None)
    if any(SECRET_NAME.search(name) for name in url.query):
        url = url.with_query(
            [(k, MASK if SECRET_NAME.search(k) else v) for k, v in url.query.items()]
        )
    return str(url)


# --- the pager ---------------------------------------------------------------------------------


class _TransientError(Exception):
    """A failure that another attempt may not see: connection error, timeout, 429 or 5xx."""


@dataclass(frozen=True)
class _Response:
    raw: bytes
    link_next: str | None


class HttpPager:
    """Yields the records of a JSON API, one page (a list of objects) at a time.

    The session belongs to the caller (it holds the connection pool and may be shared); the
    pager only makes GET requests with the configured headers. `requests_made` and
    `pages_read` count what was done, for progress messages and tests.
    """

    def __init__(self, config: HttpSourceConfig, session: aiohttp.ClientSession) -> None:
        self.config = config
        self.session = session
        self.requests_made = 0
        self.pages_read = 0

    async def pages(self) -> AsyncIterator[list[Item]]:
        """Each non-empty page's records, in order, until the pagination ends.

        Raises `HttpStatusError` (a 4xx answer), `MalformedPageError` (a page that is not JSON
        or not shaped as configured), `SourceUnavailableError` (retries used up) or
        `SourceError` (more than `max_pages` pages, a cursor or link that loops or leaves the
        origin).
        """
        pagination = self.config.pagination
        base = URL(self.config.url).update_query(self.config.params)
        if isinstance(pagination, PagePagination):
            walk = self._walk_pages(base, pagination)
        elif isinstance(pagination, CursorPagination):
            walk = self._walk_cursor(base, pagination)
        elif isinstance(pagination, LinkPagination):
            walk = self._walk_links(base, pagination)
        else:
            walk = self._walk_single(base)
        async for items in walk:
            if items:
                self.pages_read += 1
                yield items

    async def _walk_single(self, url: URL) -> AsyncIterator[list[Item]]:
        body, _ = await self._get_json(url, 1)
        yield self._items(body, url, 1)

    async def _walk_pages(self, base: URL, how: PagePagination) -> AsyncIterator[list[Item]]:
        for number in range(1, self.config.max_pages + 2):
            query: dict[str, str | int] = {how.page_param: how.start + number - 1}
            if how.size_param:
                query[how.size_param] = how.size
            url = base.update_query(query)
            body, _ = await self._get_json(url, number)
            items = self._items(body, url, number)
            yield items
            short = how.stop_on_short_page and how.size_param and len(items) < how.size
            if not items or short:
                return

    async def _walk_cursor(self, base: URL, how: CursorPagination) -> AsyncIterator[list[Item]]:
        url, seen = base, set[str]()
        for number in range(1, self.config.max_pages + 2):
            body, _ = await self._get_json(url, number)
            yield self._items(body, url, number)
            cursor = _dig(body, how.next_cursor_path)
            if cursor is None or cursor == "":
                return
            if not isinstance(cursor, str | int) or isinstance(cursor, bool):
                reason = f"next cursor {how.next_cursor_path!r} is {_json_type(cursor)}"
                raise MalformedPageError(redact_url(url), number, reason)
            if str(cursor) in seen:
                raise SourceError(f"{redact_url(url)}: cursor {cursor!r} came back; stopped")
            seen.add(str(cursor))
            url = base.update_query({how.cursor_param: str(cursor)})

    async def _walk_links(self, base: URL, how: LinkPagination) -> AsyncIterator[list[Item]]:
        url, seen = base, {base}
        for number in range(1, self.config.max_pages + 2):
            body, link_header = await self._get_json(url, number)
            yield self._items(body, url, number)
            link = _dig(body, how.next_url_path) if how.next_url_path else link_header
            if link is None or link == "":
                return
            if not isinstance(link, str):
                reason = f"next link {how.next_url_path!r} is {_json_type(link)}"
                raise MalformedPageError(redact_url(url), number, reason)
            url = self._follow(url, link, number)
            if url in seen:
                raise SourceError(f"{redact_url(url)}: next link points back; stopped")
            seen.add(url)

    def _follow(self, current: URL, link: str, number: int) -> URL:
        """The next page's URL; refused when it leaves the origin of the configured URL."""
        try:
            target = current.join(URL(link))
        except (ValueError, TypeError) as exc:
            raise MalformedPageError(redact_url(current), number, f"bad next link: {exc}") from None
        if target.origin() != URL(self.config.url).origin():
            raise SourceError(
                f"page {number} ({redact_url(current)}): next link {redact_url(target)} leaves"
                f" {URL(self.config.url).origin()}; refused"
            )
        return target

    async def _get_json(self, url: URL, number: int) -> tuple[object, str | None]:
        """GET one page (retrying transient failures) and decode its JSON body."""
        if number > self.config.max_pages:
            raise SourceError(
                f"{redact_url(URL(self.config.url))}: more than max_pages={self.config.max_pages}"
                " pages; raise max_pages if the source really is that long"
            )
        response = await self._get(url)
        if not response.raw.strip():
            raise MalformedPageError(redact_url(url), number, "empty response, not JSON")
        try:
            if len(response.raw) > PARSE_IN_THREAD_BYTES:
                body = await asyncio.to_thread(json.loads, response.raw)
            else:
                body = json.loads(response.raw)
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
            start = response.raw[:60].decode("utf-8", "replace")
            reason = f"not JSON ({exc}); it starts {start!r}"
            raise MalformedPageError(redact_url(url), number, reason) from None
        return body, response.link_next

    async def _get(self, url: URL) -> _Response:
        """One GET, with up to `max_retries` retries of transient failures."""
        attempts = self.config.max_retries + 1
        retrying = AsyncRetrying(
            stop=stop_after_attempt(attempts),
            wait=wait_exponential(
                multiplier=self.config.retry_wait_s, max=self.config.retry_max_wait_s
            )
            + wait_random(0, self.config.retry_wait_s),
            retry=retry_if_exception_type(_TransientError),
            before_sleep=functools.partial(self._log_retry, url),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await self._get_once(url)
        except _TransientError as exc:
            raise SourceUnavailableError(redact_url(url), attempts, str(exc)) from exc
        raise AssertionError("tenacity ended without a result or an error")  # pragma: no cover

    async def _get_once(self, url: URL) -> _Response:
        self.requests_made += 1
        timeout = aiohttp.ClientTimeout(total=self.config.timeout_s)
        try:
            async with self.session.get(
                url, headers=self.config.headers, timeout=timeout, raise_for_status=False
            ) as response:
                status = response.status
                if status >= 500 or status in RETRY_STATUSES:
                    raise _TransientError(f"HTTP {status} {response.reason or ''}".rstrip())
                if status >= 400:
                    text = (await response.content.read(300)).decode("utf-8", "replace")
                    raise HttpStatusError(redact_url(url), status, " ".join(text.split())[:200])
                raw = await response.read()
                link = response.links.get("next")
                link_next = str(link["url"]) if link is not None and "url" in link else None
                return _Response(raw, link_next)
        except aiohttp.InvalidURL as exc:
            raise SourceError(f"{redact_url(url)}: invalid URL ({exc})") from None
        except aiohttp.TooManyRedirects as exc:
            raise SourceError(f"{redact_url(url)}: too many redirects ({exc})") from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            refused = refusal_of(exc)
            if refused is not None:  # the egress policy: retrying cannot change it
                raise SourceError(f"GET {redact_url(url)}: {refused}") from None
            raise _TransientError(_describe(exc)) from exc

    def _log_retry(self, url: URL, state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        wait = state.next_action.sleep if state.next_action is not None else 0.0
        logger.warning(
            "GET failed (%s); retrying in %.2fs",
            error,
            wait,
            extra={
                "action": "http_retry",
                "url": redact_url(url),
                "attempt": state.attempt_number,
            },
        )

    def _items(self, body: object, url: URL, number: int) -> list[Item]:
        """The list of records at `items_path`, checked to be a list of objects."""
        path = self.config.items_path
        try:
            value = _dig(body, path, strict=True)
        except LookupError as exc:
            raise MalformedPageError(redact_url(url), number, str(exc)) from None
        where = repr(path) if path else "the body"
        if not isinstance(value, list):
            reason = f"{where} is {_json_type(value)}, not a list"
            raise MalformedPageError(redact_url(url), number, reason)
        for index, item in enumerate(value):
            if not isinstance(item, dict):
                reason = f"item {index} of {where} is {_json_type(item)}, not an object"
                raise MalformedPageError(redact_url(url), number, reason)
        return value


def _dig(body: object, path: str, *, strict: bool = False) -> object:
    """The value at a dotted path ("data.items", "pages.0.next"); "" is the body itself.

    A missing step gives None, or raises `LookupError` naming it when `strict`.
    """
    value = body
    if not path:
        return value
    for step in path.split("."):
        if isinstance(value, dict) and step in value:
            value = value[step]
        elif isinstance(value, list) and step.isdigit() and int(step) < len(value):
            value = value[int(step)]
        elif strict:
            raise LookupError(f"no {path!r} in the response ({step!r} is missing)")
        else:
            return None
    return value


def _json_type(value: object) -> str:
    """How a JSON value is called in messages: "an object", "a string", "null"..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    names = {dict: "an object", list: "an array", str: "a string", int: "a number"}
    return names.get(type(value), "a number" if isinstance(value, float) else type(value).__name__)


def _describe(exc: BaseException) -> str:
    """`ExceptionName: message`, on one line."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
