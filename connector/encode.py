"""SQL Server values <-> the FIXED JSON encoding of edgetds/1 (SPEC.md, "JSON encoding").

Two directions:

- results: python-tds column descriptions and row values -> NDJSON lines (`describe`,
  `columns_line`, `RowEncoder`). bigint is always a decimal string, decimal/money a string with the
  column's scale, binary base64, date/time ISO 8601 at the type's precision, uniqueidentifier
  lowercase, NULL null.
- parameters: the QUERY frame's JSON params -> typed python-tds parameters (`decode_params`), so
  every value is BOUND with an explicit SQL type (never interpolated). Typing every parameter also
  sidesteps two python-tds traps: `bytes` would go as NVARCHAR and `None` would be inlined as the
  literal NULL.

Known python-tds (1.17.1) limits, documented rather than hidden: COLMETADATA's char/nchar/binary
arrive as the var- types (python-tds keeps no fixed/var distinction), numeric arrives as decimal,
and time/datetime2/datetimeoffset values carry microseconds: results get their 7th fractional digit
back through the type handler in _tdstypes.py (installed on each connection before a statement),
and a parameter with a non-zero 7th digit is bound as text that SQL Server converts to the declared
type.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import functools
import math
import re
import struct
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, assert_never

import msgspec
from pytds import tds_base, tds_types

from protocol import SQL_TYPE_TABLE, SqlArgs, SqlFamily, SqlType, ndjson_line

from ._tdstypes import nanosecond_100

__all__ = [
    "BoundParam",
    "ColumnInfo",
    "ParamError",
    "RowEncoder",
    "columns_line",
    "decode_params",
    "describe",
    "result_shape",
]

# TDS type ids as python-tds reports them in cursor.description (the serializer's get_typeid()).
_TYPE_NAMES: dict[int, str] = {
    tds_base.SYBBIT: "bit",
    tds_base.SYBBITN: "bit",
    tds_base.SYBINT1: "tinyint",
    tds_base.SYBINT2: "smallint",
    tds_base.SYBINT4: "int",
    tds_base.SYBINT8: "bigint",
    tds_base.SYBREAL: "real",
    tds_base.SYBFLT8: "float",
    tds_base.SYBMONEY4: "smallmoney",
    tds_base.SYBMONEY: "money",
    tds_base.SYBDATETIME4: "smalldatetime",
    tds_base.SYBDATETIME: "datetime",
    tds_base.SYBDECIMAL: "decimal",
    tds_base.SYBNUMERIC: "numeric",
    tds_base.SYBMSDATE: "date",
    tds_base.SYBMSTIME: "time",
    tds_base.SYBMSDATETIME2: "datetime2",
    tds_base.SYBMSDATETIMEOFFSET: "datetimeoffset",
    tds_base.XSYBVARCHAR: "varchar",
    tds_base.XSYBCHAR: "char",
    tds_base.XSYBNVARCHAR: "nvarchar",
    tds_base.XSYBNCHAR: "nchar",
    tds_base.SYBNTEXT: "nvarchar",  # python-tds reports nvarchar(max) (and ntext) as NTEXT
    tds_base.SYBTEXT: "text",
    tds_base.XSYBVARBINARY: "varbinary",
    tds_base.XSYBBINARY: "binary",
    tds_base.SYBIMAGE: "image",
    tds_base.SYBUNIQUE: "uniqueidentifier",
    tds_base.SYBMSXML: "xml",
    tds_base.SYBVARIANT: "sql_variant",
}


@dataclass(frozen=True)
class ColumnInfo:
    """One result column as the HTTP API describes it (`{"columns": [...]}` entries)."""

    name: str
    type: str
    nullable: bool
    precision: int | None = None
    scale: int | None = None
    length: int | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "nullable": self.nullable,
            "precision": self.precision,
            "scale": self.scale,
            "length": self.length,
        }


def describe(description: Sequence[Sequence[Any]]) -> list[ColumnInfo]:
    """Turn a python-tds ``cursor.description`` into column metadata.

    description entries are (name, type_id, None, size, precision, scale, nullable) as built by
    python-tds from COLMETADATA.
    """
    out = []
    for name, type_id, _display, size, precision, scale, nullable in description:
        type_name = _TYPE_NAMES.get(type_id, "sql_variant")
        sql = SQL_TYPE_TABLE.get(type_name)  # None: sql_variant
        length: int | None = None
        prec: int | None = None
        sc: int | None = None
        if sql is None:
            pass
        elif sql.args is SqlArgs.LENGTH:
            # python-tds: (max) has size 0 (varchar) or comes as NTEXT without a size: -1
            length = -1 if size is None or size <= 0 else int(size)
        elif sql.args is SqlArgs.PRECISION_SCALE:
            prec, sc = int(precision), int(scale)
        elif sql.args is SqlArgs.SCALE:
            sc = int(precision)  # python-tds keeps the fractional digits in .precision
        else:
            # fixed by the type (datetime is 1/300 s, shown as milliseconds; money has 4 digits)
            prec, sc = sql.fixed_precision, sql.fixed_scale
        out.append(
            ColumnInfo(
                name=name or "",
                type=type_name,
                nullable=bool(nullable),
                precision=prec,
                scale=sc,
                length=length,
            )
        )
    return out


def columns_line(columns: Sequence[ColumnInfo]) -> bytes:
    return ndjson_line({"columns": [c.as_json() for c in columns]})


# ---------------------------------------------------------------------------------------------
# values -> JSON


def _fraction(t: dt.time | dt.datetime, scale: int) -> str:
    if scale <= 0:
        return ""
    digits = f"{t.microsecond:06d}{nanosecond_100(t)}"  # 100 ns: see _tdstypes
    return "." + digits[:scale]


def _time_text(t: dt.time | dt.datetime, scale: int) -> str:
    return f"{t.hour:02d}:{t.minute:02d}:{t.second:02d}" + _fraction(t, scale)


def _datetime_text(v: dt.datetime, scale: int) -> str:
    return f"{v.year:04d}-{v.month:02d}-{v.day:02d}T" + _time_text(v, scale)


def _offset_text(v: dt.datetime) -> str:
    offset = v.utcoffset() or dt.timedelta(0)
    minutes = int(offset.total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    minutes = abs(minutes)
    return f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"


def _real(v: float) -> float:
    # REAL is float32: print the shortest decimal that reads back as the same float32 (1.1, not
    # 1.100000023841858), like SQL Server's own clients do.
    packed = struct.pack("<f", v)
    for digits in range(6, 10):
        candidate = float(f"{v:.{digits}g}")
        if struct.pack("<f", candidate) == packed:
            return candidate
    return v


def _variant(v: Any) -> Any:
    # sql_variant: encode by the Python type python-tds produced
    if v is None or isinstance(v, bool | str | float):
        return v
    if isinstance(v, int):
        return v if -(2**53) < v < 2**53 else str(v)
    if isinstance(v, Decimal):
        return format(v, "f")
    if isinstance(v, bytes):
        return base64.b64encode(v).decode("ascii")
    if isinstance(v, uuid.UUID):
        return str(v)
    if isinstance(v, dt.datetime):
        text = _datetime_text(v, 7 if v.microsecond or nanosecond_100(v) else 0)
        return text + _offset_text(v) if v.tzinfo else text
    if isinstance(v, dt.date):
        return v.isoformat()
    if isinstance(v, dt.time):
        return _time_text(v, 7 if v.microsecond or nanosecond_100(v) else 0)
    return str(v)


Encoder = Callable[[Any], Any]


def _encoder(col: ColumnInfo) -> Encoder:
    sql = SQL_TYPE_TABLE.get(col.type)
    if sql is None:
        return _variant
    scale = col.scale or 0
    match sql.family:
        case SqlFamily.BIT:
            return bool
        case SqlFamily.INTEGER:
            return int
        case SqlFamily.BIGINT:
            return str
        case SqlFamily.DECIMAL:
            return lambda v: format(v, f".{scale}f")
        case SqlFamily.REAL:
            return _real
        case SqlFamily.FLOAT:
            return float
        case SqlFamily.BINARY:
            return lambda v: base64.b64encode(v).decode("ascii")
        case SqlFamily.DATE:
            return lambda v: v.isoformat()
        case SqlFamily.TIME:
            return lambda v: _time_text(v, scale)
        case SqlFamily.DATETIME:
            return lambda v: _datetime_text(v, scale)
        case SqlFamily.DATETIMEOFFSET:
            return lambda v: _datetime_text(v, scale) + _offset_text(v)
        case SqlFamily.UUID:
            return lambda v: str(v).lower()
        case SqlFamily.STRING:
            return lambda v: v if isinstance(v, str) else bytes(v).decode("utf-8", "replace")
        case _:
            assert_never(sql.family)


#: the JSON text of the floats JSON has no number for, as json.dumps writes them
_NONFINITE = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


def _json_float(v: float) -> msgspec.Raw:
    """A float's JSON text exactly as json.dumps writes it: ``float.__repr__`` (msgspec would
    write 1e16 and 0.00001 where json.dumps writes 1e+16 and 1e-05), NaN and Infinity as words."""
    if math.isfinite(v):
        return msgspec.Raw(float.__repr__(v))
    return msgspec.Raw(_NONFINITE[repr(float(v))])


def _json_variant(v: Any) -> Any:
    """`_variant`, its result as msgspec writes it like json.dumps (only exact str, int, bool and
    None go to msgspec as they are: it refuses subclasses)."""
    out = _variant(v)
    if out is None or type(out) in (str, int, bool):
        return out
    if isinstance(out, float):
        return _json_float(out)
    if isinstance(out, int):
        return msgspec.Raw(int.__repr__(out))
    return str.__str__(out)


#: Per family: the value type python-tds produces that the encoding passes on unchanged (a column
#: whose values all have it, or are NULL, needs no call per value).
_PASSED_ON: dict[SqlFamily, frozenset[type]] = {
    SqlFamily.BIT: frozenset({bool, type(None)}),
    SqlFamily.INTEGER: frozenset({int, type(None)}),
    SqlFamily.STRING: frozenset({str, type(None)}),
}


def _json_encoder(col: ColumnInfo) -> Encoder:
    """`_encoder` with floats as msgspec.Raw JSON text (see `_json_float`) and text as an exact
    str (msgspec refuses subclasses)."""
    sql = SQL_TYPE_TABLE.get(col.type)
    if sql is None:
        return _json_variant
    encode = _encoder(col)
    if sql.family in (SqlFamily.REAL, SqlFamily.FLOAT):
        return lambda v: _json_float(encode(v))
    if sql.family is SqlFamily.STRING:
        return lambda v: str.__str__(v) if isinstance(v, str) else encode(v)
    return encode


class RowEncoder:
    """Encodes rows of one result set as NDJSON lines (JSON arrays in column order).

    Strategy: a batch of rows at a time (`encode_rows`), column by column. A column whose values
    already are what the encoding writes (int, str, bool and NULL: `_PASSED_ON`) is checked by
    type and left alone; any other column is converted value by value (`_encoder`). msgspec then
    writes all lines in one call. The bytes are exactly those of ``json.dumps(row,
    ensure_ascii=False, separators=(",", ":"))`` plus a newline per row: msgspec escapes strings
    as json.dumps does (only ``"``, ``\\`` and control characters, the latter as ``\\n`` etc. or
    ``\\u00XX``), and floats go as `_json_float` text.
    """

    def __init__(self, columns: Sequence[ColumnInfo]) -> None:
        sql = [SQL_TYPE_TABLE.get(c.type) for c in columns]
        self._columns = [
            (_PASSED_ON.get(s.family) if s is not None else None, _json_encoder(c))
            for s, c in zip(sql, columns, strict=True)
        ]
        self._lines = msgspec.json.Encoder().encode_lines

    def encode(self, row: Sequence[Any]) -> bytes:
        """One row's NDJSON line."""
        return self.encode_rows((row,))

    def encode_rows(self, rows: Sequence[Sequence[Any]]) -> bytes:
        """The NDJSON lines of ``rows`` (python-tds rows of this result set), one per row."""
        if not rows:
            return b""
        values: list[Sequence[Any]] = list(zip(*rows, strict=True))
        converted = False
        for i, (passed_on, encode) in enumerate(self._columns):
            column = values[i]
            if passed_on is not None and passed_on.issuperset(map(type, column)):
                continue
            values[i] = [None if v is None else encode(v) for v in column]
            converted = True
        return self._lines(zip(*values, strict=True) if converted else rows)


def result_shape(description: Sequence[Sequence[Any]]) -> tuple[RowEncoder, bytes]:
    """The row encoder and the COLUMNS line of a result set with python-tds's ``description``.

    Both are pure functions of the description (and a RowEncoder keeps no state), so they are
    remembered for the last 256 descriptions: an application runs the same statements again and
    again, and a small result would otherwise build its column list, encoders and JSON each time.
    """
    try:
        key = tuple(tuple(column) for column in description)
        hash(key)
    except TypeError:  # an unhashable member: never expected from python-tds; build it afresh
        return _shape_of(description)
    return _remembered_shape(key)


def _shape_of(description: Sequence[Sequence[Any]]) -> tuple[RowEncoder, bytes]:
    columns = describe(description)
    return RowEncoder(columns), columns_line(columns)


#: thread-safe (lru_cache): result sets are read in the connections' worker threads
_remembered_shape = functools.lru_cache(maxsize=256)(_shape_of)


# ---------------------------------------------------------------------------------------------
# JSON params -> bound, typed python-tds parameters


class ParamError(ValueError):
    """A query parameter is malformed; maps to request.invalid. Never includes the value."""

    def __init__(self, name: str, message: str) -> None:
        self.name = name
        super().__init__(f"parameter {name!r}: {message}")


@dataclass(frozen=True)
class BoundParam:
    """A decoded parameter: its T-SQL name (with '@'), declared type, and Python value."""

    name: str
    sql_type: str
    value: Any

    def to_pytds(self) -> tds_base.Param:
        """The python-tds parameter (its TDS type; the DECLARED type is `sql_type`)."""
        declaration, value = self.wire()
        return tds_base.Param(name=self.name, type=wire_type(declaration), value=value)

    def wire(self) -> tuple[str, Any]:
        """The type the value travels as (the DECLARED type is `sql_type`), and the value as
        python-tds sends it."""
        value = self.value
        if isinstance(value, PreciseText):
            return "nvarchar(64)", str(value)
        if self.sql_type.startswith("binary("):
            # python-tds 1.17.1 cannot build a BINARY(n) parameter (its serializer lacks the
            # size): send VARBINARY(n); the declared binary(n) converts (and pads) server-side
            return "var" + self.sql_type, value
        return self.sql_type, value


#: python-tds's type of a declaration (its parse is a regular expression match and a lookup);
#: the type objects are never changed after they are made. Thread-safe (lru_cache).
wire_type = functools.lru_cache(maxsize=256)(tds_types.sql_type_by_declaration)


_NAME = re.compile(r"@?[A-Za-z_][A-Za-z0-9_]{0,127}")
_TYPE = re.compile(r"\s*([A-Za-z0-9]+)\s*(?:\(\s*(max|\d+)\s*(?:,\s*(\d+)\s*)?\))?\s*", re.I)
_ISO_FRACTION = re.compile(r"(\d{2}:\d{2}:\d{2})(?:\.(\d{1,7}))?")
_OFFSET = re.compile(r"(Z|[+-]\d{2}:\d{2})$")


def _has_offset(text: str) -> bool:
    return bool(_OFFSET.search(text.strip()))


class PreciseText(str):
    """A time value with 100-nanosecond digits, sent as text: python-tds carries microseconds,
    so it travels as NVARCHAR and SQL Server converts it to the DECLARED type (sp_executesql
    converts each value to its declared type), keeping all 7 digits."""


def _time_value(name: str, text: str, parse: Any) -> Any:
    """Parse an ISO 8601 time/datetime; 7 fractional digits with a non-zero last one stay text."""
    m = _ISO_FRACTION.search(text)
    frac = m.group(2) if m else None
    if m is None or frac is None or len(frac) < 7:
        return parse(text)
    short = text[: m.start(2)] + frac[:6] + text[m.end(2) :]
    value = parse(short)  # validates everything but the last digit
    return value if frac[6] == "0" else PreciseText(text)


#: money and smallmoney are 64- and 32-bit signed counts of 1/10,000, written truncated toward
#: zero (`_tdstypes.money_units`): the open interval of the values that fit, compared as decimals
#: (an integer of 10**100000 units would take a noticeable time to build)
_MONEY_RANGE = {
    name: (Decimal(-(2**bits) - 1).scaleb(-4), Decimal(2**bits).scaleb(-4))
    for name, bits in (("money", 63), ("smallmoney", 31))
}


def _typed_value(name: str, sql: SqlType, decl: str, whole: int | None, value: Any) -> Any:
    """Convert the JSON value of a typed param into the Python value python-tds binds (``decl``,
    ``whole``: `_normalize_type`'s declaration and digits before a decimal's point)."""
    if value is None:
        return None
    base = sql.name
    try:
        match sql.family:
            case SqlFamily.BIT:
                if not isinstance(value, bool | int) or value not in (0, 1):
                    raise ParamError(name, "bit takes true/false (or 0/1)")
                return bool(value)
            case SqlFamily.INTEGER | SqlFamily.BIGINT:
                if isinstance(value, bool) or not isinstance(value, int | str):
                    raise ParamError(name, f"{base} takes an integer (or a decimal string)")
                number = int(value)
                lo, hi = sql.value_range or (number, number)
                if not lo <= number <= hi:
                    raise ParamError(name, f"value out of range for {base}")
                return number
            case SqlFamily.DECIMAL:
                if isinstance(value, bool) or not isinstance(value, str | int):
                    raise ParamError(name, f'{base} takes a string such as "12.34" (not a float)')
                d = Decimal(value)
                if not d.is_finite():
                    raise ParamError(name, f"{base} must be finite")
                bounds = _MONEY_RANGE.get(base)
                if bounds is not None and not bounds[0] < d < bounds[1]:
                    raise ParamError(name, f"value out of range for {base}")
                if whole is not None and d.copy_abs() >= Decimal(1).scaleb(whole):  # exact
                    raise ParamError(
                        name, f"{decl} holds at most {whole} digits before the decimal point"
                    )
                return d
            case SqlFamily.REAL | SqlFamily.FLOAT:
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise ParamError(name, f"{base} takes a number")
                return float(value)
            case SqlFamily.STRING:
                if not isinstance(value, str):
                    raise ParamError(name, f"{base} takes a string")
                return value
            case SqlFamily.BINARY:
                if not isinstance(value, str):
                    raise ParamError(name, f"{base} takes a base64 string")
                return tds_types.Binary(base64.b64decode(value, validate=True))
            case SqlFamily.UUID:
                if not isinstance(value, str):
                    raise ParamError(name, "uniqueidentifier takes a string")
                return uuid.UUID(value)
            case SqlFamily.DATE | SqlFamily.TIME | SqlFamily.DATETIME | SqlFamily.DATETIMEOFFSET:
                if not isinstance(value, str):
                    raise ParamError(name, f"{base} takes an ISO 8601 string")
                return _time_typed(name, sql, value)
            case _:
                assert_never(sql.family)
    except ParamError:
        raise
    except (ValueError, ArithmeticError, binascii.Error, TypeError):
        raise ParamError(name, f"not a valid {base} value") from None


def _time_typed(name: str, sql: SqlType, value: str) -> Any:
    """A date/time parameter from its ISO 8601 text (an offset only for datetimeoffset)."""
    if sql.family is SqlFamily.DATE:
        return dt.date.fromisoformat(value)
    if sql.family is SqlFamily.TIME:
        return _time_value(name, value, dt.time.fromisoformat)
    v = _time_value(name, value, dt.datetime.fromisoformat)
    aware = _has_offset(value) if isinstance(v, PreciseText) else v.tzinfo is not None
    if sql.family is SqlFamily.DATETIME and aware:
        raise ParamError(name, f"{sql.name} takes a time without offset (use datetimeoffset)")
    if sql.family is SqlFamily.DATETIMEOFFSET and not aware:
        raise ParamError(name, "datetimeoffset needs an offset such as +02:00 or Z")
    return v


def _bare(name: str, value: Any) -> tuple[str, Any]:
    if value is None:
        return "nvarchar(4000)", None
    if isinstance(value, bool):
        return "bit", value
    if isinstance(value, int):
        if not -(2**63) <= value < 2**63:
            raise ParamError(name, "integer out of range for bigint (send a decimal type)")
        return "bigint", value
    if isinstance(value, float):
        return "float", value
    if isinstance(value, str):
        return "nvarchar(max)", value
    raise ParamError(name, 'must be a string, number, boolean, null or {"type", "value"}')


def _normalize_type(name: str, text: str) -> tuple[SqlType, str, int | None]:
    """Validate a declared type; return (its table row, canonical declaration, and for a
    decimal the digits it holds before the point)."""
    m = _TYPE.fullmatch(text)
    if not m:
        raise ParamError(name, f"type {text[:40]!r} is not a SQL Server type such as decimal(18,4)")
    base = m.group(1).lower()
    arg1, arg2 = m.group(2), m.group(3)
    sql = SQL_TYPE_TABLE.get(base)
    if sql is None:
        raise ParamError(name, f"unsupported type {base!r}")
    match sql.args:
        case SqlArgs.NONE:
            if arg1 is not None:
                raise ParamError(name, f"{base} takes no length/precision")
            return sql, base, None
        case SqlArgs.PRECISION_SCALE:
            p = int(arg1) if arg1 and arg1 != "max" else 18
            s = int(arg2) if arg2 else 0
            if not (1 <= p <= 38 and 0 <= s <= p):
                raise ParamError(
                    name, f"{base}({p},{s}) is out of range (precision 1-38, scale <= p)"
                )
            return sql, f"decimal({p},{s})", p - s
        case SqlArgs.SCALE:
            s = int(arg1) if arg1 and arg1 != "max" else 7
            if arg2 is not None or not 0 <= s <= 7:
                raise ParamError(name, f"{base} takes a fractional precision 0-7")
            return sql, f"{base}({s})", None
        case SqlArgs.LENGTH:
            if arg2 is not None:
                raise ParamError(name, f"{base} takes one length")
            if arg1 is None:
                return sql, f"{base}(max)" if sql.takes_max else f"{base}(1)", None
            if arg1 != "max":
                limit = sql.max_length
                if limit is None or not 1 <= int(arg1) <= limit:
                    raise ParamError(name, f"{base} length must be 1-{limit} or max")
            elif not sql.takes_max:
                raise ParamError(name, f"{base}(max) does not exist; use var{base}(max)")
            return sql, f"{base}({arg1})", None
        case _:
            assert_never(sql.args)


def decode_params(params: Mapping[str, Any]) -> list[BoundParam]:
    """Decode the QUERY frame's params into typed, bound parameters.

    Raises:
        ParamError: a name or value is malformed (the message never contains the value).
    """
    if type(params) is not dict and not isinstance(params, Mapping):  # dict: no ABC check
        raise ParamError("params", "must be a JSON object {name: value}")
    out: list[BoundParam] = []
    seen: set[str] = set()
    for raw_name, raw in params.items():
        if not isinstance(raw_name, str) or not _NAME.fullmatch(raw_name):
            raise ParamError(str(raw_name)[:64], "names are letters, digits and _ (an optional @)")
        name = raw_name if raw_name.startswith("@") else "@" + raw_name
        if name.lower() in seen:
            raise ParamError(raw_name, "given twice")
        seen.add(name.lower())
        if isinstance(raw, dict):
            if set(raw) - {"type", "value"} or not isinstance(raw.get("type"), str):
                raise ParamError(raw_name, 'a typed parameter is {"type": "...", "value": ...}')
            sql, decl, whole = _normalize_type(raw_name, raw["type"])
            value = _typed_value(raw_name, sql, decl, whole, raw.get("value"))
            out.append(BoundParam(name, decl, value))
        elif isinstance(raw, list):
            raise ParamError(raw_name, "arrays are not SQL Server values")
        else:
            decl, value = _bare(raw_name, raw)
            out.append(BoundParam(name, decl, value))
    return out
