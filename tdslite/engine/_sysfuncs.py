"""Metadata functions: OBJECT_ID, OBJECT_NAME, SCHEMA_NAME, SCHEMA_ID, TYPE_NAME, TYPE_ID, DB_ID.

The translator turns each call into ``tds_meta('OBJECT_ID', args...)`` (`rewrite`), a SQLite
function the session registers; it answers from the same rows as the catalog views, so an object
the caller may not see has no id and no name (NULL), as with SQL Server's metadata visibility.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlglot import exp

from . import _sysrows
from ._systypes import SYSTEM_TYPES
from ._sysviews import SCHEMAS, SYSTEM_DATABASES, Viewer, schema_id
from ._types import SqlType

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
    elif isinstance(node, exp.Anonymous) and str(node.this).upper() in RESULT_TYPES:
        name, args = str(node.this).upper(), list(node.expressions)
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
