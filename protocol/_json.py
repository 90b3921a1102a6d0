"""Strict JSON for frame payloads and the canonical form that signatures cover.

Parsing is strict on purpose: payloads must be UTF-8 JSON objects, duplicate keys, the
non-standard constants NaN/Infinity and numbers beyond a double's range (``1e400``, which
JavaScript reads as Infinity and Python's float as inf, and an integer that large, which Python
reads exactly) are refused (a signed object must mean one thing to Python and to JavaScript), and
nesting too deep for the parser is an error like any other.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from json.encoder import c_make_encoder  # type: ignore[attr-defined]
from typing import Any

__all__ = ["canonical_json", "loads_object", "one_shot_encoder"]


#: json.dumps(obj, **these) builds an encoder per call; its encode() keeps no state between calls
_CANONICAL = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
)


def one_shot_encoder(encoder: json.JSONEncoder) -> Callable[[Any], str]:
    """``encoder.encode``, with the C encoder it makes per call made once.

    ``JSONEncoder.encode`` builds a C encoder for every call (with a fresh dict of the containers
    being encoded, to report a cycle). This one is built without that dict, so it keeps no state
    and is shared by every thread; an encoding that recurses too deep (a cycle, or nesting too
    deep) is done again by ``encoder.encode``, which reports it as before. A ``str`` goes to
    ``encoder.encode`` too (its own shortcut)."""
    if c_make_encoder is None or encoder.indent is not None:  # pragma: no cover - no _json
        return encoder.encode
    fast = c_make_encoder(
        None,
        encoder.default,
        json.encoder.encode_basestring_ascii
        if encoder.ensure_ascii
        else json.encoder.encode_basestring,
        None,
        encoder.key_separator,
        encoder.item_separator,
        encoder.sort_keys,
        encoder.skipkeys,
        encoder.allow_nan,
    )

    def encode(obj: Any) -> str:
        if not isinstance(obj, str):
            try:
                return "".join(fast(obj, 0))
            except RecursionError:
                pass
        return encoder.encode(obj)

    return encode


_canonical = one_shot_encoder(_CANONICAL)


def canonical_json(obj: Any) -> bytes:
    """The canonical encoding that edgetds/1 signatures and hashes cover.

    ``json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)`` encoded as
    UTF-8. Signed objects contain no floats (JavaScript prints some floats differently).

    Raises:
        TypeError: ``obj`` is not JSON-serializable.
        ValueError: ``obj`` has a lone surrogate (not encodable as UTF-8), a cycle, or a float
            that is NaN or infinite (which JSON cannot carry).
    """
    return _canonical(obj).encode("utf-8")


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"JSON constant {name} is not allowed")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("JSON number beyond the range of a double")
    return value


#: an integer literal this long may be beyond a double's range (the largest double has 309 digits)
_LONG_INT = 309


def _double_range_int(text: str) -> int:
    value = int(text)
    if len(text) >= _LONG_INT:
        try:
            float(value)  # rounds as JavaScript's Number() does, and overflows where it is Infinity
        except OverflowError:
            raise ValueError("JSON number beyond the range of a double") from None
    return value


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise ValueError(f"duplicate JSON key {key!r}")
        obj[key] = value
    return obj


#: what json.loads(text, **these hooks) builds per call (a decoder and its C scanner); its
#: decode() keeps no state between calls (json.loads shares one decoder the same way)
_STRICT = json.JSONDecoder(
    parse_constant=_refuse_constant,
    parse_float=_finite_float,
    parse_int=_double_range_int,
    object_pairs_hook=_unique_object,
)


def loads_object(data: bytes) -> dict[str, Any]:
    """Parse ``data`` as one UTF-8 JSON object.

    Raises:
        ValueError: not UTF-8, not JSON, not an object, a duplicate key, NaN/Infinity, a number
            beyond a double's range, or too deep.
    """
    text = data.decode("utf-8")
    if text.startswith("\ufeff"):  # as json.loads refuses it
        raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
    try:
        value = _STRICT.decode(text)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    if not isinstance(value, dict):
        raise ValueError(f"expected a JSON object, got {type(value).__name__}")
    return value
