"""sql_variant: a value that carries its own SQL Server base type.

The Python value is `SqlVariant(value, base)`; results of sql_variant type hold them and the wire
layer sends each with its base type's TYPE_INFO (SSVARIANTTYPE).  Storage keeps the base type
next to the base type's own storage form, as TEXT ``<base type>\\x1f<kind><payload>`` (kind
``i`` integer, ``f`` real, ``s`` text, ``b`` hex bytes), so a stored value reads back with the
same base type.  Comparisons and ORDER BY on a sql_variant column see that text, not SQL
Server's sql_variant ordering (compare after a CAST to the base type instead).
"""

from __future__ import annotations

from dataclasses import dataclass

from ._errors import SqlError
from ._types import (
    BINARY_TYPES,
    DECIMAL_TYPES,
    FRACTIONAL_TYPES,
    STRING_TYPES,
    SqlType,
)

VARIANT = SqlType("sql_variant")
_SEP = "\x1f"
_COLLATION = "SQL_Latin1_General_CP1_CI_AS"
#: (precision, scale, bytes) of the fixed-size base types, as SQL_VARIANT_PROPERTY reports them.
_FIXED = {
    "bit": (1, 0, 1), "tinyint": (3, 0, 1), "smallint": (5, 0, 2), "int": (10, 0, 4),
    "bigint": (19, 0, 8), "real": (24, 0, 4), "float": (53, 0, 8), "money": (19, 4, 8),
    "smallmoney": (10, 4, 4), "datetime": (23, 3, 8), "smalldatetime": (16, 0, 4),
    "date": (10, 0, 3), "uniqueidentifier": (0, 0, 16),
}  # fmt: skip


@dataclass(frozen=True)
class SqlVariant:
    """A sql_variant value: ``value`` (the base type's Python value) of type ``base``."""

    value: object
    base: SqlType


def wrap(value: object, source: SqlType | None) -> SqlVariant:
    """CAST(value AS sql_variant): keeps the source type (SQL Server error 206 for the types a
    sql_variant cannot hold: (max) types, xml, sql_variant itself is unwrapped)."""
    from ._values import convert

    if isinstance(value, SqlVariant):
        return value
    base = source if source is not None else natural_type(value)
    if base.is_max or base.name in ("xml", "sql_variant"):
        raise SqlError(206, f"Operand type clash: {base} is incompatible with sql_variant")
    if source is None or not _is_python_value(value, base):
        value = convert(value, base, source=source)
    return SqlVariant(value, base)


def _is_python_value(value: object, base: SqlType) -> bool:
    """A stored form (text of a date, number of a decimal...) still needs decoding."""
    if base.name in STRING_TYPES:
        return isinstance(value, str)
    if base.name in BINARY_TYPES:
        return isinstance(value, bytes)
    return not isinstance(value, str | bytes | float | int) or base.name in (
        "tinyint", "smallint", "int", "bigint", "real", "float",
    )  # fmt: skip


def to_storage(variant: SqlVariant) -> str:
    from ._values import encode

    raw = encode(variant.base, variant.value)
    if isinstance(raw, bool | int):
        payload = f"i{int(raw)}"
    elif isinstance(raw, float):
        payload = f"f{raw!r}"
    elif isinstance(raw, bytes):
        payload = f"b{raw.hex()}"
    else:
        payload = f"s{raw}"
    return f"{variant.base}{_SEP}{payload}"


def from_storage(raw: object) -> SqlVariant:
    """A stored sql_variant back to its SqlVariant (a plain value gets its natural type)."""
    from ._values import decode

    if isinstance(raw, str) and _SEP in raw:
        type_text, _, payload = raw.partition(_SEP)
        base = SqlType.parse(type_text)
        kind, body = payload[:1], payload[1:]
        stored: object = (
            int(body) if kind == "i" else float(body) if kind == "f"
            else bytes.fromhex(body) if kind == "b" else body
        )  # fmt: skip
        return SqlVariant(decode(base, stored), base)  # type: ignore[arg-type]
    return SqlVariant(raw, natural_type(raw))


def natural_type(value: object) -> SqlType:
    """The base type of a value whose type is not known: a string or bytes get their length
    (a sql_variant cannot hold a (max) type)."""
    from ._values import python_type_of, utf16_len

    base = python_type_of(value)
    if isinstance(value, str) and utf16_len(value) <= 4000:
        return SqlType("nvarchar", length=max(1, utf16_len(value)))
    if isinstance(value, bytes) and len(value) <= 8000:
        return SqlType("varbinary", length=max(1, len(value)))
    return base


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
