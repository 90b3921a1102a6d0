"""The registry of edgetds/1 as one JSON document (``protocol/vectors/registry.json``).

Error codes with their HTTP statuses, close codes, frame types, the session vocabulary (ops,
isolation levels, end reasons) and SQL Server type names, read
from the enums and tables that protocol/ itself uses. The Worker's tests compare its own tables
with the committed file, and tests/protocol checks the file equals this document, so neither side
can drift from SPEC.md alone.
"""

from __future__ import annotations

from typing import Any

from ._errors import _HTTP_STATUS_BY_PREFIX, CloseCode, ErrorCode, http_status
from ._frames import FrameType
from ._sessions import ISOLATION_LEVELS, SESSION_CAP, SessionEnd, SessionOp
from ._sqltypes import SQL_TYPE_TABLE

__all__ = ["wire_registry"]


def wire_registry() -> dict[str, Any]:
    """The registry document: plain JSON values, in declaration order."""
    return {
        "comment": "edgetds/1 registry, generated from protocol/ (see vectors/README.md)",
        "error_codes": [
            {"name": code.name, "code": code.value, "http_status": http_status(code)}
            for code in ErrorCode
        ],
        "http_status_by_prefix": dict(_HTTP_STATUS_BY_PREFIX),
        "close_codes": {code.name: code.value for code in CloseCode},
        "frame_types": {ftype.name: ftype.value for ftype in FrameType},
        "session": {
            "capability": SESSION_CAP,
            "ops": [op.value for op in SessionOp],
            "isolation_levels": list(ISOLATION_LEVELS),
            "end_reasons": [reason.value for reason in SessionEnd],
        },
        "sql_types": [
            {"name": row.name, "args": row.args.value, "family": row.family.value}
            for row in SQL_TYPE_TABLE.values()
        ],
    }
