"""JSON text that is JSON: no `NaN`, `Infinity` or `-Infinity`.

Python's `json.dumps` writes a non-finite float as a bare `NaN` or `Infinity`, which is not
JSON: no client can parse the answer, and MariaDB's JSON columns refuse the text (a task whose
result held a NaN could never be finished there). Values that cannot come from the API (it
refuses them) can still come from a handler or a data source, so everything stored or answered
goes through `finite` or `dumps`, which write `null` in their place.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

#: `json.dumps(value, allow_nan=False)` builds an encoder on every call; this one is built
#: once (an encoder keeps no state between calls).
_ENCODER = json.JSONEncoder(allow_nan=False)


def dumps(value: Any) -> str:
    """`json.dumps(value)`, with `null` for every non-finite float. ASCII only (`\\u`
    escapes), so its length is its size in bytes."""
    try:
        return _ENCODER.encode(value)
    except ValueError:  # only for a non-finite float (circular values do not come here)
        return _ENCODER.encode(finite(value))


def finite(value: Any) -> Any:
    """`value` with every NaN or infinite float replaced by None (containers copied)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value
