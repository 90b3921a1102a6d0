"""SQL Server data types as tdslite knows them: names, parameters, and the value classes.

`SqlType` is a parsed type name (``decimal(18,4)``, ``nvarchar(max)``); `Column` and `Param` carry
one.  The Python value of each type is fixed by the engine interface:

- bit -> bool; tinyint/smallint/int/bigint -> int
- decimal/numeric/money/smallmoney -> decimal.Decimal; real/float -> float
- (n)(var)char -> str; (var)binary -> bytes
- date -> datetime.date; time -> datetime.time (or `PreciseTime`)
- datetime/smalldatetime/datetime2 -> naive datetime.datetime (or `PreciseDateTime`)
- datetimeoffset -> aware datetime.datetime (or `PreciseDateTime`)
- uniqueidentifier -> uuid.UUID
- xml -> str; sql_variant -> `SqlVariant` (the base value and its type; stored as _values.py says)

Python's datetime stops at microseconds while SQL Server's time/datetime2/datetimeoffset go to
100 ns.  `PreciseDateTime` / `PreciseTime` are subclasses that carry the extra digit in
``nanosecond_100`` (0-9 hundreds of nanoseconds past ``microsecond``); everything that accepts a
datetime accepts them, and the engine returns them only when that digit is not zero.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from dataclasses import dataclass
from typing import Any, NamedTuple, Self

#: Types whose length is a number of characters / bytes, with ``max`` allowed.
SIZED_TYPES = frozenset({"char", "varchar", "nchar", "nvarchar", "binary", "varbinary"})
#: Types with a precision and a scale.
DECIMAL_TYPES = frozenset({"decimal", "numeric"})
#: Types whose only parameter is the number of fractional-second digits (0-7).
FRACTIONAL_TYPES = frozenset({"time", "datetime2", "datetimeoffset"})
INTEGER_TYPES = frozenset({"bit", "tinyint", "smallint", "int", "bigint"})
MONEY_TYPES = frozenset({"money", "smallmoney"})
FLOAT_TYPES = frozenset({"real", "float"})
STRING_TYPES = frozenset({"char", "varchar", "nchar", "nvarchar"})
BINARY_TYPES = frozenset({"binary", "varbinary"})
DATETIME_TYPES = frozenset({"datetime", "smalldatetime", "datetime2"})
SIMPLE_TYPES = (
    INTEGER_TYPES
    | MONEY_TYPES
    | FLOAT_TYPES
    | frozenset({"date", "datetime", "smalldatetime", "uniqueidentifier"})
)
#: xml (a string checked for well-formedness) and sql_variant (a value with its base type).
SPECIAL_TYPES = frozenset({"xml", "sql_variant"})
#: Every type name tdslite supports.
SUPPORTED_TYPES = SIZED_TYPES | DECIMAL_TYPES | FRACTIONAL_TYPES | SIMPLE_TYPES | SPECIAL_TYPES

#: Old or alias spellings accepted in DDL and CAST, mapped to what SQL Server treats them as.
ALIASES = {
    "integer": "int",
    "dec": "decimal",
    "character": "char",
    "text": "varchar(max)",
    "ntext": "nvarchar(max)",
    "image": "varbinary(max)",
    "sysname": "nvarchar(128)",
    "double precision": "float",
    "national character varying": "nvarchar",
}

_TYPE_RE = re.compile(r"^\s*([a-z][a-z0-9_ ]*?)\s*(?:\(\s*([^)]*?)\s*\))?\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class SqlType:
    """A SQL Server data type with its parameters.

    Attributes:
        name: lowercase SQL Server type name: "int", "decimal", "nvarchar", "datetime2", ...
        length: characters for (n)char/(n)varchar, bytes for (var)binary; -1 means (max).
        precision: decimal/numeric precision; None for every other type.
        scale: decimal/numeric scale; fractional-second digits for time/datetime2/datetimeoffset.
    """

    name: str
    length: int | None = None
    precision: int | None = None
    scale: int | None = None

    @classmethod
    def parse(cls, text: str, *, in_cast: bool = False) -> SqlType:
        """Parse a type as written in T-SQL, e.g. ``decimal(18,4)`` or ``NVARCHAR(MAX)``.

        Args:
            text: the type name with optional parameters.
            in_cast: defaults of an unsized (n)varchar/(n)char differ in CAST (30) and DDL (1).

        Raises:
            ValueError: unknown type or bad parameters (the message names them).
        """
        match = _TYPE_RE.match(text)
        if match is None:
            raise ValueError(f"cannot parse data type {text!r}")
        name = " ".join(match.group(1).lower().split())
        args_text = match.group(2)
        if name in ALIASES:
            if args_text is not None and "(" in ALIASES[name]:
                raise ValueError(f"type {name} takes no parameters")
            aliased = ALIASES[name]
            if args_text is not None:
                aliased = f"{aliased}({args_text})"
            return cls.parse(aliased, in_cast=in_cast)
        args = [a.strip().lower() for a in args_text.split(",")] if args_text is not None else []
        if name not in SUPPORTED_TYPES:
            raise ValueError(f"type {name!r} is not supported by tdslite")
        return _build(cls, name, args, in_cast=in_cast)

    def __str__(self) -> str:
        if self.name in SIZED_TYPES:
            return f"{self.name}({'max' if self.length == -1 else self.length})"
        if self.name in DECIMAL_TYPES:
            return f"{self.name}({self.precision},{self.scale})"
        if self.name in FRACTIONAL_TYPES:
            return f"{self.name}({self.scale})"
        return self.name

    @functools.cached_property
    def text(self) -> str:
        """``str(self)``, made once per instance (the type is immutable; the parameters of
        every request are typed by a few shared instances)."""
        return str(self)

    @property
    def is_max(self) -> bool:
        """True for varchar(max), nvarchar(max) and varbinary(max)."""
        return self.length == -1


def _int_arg(name: str, value: str, low: int, high: int) -> int:
    if not value.isdigit() or not low <= int(value) <= high:
        raise ValueError(f"{name}: parameter {value!r} must be an integer from {low} to {high}")
    return int(value)


def _build(cls: type[SqlType], name: str, args: list[str], *, in_cast: bool) -> SqlType:
    if name in SIZED_TYPES:
        if len(args) > 1:
            raise ValueError(f"{name} takes one length")
        limit = 4000 if name.startswith("n") else 8000
        if not args:
            return cls(name, length=30 if in_cast and "var" in name else 1)
        if args[0] == "max":
            if "var" not in name:
                raise ValueError(f"{name}(max) is not a valid type; use var{name}(max)")
            return cls(name, length=-1)
        return cls(name, length=_int_arg(name, args[0], 1, limit))
    if name in DECIMAL_TYPES:
        if len(args) > 2:
            raise ValueError(f"{name} takes (precision, scale)")
        precision = _int_arg(name, args[0], 1, 38) if args else 18
        scale = _int_arg(name, args[1], 0, precision) if len(args) == 2 else 0
        return cls(name, precision=precision, scale=scale)
    if name in FRACTIONAL_TYPES:
        if len(args) > 1:
            raise ValueError(f"{name} takes one fractional-seconds scale")
        return cls(name, scale=_int_arg(name, args[0], 0, 7) if args else 7)
    if name == "float" and args:
        bits = _int_arg(name, args[0], 1, 53)
        return cls("real" if bits <= 24 else "float")
    if args:
        raise ValueError(f"type {name} takes no parameters")
    return cls(name)


@dataclass(frozen=True)
class Column:
    """One column of a result set (or of a table in the catalog)."""

    name: str
    type: SqlType
    nullable: bool = True


class Param(NamedTuple):
    """An RPC / sp_executesql parameter, already decoded from TDS (a named tuple: one is made for
    every parameter of every request, quicker than a frozen dataclass).

    Attributes:
        name: with the leading "@", e.g. "@P1".
        type: its declared SQL Server type.
        value: the Python value (see the module docstring) or None.
        output: an OUTPUT parameter (tdslite never writes them back).
    """

    name: str
    type: SqlType
    value: object
    output: bool = False


class _HundredNanoseconds:
    """Mixin for a datetime/time that carries a 100 ns digit (``nanosecond_100``, 0-9) beyond
    ``microsecond``; ``_compared_with`` is the stdlib class equality is defined against."""

    nanosecond_100: int
    _compared_with: type

    def __new__(cls, *args: Any, nanosecond_100: int = 0, **kwargs: Any) -> Self:
        self = super().__new__(cls, *args, **kwargs)
        if not 0 <= nanosecond_100 <= 9:
            raise ValueError("nanosecond_100 must be 0..9")
        self.nanosecond_100 = nanosecond_100
        return self

    def __repr__(self) -> str:
        return f"{super().__repr__()[:-1]}, nanosecond_100={self.nanosecond_100})"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, self._compared_with):
            return super().__eq__(other) and self.nanosecond_100 == ticks_of(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash((super().__hash__(), self.nanosecond_100))


class PreciseDateTime(_HundredNanoseconds, dt.datetime):
    """A datetime with a 100 ns digit (``nanosecond_100``, 0-9) beyond ``microsecond``."""

    _compared_with = dt.datetime


class PreciseTime(_HundredNanoseconds, dt.time):
    """A time with a 100 ns digit (``nanosecond_100``, 0-9) beyond ``microsecond``."""

    _compared_with = dt.time


def ticks_of(value: object) -> int:
    """The 100 ns digit of a datetime/time (0 for plain Python values)."""
    return int(getattr(value, "nanosecond_100", 0))


@dataclass(frozen=True)
class SqlVariant:
    """A sql_variant value: ``value`` (the base type's Python value) of type ``base``."""

    value: object
    base: SqlType
