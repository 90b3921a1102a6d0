"""NDJSON records of the HTTP API (and of COLUMNS/ROWS/DONE/ERROR payloads): build and parse."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

__all__ = ["error_record"]


def _line(obj: Mapping[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8") + b"\n"


def error_record(
    code: str, message: str, *, query_id: str | None = None, sql: Mapping[str, int] | None = None
) -> bytes:
    """The terminal ``{"error": {...}}`` line (with its ``\\n``)."""
    error: dict[str, Any] = {"code": str(code), "message": message, "query_id": query_id}
    if sql is not None:
        error["sql"] = dict(sql)
    return _line({"error": error})
