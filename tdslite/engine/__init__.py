"""tdslite's SQL engine: T-SQL over SQLite with SQL Server types, errors and permissions.

The wire layer (tdslite/server) uses only the names below; see tdslite/README.md, "Supported
T-SQL", for what the engine accepts.
"""

from __future__ import annotations

from ._engine import Engine
from ._errors import SqlError
from ._results import Info, ResultSet, RowCount, StatementFailed
from ._session import PreamblePlan, PreambleShape, Session
from ._types import Column, Param, PreciseDateTime, PreciseTime, SqlType
from ._users import User, UsersFileError, load_users, parse_users
from ._values import convert

__all__ = [
    "Column",
    "Engine",
    "Info",
    "Param",
    "PreamblePlan",
    "PreambleShape",
    "PreciseDateTime",
    "PreciseTime",
    "ResultSet",
    "RowCount",
    "Session",
    "SqlError",
    "SqlType",
    "StatementFailed",
    "User",
    "UsersFileError",
    "convert",
    "load_users",
    "parse_users",
]
