"""SQL Server's system types as its catalog describes them (sys.types, sys.columns,
INFORMATION_SCHEMA).

Ids, lengths, precisions and scales are those SQL Server 2022 reports: ``max_length`` in bytes
(nvarchar counts 2 per character, -1 for (max)), ``precision``/``scale`` as sys.columns gives them
(time(7) is precision 16 scale 7, datetime 23/3, int 10/0, strings 0/0).
"""

from __future__ import annotations

from dataclasses import dataclass

from ._types import SqlType

COLLATION = "SQL_Latin1_General_CP1_CI_AS"
#: the code page of COLLATION: what char and varchar values are measured in
CODE_PAGE = "cp1252"


@dataclass(frozen=True)
class SystemType:
    """One row of sys.types for a built-in type."""

    name: str
    system_type_id: int
    user_type_id: int
    max_length: int
    precision: int
    scale: int
    collated: bool = False
    nullable: bool = True


#: sys.types rows of the built-in types, in SQL Server's order (by name within the listing).
SYSTEM_TYPES: tuple[SystemType, ...] = (
    SystemType("image", 34, 34, 16, 0, 0),
    SystemType("text", 35, 35, 16, 0, 0, collated=True),
    SystemType("uniqueidentifier", 36, 36, 16, 0, 0),
    SystemType("date", 40, 40, 3, 10, 0),
    SystemType("time", 41, 41, 5, 16, 7),
    SystemType("datetime2", 42, 42, 8, 27, 7),
    SystemType("datetimeoffset", 43, 43, 10, 34, 7),
    SystemType("tinyint", 48, 48, 1, 3, 0),
    SystemType("smallint", 52, 52, 2, 5, 0),
    SystemType("int", 56, 56, 4, 10, 0),
    SystemType("smalldatetime", 58, 58, 4, 16, 0),
    SystemType("real", 59, 59, 4, 24, 0),
    SystemType("money", 60, 60, 8, 19, 4),
    SystemType("datetime", 61, 61, 8, 23, 3),
    SystemType("float", 62, 62, 8, 53, 0),
    SystemType("sql_variant", 98, 98, 8016, 0, 0),
    SystemType("ntext", 99, 99, 16, 0, 0, collated=True),
    SystemType("bit", 104, 104, 1, 1, 0),
    SystemType("decimal", 106, 106, 17, 38, 0),
    SystemType("numeric", 108, 108, 17, 38, 0),
    SystemType("smallmoney", 122, 122, 4, 10, 4),
    SystemType("bigint", 127, 127, 8, 19, 0),
    SystemType("varbinary", 165, 165, 8000, 0, 0),
    SystemType("varchar", 167, 167, 8000, 0, 0, collated=True),
    SystemType("binary", 173, 173, 8000, 0, 0),
    SystemType("char", 175, 175, 8000, 0, 0, collated=True),
    SystemType("timestamp", 189, 189, 8, 0, 0, nullable=False),
    SystemType("nvarchar", 231, 231, 8000, 0, 0, collated=True),
    SystemType("nchar", 239, 239, 8000, 0, 0, collated=True),
    SystemType("xml", 241, 241, -1, 0, 0),
    SystemType("sysname", 231, 256, 256, 0, 0, collated=True, nullable=False),
)
BY_NAME = {t.name: t for t in SYSTEM_TYPES}

_INT_PRECISION = {"bit": 1, "tinyint": 3, "smallint": 5, "int": 10, "bigint": 19}


def _fraction_bytes(scale: int, base: int) -> int:
    return base + (0 if scale <= 2 else 1 if scale <= 4 else 2)


@dataclass(frozen=True)
class ColumnShape:
    """How sys.columns describes a column of a given SqlType."""

    system_type_id: int
    max_length: int
    precision: int
    scale: int
    collation: str | None


def shape(sql_type: SqlType) -> ColumnShape:
    """sys.columns' system_type_id, max_length, precision, scale and collation_name."""
    name = sql_type.name
    base = BY_NAME.get(name, BY_NAME["sql_variant"])
    collation = COLLATION if base.collated else None
    if name in ("char", "varchar", "binary", "varbinary", "nchar", "nvarchar"):
        length = sql_type.length if sql_type.length is not None else 1
        width = 2 if name in ("nchar", "nvarchar") else 1
        return ColumnShape(
            base.system_type_id, -1 if length == -1 else length * width, 0, 0, collation
        )
    if name in ("decimal", "numeric"):
        p = sql_type.precision or 18
        s = sql_type.scale or 0
        size = 5 if p <= 9 else 9 if p <= 19 else 13 if p <= 28 else 17
        return ColumnShape(base.system_type_id, size, p, s, None)
    if name in ("time", "datetime2", "datetimeoffset"):
        n = 7 if sql_type.scale is None else sql_type.scale
        digits = {"time": 8, "datetime2": 19, "datetimeoffset": 26}[name] + (n + 1 if n else 0)
        size = _fraction_bytes(n, {"time": 3, "datetime2": 6, "datetimeoffset": 8}[name])
        return ColumnShape(base.system_type_id, size, digits, n, None)
    if name in _INT_PRECISION:
        return ColumnShape(base.system_type_id, base.max_length, _INT_PRECISION[name], 0, None)
    return ColumnShape(base.system_type_id, base.max_length, base.precision, base.scale, collation)


def char_length(sql_type: SqlType) -> int | None:
    """INFORMATION_SCHEMA.COLUMNS.CHARACTER_MAXIMUM_LENGTH: characters (bytes for binary), -1
    for (max), NULL for non-string types."""
    if sql_type.name in ("char", "varchar", "nchar", "nvarchar", "binary", "varbinary"):
        return sql_type.length if sql_type.length is not None else 1
    if sql_type.name in ("text", "image"):
        return 2147483647
    if sql_type.name == "ntext":
        return 1073741823
    return None


def octet_length(sql_type: SqlType) -> int | None:
    length = char_length(sql_type)
    if length is None or length < 0:
        return length
    return length * 2 if sql_type.name in ("nchar", "nvarchar") else length


def numeric_precision(sql_type: SqlType) -> tuple[int | None, int | None, int | None]:
    """INFORMATION_SCHEMA.COLUMNS (NUMERIC_PRECISION, NUMERIC_PRECISION_RADIX, NUMERIC_SCALE)."""
    name = sql_type.name
    if name in ("tinyint", "smallint", "int", "bigint"):
        return _INT_PRECISION[name], 10, 0
    if name in ("decimal", "numeric"):
        return sql_type.precision or 18, 10, sql_type.scale or 0
    if name in ("money", "smallmoney"):
        return (19 if name == "money" else 10), 10, 4
    if name in ("real", "float"):
        return (24 if name == "real" else 53), 2, None
    return None, None, None


def datetime_precision(sql_type: SqlType) -> int | None:
    name = sql_type.name
    if name == "datetime":
        return 3
    if name in ("smalldatetime", "date"):
        return 0
    if name in ("time", "datetime2", "datetimeoffset"):
        return 7 if sql_type.scale is None else sql_type.scale
    return None


def character_set(sql_type: SqlType) -> str | None:
    if sql_type.name in ("char", "varchar", "text"):
        return "iso_1"
    if sql_type.name in ("nchar", "nvarchar", "ntext"):
        return "UNICODE"
    return None
