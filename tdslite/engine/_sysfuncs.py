"""System functions that read the session or the catalog: OBJECT_ID, DB_ID, DB_NAME(id),
SCHEMA_NAME, SERVERPROPERTY (HOST_NAME, XACT_STATE and ERROR_*() are bound session values, see
_flow.session_globals).

They are SQLite functions registered per session (`register`), given the session so they see its
catalog and database. Object ids: a table's id is derived from its name (`object_id`), stable
across sessions and restarts; databases are master 1, tempdb 2, model 3, msdb 4 and tdslite's
database 5, as on a fresh SQL Server with one user database.
"""

from __future__ import annotations

import zlib
from typing import TYPE_CHECKING

from sqlglot import exp

from ._types import SqlType
from ._values import Storage

if TYPE_CHECKING:
    from ._session import Session

#: What SERVERPROPERTY answers (the @@VERSION tdslite reports: SQL Server 2022 RTM).
SERVER_PROPERTIES: dict[str, Storage] = {
    "productversion": "16.0.1000.6",
    "productmajorversion": "16",
    "productminorversion": "0",
    "productlevel": "RTM",
    "edition": "Developer Edition (64-bit)",
    "engineedition": 3,
    "editionid": -2117995310,
    "machinename": "tdslite",
    "servername": "tdslite",
    "instancename": None,
    "isclustered": 0,
    "isintegratedsecurityonly": 0,
    "issingleuser": 0,
    "collation": "SQL_Latin1_General_CP1_CI_AS",
    "productupdatelevel": None,
}
_INT_PROPERTIES = frozenset(
    {"engineedition", "editionid", "isclustered", "isintegratedsecurityonly", "issingleuser"}
)
SYSTEM_DATABASES = {"master": 1, "tempdb": 2, "model": 3, "msdb": 4}
USER_DATABASE_ID = 5
SCHEMAS = {1: "dbo", 2: "guest", 3: "INFORMATION_SCHEMA", 4: "sys"}

NAME = SqlType("nvarchar", length=128)
INT = SqlType("int")


def result_type(name: str, args: list[exp.Expression]) -> SqlType:
    """The SQL Server type of ``name(args)`` (SERVERPROPERTY: int or nvarchar(128) by property;
    SQL Server says sql_variant)."""
    if name in ("OBJECT_ID", "DB_ID"):
        return INT
    if name == "SERVERPROPERTY":
        arg = args[0] if args else None
        if isinstance(arg, exp.Literal) and arg.this.lower() in _INT_PROPERTIES:
            return INT
    return NAME


def object_id(name: str) -> int:
    """The object id tdslite gives the table ``name`` (positive, stable: CRC-32 of its name)."""
    return (zlib.crc32(name.lower().encode("utf-8")) & 0x3FFFFFFF) | 0x100


def _parts(name: str) -> list[str]:
    parts: list[str] = []
    current = ""
    quoted = False
    for char in name:
        if char == "[" and not quoted:
            quoted = True
        elif char == "]" and quoted:
            quoted = False
        elif char == "." and not quoted:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [p.strip().strip('"') for p in parts]


def register(session: Session) -> None:
    """Register the functions of the module docstring on ``session``'s connection."""

    def obj_id(name: Storage, kind: Storage = None) -> Storage:
        if not isinstance(name, str):
            return None
        parts = _parts(name)
        if len(parts) > 3 or not parts[-1] or parts[-1].startswith("#"):
            return None
        if len(parts) == 3 and parts[0] and parts[0].lower() != session.database.lower():
            return None
        if len(parts) >= 2 and parts[-2] and parts[-2].lower() != "dbo":
            return None
        if kind is not None and str(kind).strip().upper() != "U":
            return None
        table = session._catalog.table(parts[-1])
        return None if table is None else object_id(table.name)

    def db_id(name: Storage = None) -> Storage:
        if name is None:
            return USER_DATABASE_ID
        lowered = str(name).lower()
        if lowered == session.database.lower():
            return USER_DATABASE_ID
        return SYSTEM_DATABASES.get(lowered)

    def db_name(number: Storage = None) -> Storage:
        if number is None or int(number) == USER_DATABASE_ID:
            return session.database
        return {v: k for k, v in SYSTEM_DATABASES.items()}.get(int(number))

    def schema_name(number: Storage = None) -> Storage:
        return "dbo" if number is None else SCHEMAS.get(int(number))

    def server_property(name: Storage) -> Storage:
        return None if name is None else SERVER_PROPERTIES.get(str(name).lower())

    conn = session._conn
    conn.create_function("tds_object_id", 1, obj_id)
    conn.create_function("tds_object_id", 2, obj_id)
    conn.create_function("tds_db_id", 0, db_id)
    conn.create_function("tds_db_id", 1, db_id)
    conn.create_function("tds_db_name", 0, db_name)
    conn.create_function("tds_db_name", 1, db_name)
    conn.create_function("tds_schema_name", 0, schema_name)
    conn.create_function("tds_schema_name", 1, schema_name)
    conn.create_function("tds_serverproperty", 1, server_property, deterministic=True)
