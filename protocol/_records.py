"""NDJSON records of the HTTP API, which are also the COLUMNS/ROWS/DONE/ERROR frame payloads.

Builders for the terminal records (``{"done": ...}``, ``{"error": ...}``), a parser for the error
record (the relay reads it to choose an HTTP status when nothing was streamed yet), and the shape
check of query parameters (bare JSON values or ``{"type": ..., "value": ...}`` objects), so a relay
can refuse a malformed request with 400 before it reaches a connector.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ._errors import ErrorCode
from ._json import loads_object, one_shot_encoder
from ._sqltypes import SQL_TYPES

__all__ = [
    "ErrorRecord",
    "RecordLine",
    "done_record",
    "error_record",
    "ndjson_line",
    "param_type",
    "parse_error_record",
]

_TYPE = re.compile(r"([a-z0-9]+)(?:\((max|[0-9]{1,4})(?:,([0-9]{1,2}))?\))?")


class RecordLine(bytes):
    """An NDJSON line built by `ndjson_line`, which knows its shape: ``key`` is "columns",
    "done" or "error" when the line is a valid payload of that frame as the receiver checks it at
    the top level (one line, one member of the right JSON type, an error's string "code", no
    NaN/Infinity), else None. Sending such a line skips re-parsing the JSON that was just built
    (`protocol._codec.encode`); the receiving side still parses and checks every payload."""

    key: str | None = None


def _record_key(obj: Mapping[str, Any]) -> str | None:
    if len(obj) != 1:
        return None
    [(key, value)] = obj.items()
    if key == "columns" and isinstance(value, list):
        return key
    if key == "done" and isinstance(value, dict):
        return key
    if key == "error" and isinstance(value, dict) and isinstance(value.get("code"), str):
        return key
    return None


#: the encoder of `ndjson_line` (json.dumps would build one per call)
_COMPACT = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
_compact = one_shot_encoder(_COMPACT)


def ndjson_line(obj: Mapping[str, Any]) -> RecordLine:
    """One NDJSON record: compact UTF-8 JSON plus ``\\n`` (see `RecordLine`)."""
    try:
        text = _compact(obj)
        key = _record_key(obj)
    except ValueError:  # NaN/Infinity: written as before, and checked when sent
        text, key = json.dumps(obj, separators=(",", ":"), ensure_ascii=False), None
    line = RecordLine(text.encode("utf-8") + b"\n")
    line.key = key
    return line


def done_record(
    *,
    rows: int,
    result_sets: int,
    elapsed_ms: int,
    query_id: str | None,
    session: Mapping[str, Any] | None = None,
) -> bytes:
    """The terminal ``{"done": {...}}`` line of a successful query.

    ``session``: for a session operation, the session's state after it (SPEC.md 7.4).
    """
    done: dict[str, Any] = {"rows": rows, "result_sets": result_sets, "elapsed_ms": elapsed_ms}
    done["query_id"] = query_id
    if session is not None:
        done["session"] = dict(session)
    return ndjson_line({"done": done})


def error_record(
    code: ErrorCode,
    message: str,
    *,
    query_id: str | None = None,
    sql: Mapping[str, int] | None = None,
    hint: str | None = None,
    limit: str | None = None,
    session: Mapping[str, Any] | None = None,
) -> bytes:
    """The ``{"error": {...}}`` line: an ERROR frame's payload and every HTTP error body.

    Args:
        code: the failure class.
        message: what failed and how to fix it; never SQL text, tokens or parameter values.
        query_id: the query's id, if known (omitted when None).
        sql: for ``sql.error``: ``{"number": ..., "state": ..., "class": ...}`` from SQL Server.
        hint: how to fix it, when the message alone does not say.
        limit: for ``limits.too_many_queries`` and ``limits.too_many_sessions``: whose limit
            was hit (SPEC.md 11.4).
        session: for a session operation: ``{"id", "state", "reason"?}`` (SPEC.md 7.4).
    """
    error: dict[str, Any] = {"code": code.value, "message": message}
    optional = {
        "query_id": query_id,
        "sql": dict(sql) if sql else None,
        "hint": hint,
        "limit": limit,
        "session": dict(session) if session else None,
    }
    error.update((key, value) for key, value in optional.items() if value)
    return ndjson_line({"error": error})


@dataclass(frozen=True, slots=True)
class ErrorRecord:
    """A parsed ``{"error": {...}}`` record."""

    code: str
    message: str
    query_id: str | None
    sql: Mapping[str, Any] | None


def parse_error_record(data: bytes) -> ErrorRecord:
    """Parse an ERROR payload / error line.

    Raises:
        ValueError: not an ``{"error": {"code": str, "message": str, ...}}`` object.
    """
    error = loads_object(data).get("error")
    if not isinstance(error, dict):
        raise ValueError('not an {"error": {...}} record')
    code, message, query_id, sql = (error.get(k) for k in ("code", "message", "query_id", "sql"))
    if not isinstance(code, str) or not isinstance(message, str):
        raise ValueError('an error record needs string "code" and "message"')
    if not (query_id is None or isinstance(query_id, str)) or not (
        sql is None or isinstance(sql, dict)
    ):
        raise ValueError('"query_id" must be a string or null and "sql" an object or null')
    return ErrorRecord(code, message, query_id, sql)


def param_type(value: Any) -> str | None:
    """The SQL Server type a parameter value binds as (shape check only, not the value's syntax).

    Bare values: string -> ``nvarchar(max)``, integer -> ``bigint``, fractional number -> ``float``,
    true/false -> ``bit``, null -> None (untyped NULL). Typed values ``{"type": t, "value": v}``:
    ``t`` lowercased, e.g. ``decimal(18,4)``; ``v`` a string, number, boolean or null (or left
    out: a typed NULL, as the connector reads it).

    Raises:
        ValueError: an array, an object that is not a typed value, or an unknown type.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        return "bit"
    if isinstance(value, int):
        return "bigint"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "nvarchar(max)"
    if not isinstance(value, dict) or "type" not in value or not set(value) <= {"type", "value"}:
        raise ValueError('a parameter is a JSON scalar or {"type": ..., "value": ...}')
    kind, inner = value["type"], value.get("value")  # no "value": a typed NULL
    match = _TYPE.fullmatch(kind.replace(" ", "").lower()) if isinstance(kind, str) else None
    if match is None or match.group(1) not in SQL_TYPES:
        raise ValueError(f"unknown SQL Server parameter type {kind!r}")
    if isinstance(inner, list | dict):
        raise ValueError("a typed parameter's value is a string, number, boolean or null")
    return match.group(0)
