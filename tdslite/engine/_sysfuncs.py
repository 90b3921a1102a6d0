"""System functions.

Metadata functions, OBJECT_ID, OBJECT_NAME, SCHEMA_NAME, SCHEMA_ID, TYPE_NAME, TYPE_ID and DB_ID:
the translator turns each call into ``tds_meta('OBJECT_ID', args...)`` (`rewrite`), a SQLite
function the session registers; it answers from the same rows as the catalog views, so an object
the caller may not see has no id and no name (NULL), as with SQL Server's metadata visibility.

DB_NAME(id) and SERVERPROPERTY are SQLite functions registered per session (`register`), given the
session so they see its database (HOST_NAME, XACT_STATE and ERROR_*() are bound session values,
see _flow.session_globals). Databases are master 1, tempdb 2, model 3, msdb 4 and tdslite's
database 5, as on a fresh SQL Server with one user database.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from sqlglot import exp

from . import _sysrows
from ._state import SessionView
from ._systypes import SYSTEM_TYPES
from ._sysviews import SCHEMAS, SYSTEM_DATABASES, Viewer, schema_id
from ._types import SqlType
from ._values import Storage

_SYSNAME = SqlType("nvarchar", length=128)
#: Function name -> its SQL Server result type.
RESULT_TYPES = {
    "OBJECT_ID": SqlType("int"), "OBJECT_NAME": _SYSNAME, "SCHEMA_NAME": _SYSNAME,
    "SCHEMA_ID": SqlType("int"), "TYPE_NAME": _SYSNAME, "TYPE_ID": SqlType("int"),
    "DB_ID": SqlType("smallint"),
}  # fmt: skip


def rewrite(node: exp.Expression, translate: Callable[[exp.Expression], object]) -> SqlType | None:
    """Replace a metadata function call by ``tds_meta(...)`` (its arguments translated with
    ``translate``); its type, or None if ``node`` is not one of them."""
    if isinstance(node, exp.ObjectId):
        name, args = "OBJECT_ID", [a for a in (node.this, node.args.get("expression")) if a]
    elif isinstance(node, exp.CurrentSchema):
        name, args = "SCHEMA_NAME", [node.this] if node.this is not None else []
    elif (
        isinstance(node, exp.Anonymous)
        and str(node.this).upper().removeprefix("TDSFN_") in RESULT_TYPES
    ):
        name, args = str(node.this).upper().removeprefix("TDSFN_"), list(node.expressions)
    else:
        return None
    call = exp.Anonymous(this="tds_meta", expressions=[exp.Literal.string(name), *args])
    node.replace(call)
    for arg in list(call.expressions[1:]):
        translate(arg)
    return RESULT_TYPES[name]


def _object_rows(viewer: Viewer) -> list[tuple[object, ...]]:
    return list(_sysrows.objects(viewer))


def _object_id(viewer: Viewer, name: object, kind: object = None) -> int | None:
    if not isinstance(name, str):
        return None
    parts = [p.strip().strip('[]"') for p in name.split(".")]
    if len(parts) > 3 or (len(parts) >= 2 and parts[-2] not in ("", "dbo")):
        return None
    if len(parts) == 3 and parts[0] and parts[0].lower() != viewer.database.lower():
        return None
    for row in _object_rows(viewer):
        if str(row[0]).lower() == parts[-1].lower() and (
            kind is None or str(row[5]).strip() == str(kind).strip().upper()
        ):
            return int(str(row[1]))
    return None


def _object_name(viewer: Viewer, object_id: object, *_database: object) -> str | None:
    return next((str(r[0]) for r in _object_rows(viewer) if r[1] == object_id), None)


def _schemas(viewer: Viewer) -> dict[str, int]:
    found = dict(SCHEMAS)
    found.update({o.name: schema_id(o.name) for o in viewer.objects("schemas")})
    return found


def _schema_name(viewer: Viewer, number: object = None) -> str | None:
    if number is None:
        return "dbo"
    return next((n for n, i in _schemas(viewer).items() if i == number), None)


def _schema_id(viewer: Viewer, name: object = None) -> int | None:
    if name is None:
        return 1
    return next((i for n, i in _schemas(viewer).items() if n.lower() == str(name).lower()), None)


def _type_name(viewer: Viewer, type_id: object) -> str | None:
    return next((t.name for t in SYSTEM_TYPES if t.user_type_id == type_id), None)


def _type_id(viewer: Viewer, name: object) -> int | None:
    return next((t.user_type_id for t in SYSTEM_TYPES if t.name == str(name).lower()), None)


def _db_id(viewer: Viewer, name: object = None) -> int | None:
    if name is None:
        return _sysrows.database_id(viewer)
    if str(name).lower() == viewer.served.lower():
        return 5
    return SYSTEM_DATABASES.get(str(name).lower())


_IMPLEMENTATIONS: dict[str, Callable[..., int | str | None]] = {
    "OBJECT_ID": _object_id, "OBJECT_NAME": _object_name, "SCHEMA_NAME": _schema_name,
    "SCHEMA_ID": _schema_id, "TYPE_NAME": _type_name, "TYPE_ID": _type_id, "DB_ID": _db_id,
}  # fmt: skip


def evaluate(viewer: Viewer, name: str, args: tuple[object, ...]) -> int | str | None:
    """The value of metadata function ``name`` for ``viewer`` (NULL for anything it cannot
    see or that does not exist)."""
    if any(a is None for a in args):
        return None
    try:
        return _IMPLEMENTATIONS[name](viewer, *args)
    except TypeError:  # wrong number of arguments
        return None


#: What SELECT @@VERSION answers (clients parse the "Microsoft SQL Server" prefix).
VERSION = (
    "Microsoft SQL Server 2022 (RTM) - 16.0.1000.6 (X64) \n"
    "\ttdslite (edgetds): a TDS server backed by SQLite " + sqlite3.sqlite_version
)
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
USER_DATABASE_ID = 5


def result_type(name: str, args: list[exp.Expression]) -> SqlType:
    """The SQL Server type of DB_NAME(...) or SERVERPROPERTY(...) (int or nvarchar(128) by
    property; SQL Server says sql_variant)."""
    if name == "SERVERPROPERTY":
        arg = args[0] if args else None
        if isinstance(arg, exp.Literal) and arg.this.lower() in _INT_PROPERTIES:
            return SqlType("int")
    return _SYSNAME


def register(session: SessionView) -> None:
    """Register DB_NAME(id) and SERVERPROPERTY on ``session``'s connection."""

    def db_name(number: Storage = None) -> Storage:
        if number is None or int(number) == USER_DATABASE_ID:
            return session.database
        return {v: k for k, v in SYSTEM_DATABASES.items()}.get(int(number))

    def server_property(name: Storage) -> Storage:
        return None if name is None else SERVER_PROPERTIES.get(str(name).lower())

    conn = session._conn
    conn.create_function("tds_db_name", 0, db_name)
    conn.create_function("tds_db_name", 1, db_name)
    conn.create_function("tds_serverproperty", 1, server_property, deterministic=True)
