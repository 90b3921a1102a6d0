"""The SQL Server types of edgetds/1 (SPEC.md section 12): one table, read by every side.

Each row says what a declaration of the type may carry (no argument, a length, precision and
scale, or a fractional-second scale) and which JSON encoding its values take (the ``family``). The
relays check a typed parameter's type name against it (`param_type`); the connector drives its
parameter binding, declaration normalisation, column descriptions and result encoding from it;
``protocol/vectors/registry.json`` carries the names to the Worker.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

__all__ = ["SQL_TYPE_TABLE", "SQL_TYPES", "SqlArgs", "SqlFamily", "SqlType"]


class SqlArgs(enum.Enum):
    """What a declaration of the type carries in parentheses."""

    #: nothing: ``int``, ``text``, ``uniqueidentifier``
    NONE = "none"
    #: one length, or ``max`` for the var- types: ``nvarchar(50)``, ``varbinary(max)``
    LENGTH = "length"
    #: precision and scale: ``decimal(18,4)``
    PRECISION_SCALE = "precision_scale"
    #: fractional-second digits 0-7: ``datetime2(3)``
    SCALE = "scale"


class SqlFamily(enum.Enum):
    """How values of the type are written in JSON (SPEC.md 12.1) and read from it (12.2)."""

    #: ``true`` / ``false``
    BIT = "bit"
    #: a JSON number (tinyint, smallint, int)
    INTEGER = "integer"
    #: ALWAYS a decimal string (bigint: past 2^53 a JSON number loses digits)
    BIGINT = "bigint"
    #: a string with exactly the column's scale
    DECIMAL = "decimal"
    #: a JSON number, the shortest that reads back as the same float32
    REAL = "real"
    #: a JSON number
    FLOAT = "float"
    #: a string
    STRING = "string"
    #: a base64 string
    BINARY = "binary"
    #: ``"YYYY-MM-DD"``
    DATE = "date"
    #: ``"HH:MM:SS[.fffffff]"``
    TIME = "time"
    #: ``"YYYY-MM-DDTHH:MM:SS[.fffffff]"`` without offset
    DATETIME = "datetime"
    #: as DATETIME plus ``"+HH:MM"``
    DATETIMEOFFSET = "datetimeoffset"
    #: a lowercase ``"8-4-4-4-12"`` string
    UUID = "uuid"


@dataclass(frozen=True, slots=True)
class SqlType:
    """One SQL Server type.

    Attributes:
        name: the lowercase type name.
        family: its JSON encoding.
        args: what its declaration carries.
        max_length: for LENGTH types, the largest length (4000 for n- types, else 8000).
        fixed_scale: the fractional digits the type itself fixes (datetime 3, money 4, ...).
        fixed_precision: the precision the type itself fixes (money 19, smallmoney 10).
        value_range: for integer types, the inclusive (low, high) bounds.
    """

    name: str
    family: SqlFamily
    args: SqlArgs = SqlArgs.NONE
    max_length: int | None = None
    fixed_scale: int | None = None
    fixed_precision: int | None = None
    value_range: tuple[int, int] | None = None

    @property
    def takes_max(self) -> bool:
        """Whether ``(max)`` is a valid length (the var- types)."""
        return self.args is SqlArgs.LENGTH and self.name.startswith(("var", "nvar"))


def _int(name: str, bits: int, *, unsigned: bool = False) -> SqlType:
    low, high = (0, 2**bits - 1) if unsigned else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    family = SqlFamily.BIGINT if bits == 64 else SqlFamily.INTEGER
    return SqlType(name, family, value_range=(low, high))


def _length(name: str, family: SqlFamily, limit: int) -> SqlType:
    return SqlType(name, family, SqlArgs.LENGTH, max_length=limit)


_F = SqlFamily
_ROWS = (
    SqlType("bit", _F.BIT),
    _int("tinyint", 8, unsigned=True),
    _int("smallint", 16),
    _int("int", 32),
    _int("bigint", 64),
    SqlType("decimal", _F.DECIMAL, SqlArgs.PRECISION_SCALE),
    SqlType("numeric", _F.DECIMAL, SqlArgs.PRECISION_SCALE),
    SqlType("money", _F.DECIMAL, fixed_scale=4, fixed_precision=19),
    SqlType("smallmoney", _F.DECIMAL, fixed_scale=4, fixed_precision=10),
    SqlType("real", _F.REAL),
    SqlType("float", _F.FLOAT),
    _length("char", _F.STRING, 8000),
    _length("varchar", _F.STRING, 8000),
    _length("nchar", _F.STRING, 4000),
    _length("nvarchar", _F.STRING, 4000),
    SqlType("text", _F.STRING),
    SqlType("ntext", _F.STRING),
    SqlType("xml", _F.STRING),
    _length("binary", _F.BINARY, 8000),
    _length("varbinary", _F.BINARY, 8000),
    SqlType("image", _F.BINARY),
    SqlType("date", _F.DATE),
    SqlType("time", _F.TIME, SqlArgs.SCALE),
    SqlType("datetime", _F.DATETIME, fixed_scale=3),
    SqlType("smalldatetime", _F.DATETIME, fixed_scale=0),
    SqlType("datetime2", _F.DATETIME, SqlArgs.SCALE),
    SqlType("datetimeoffset", _F.DATETIMEOFFSET, SqlArgs.SCALE),
    SqlType("uniqueidentifier", _F.UUID),
)

#: Every SQL Server type a typed parameter may name and a result column may have, by name.
SQL_TYPE_TABLE: Mapping[str, SqlType] = MappingProxyType({row.name: row for row in _ROWS})
#: The type names alone (lowercase).
SQL_TYPES = frozenset(SQL_TYPE_TABLE)
