"""Strict JSON for frame payloads and the canonical form that signatures cover.

Parsing is strict on purpose: payloads must be UTF-8 JSON objects, duplicate keys and the
non-standard constants NaN/Infinity are refused (a signed object must mean one thing to Python
and to JavaScript), and nesting too deep for the parser is an error like any other.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["canonical_json", "loads_object"]


#: json.dumps(obj, **these) builds an encoder per call; its encode() keeps no state between calls
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def canonical_json(obj: Any) -> bytes:
    """The canonical encoding that edgetds/1 signatures and hashes cover.

    ``json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)`` encoded as
    UTF-8. Signed objects contain no floats (JavaScript prints some floats differently).

    Raises:
        TypeError: ``obj`` is not JSON-serializable.
        ValueError: ``obj`` has a lone surrogate (not encodable as UTF-8) or a cycle.
    """
    return _CANONICAL.encode(obj).encode("utf-8")


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"JSON constant {name} is not allowed")


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise ValueError(f"duplicate JSON key {key!r}")
        obj[key] = value
    return obj


def loads_object(data: bytes) -> dict[str, Any]:
    """Parse ``data`` as one UTF-8 JSON object.

    Raises:
        ValueError: not UTF-8, not JSON, not an object, a duplicate key, NaN/Infinity, or too deep.
    """
    try:
        value = json.loads(
            data.decode("utf-8"),
            parse_constant=_refuse_constant,
            object_pairs_hook=_unique_object,
        )
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    if not isinstance(value, dict):
        raise ValueError(f"expected a JSON object, got {type(value).__name__}")
    return value
