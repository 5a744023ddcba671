"""JSON in and out of the API, strictly.

In: `loads` takes only what RFC 8259 calls JSON, and only as deep as `MAX_DEPTH`. Python's
`json` module accepts `NaN`, `Infinity` and `-Infinity`, and a number such as `1e999` becomes an
infinite float; neither is JSON, and a stored `NaN` would later be written back as bare `NaN`,
which no JSON client can read. Nesting is bounded before anything recurses over the value (the
parser, pydantic, the encoder of the stored JSON): a body nested a thousand deep raised
RecursionError (a 500) instead of a 400 naming the limit.

Out: `json_response` never writes a non-finite float: a value that holds one (from a source read
before this rule, or computed by a handler) is written with `null` in its place
(`schedule.jsontext`, which the store uses too).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from itertools import chain, compress, repeat, tee
from operator import is_
from typing import Any

import orjson
from aiohttp import web

from schedule.jsontext import dumps

#: How deep arrays and objects may nest in a request body (`[[1]]` is 2 deep). MariaDB's JSON
#: columns take 32 levels at most, so nothing taken here can fail to be stored there.
MAX_DEPTH = 32
_CONTAINERS = frozenset({dict, list})


class JsonRefused(ValueError):
    """The body is not JSON as the API takes it; the message says why."""


def loads(raw: bytes | str) -> Any:
    """Parse a request body; `JsonRefused` says why it is not acceptable JSON."""
    try:
        value = json.loads(raw, parse_constant=_no_constant, parse_float=_finite_float)
    except JsonRefused:
        raise
    except RecursionError:
        raise _too_deep() from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise JsonRefused(f"request body is not valid JSON: {exc}") from None
    if _opening_brackets(raw) > MAX_DEPTH and not depth_within(value, MAX_DEPTH):
        raise _too_deep()
    return value


def _no_constant(name: str) -> Any:
    raise JsonRefused(f"request body is not valid JSON: {name} is not a JSON value")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise JsonRefused(f"request body is not valid JSON: the number {text[:40]} is too large")
    return value


def _too_deep() -> JsonRefused:
    return JsonRefused(f"request body nests arrays and objects deeper than {MAX_DEPTH} levels")


def _opening_brackets(raw: bytes | str) -> int:
    """An upper bound of the nesting depth, counted in C (strings may hold brackets too)."""
    if isinstance(raw, str):
        return raw.count("[") + raw.count("{")
    return raw.count(b"[") + raw.count(b"{")


def depth_within(value: Any, limit: int) -> bool:
    """Whether `value` nests at most `limit` arrays and objects deep.

    Walks level by level without recursion; the per-element work is done by C iterators, so a
    100,000-record import costs about a third of its parse time.
    """
    level = [value] if type(value) in _CONTAINERS else []
    depth = 0
    while level:
        depth += 1
        if depth > limit:
            return False
        objects, arrays = _split(level)
        values = chain(chain.from_iterable(map(dict.values, objects)), chain.from_iterable(arrays))
        level = _containers(values)
    return True


def _split(level: list[Any]) -> tuple[list[dict[Any, Any]], list[list[Any]]]:
    one, two = tee(level)
    objects = list(compress(one, map(is_, map(type, two), repeat(dict))))
    one, two = tee(level)
    arrays = list(compress(one, map(is_, map(type, two), repeat(list))))
    return objects, arrays


def _containers(values: Any) -> list[Any]:
    one, two = tee(values)
    return list(compress(one, map(_CONTAINERS.__contains__, map(type, two))))


def json_response(
    data: Any, *, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    """A JSON answer: every answer that may hold stored values uses it. orjson writes it
    (several times faster than `json` for a task; it writes `null` for a non-finite float,
    as `dumps` does); a value orjson cannot write (an integer beyond 64 bits, which the API's
    parser accepts) goes through `dumps`."""
    try:
        body = orjson.dumps(data)
    except TypeError:  # orjson.JSONEncodeError
        body = dumps(data).encode()
    return web.Response(
        body=body,
        status=status,
        headers=headers,
        content_type="application/json",
        charset="utf-8",
    )
