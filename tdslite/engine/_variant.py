"""SQL_VARIANT_PROPERTY: the base type, precision, scale, lengths and collation of a sql_variant.

A sql_variant value is a `SqlVariant` (_types.py); _values.py stores and converts it.
"""

from __future__ import annotations

from ._types import (
    BINARY_TYPES,
    DECIMAL_TYPES,
    FRACTIONAL_TYPES,
    STRING_TYPES,
    SqlType,
    SqlVariant,
)
from ._values import from_storage, to_storage

_COLLATION = "SQL_Latin1_General_CP1_CI_AS"
#: (precision, scale, bytes) of the fixed-size base types, as SQL_VARIANT_PROPERTY reports them.
_FIXED = {
    "bit": (1, 0, 1), "tinyint": (3, 0, 1), "smallint": (5, 0, 2), "int": (10, 0, 4),
    "bigint": (19, 0, 8), "real": (24, 0, 4), "float": (53, 0, 8), "money": (19, 4, 8),
    "smallmoney": (10, 4, 4), "datetime": (23, 3, 8), "smalldatetime": (16, 0, 4),
    "date": (10, 0, 3), "uniqueidentifier": (0, 0, 16),
}  # fmt: skip


def _max_length(base: SqlType) -> int:
    name = base.name
    if name in _FIXED:
        return _FIXED[name][2]
    if name in DECIMAL_TYPES:
        precision = int(base.precision or 18)
        return 5 if precision <= 9 else 9 if precision <= 19 else 13 if precision <= 28 else 17
    if name in STRING_TYPES | BINARY_TYPES:
        return int(base.length or 1) * (2 if name in ("nchar", "nvarchar") else 1)
    scale = 7 if base.scale is None else int(base.scale)
    time_bytes = 3 if scale <= 2 else 4 if scale <= 4 else 5
    return {"time": time_bytes, "datetime2": time_bytes + 3}.get(name, time_bytes + 5)


def _precision_scale(base: SqlType) -> tuple[int, int]:
    name = base.name
    if name in _FIXED:
        return _FIXED[name][0], _FIXED[name][1]
    if name in DECIMAL_TYPES:
        return int(base.precision or 18), int(base.scale or 0)
    if name in FRACTIONAL_TYPES:
        scale = 7 if base.scale is None else int(base.scale)
        extra = scale + 1 if scale else 0
        return {"time": 8, "datetime2": 19, "datetimeoffset": 26}[name] + extra, scale
    return 0, 0


def property_of(raw: object, name: object) -> str | None:
    """SQL_VARIANT_PROPERTY(v, name) as a stored sql_variant (NULL for NULL or a bad name)."""
    if raw is None or not isinstance(name, str):
        return None
    base = from_storage(raw).base
    key = name.strip().lower()
    nvarchar = SqlType("nvarchar", length=128)
    result: SqlVariant | None = None
    if key == "basetype":
        result = SqlVariant(base.name, nvarchar)
    elif key in ("precision", "scale"):
        precision, scale = _precision_scale(base)
        result = SqlVariant(precision if key == "precision" else scale, SqlType("int"))
    elif key == "maxlength":
        result = SqlVariant(_max_length(base), SqlType("int"))
    elif key == "totalbytes":
        props = (
            2
            if base.name in DECIMAL_TYPES | BINARY_TYPES
            else 7
            if base.name in STRING_TYPES
            else 0
        )
        props = 1 if base.name in FRACTIONAL_TYPES else props
        result = SqlVariant(2 + props + _data_length(raw, base), SqlType("int"))
    elif key == "collation":
        result = SqlVariant(_COLLATION, nvarchar) if base.name in STRING_TYPES else None
    return None if result is None else to_storage(result)


def _data_length(raw: object, base: SqlType) -> int:
    value = from_storage(raw).value
    if base.name in ("nchar", "nvarchar") and isinstance(value, str):
        return len(value.encode("utf-16-le"))
    if base.name in STRING_TYPES and isinstance(value, str):
        return len(value)
    if isinstance(value, bytes):
        return len(value)
    return _max_length(base)
