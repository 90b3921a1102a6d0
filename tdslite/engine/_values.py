"""Values: SQL Server Python values <-> SQLite storage, and CAST/CONVERT semantics.

SQLite has no DECIMAL, DATETIME2 or GUID, so each SQL Server type has one lossless storage form:

- bit, tinyint..bigint: INTEGER.   real, float: REAL.   char types: TEXT.   binary types: BLOB.
- decimal/numeric/money/smallmoney: INTEGER when integral, else REAL when the REAL reads back as
  exactly the same decimal (always true up to 15 significant digits), else canonical TEXT.  Numbers
  then compare and sort as numbers; only decimals of more than 15 significant digits are TEXT.
- date 'YYYY-MM-DD'; time 'HH:MM:SS.fffffff'; datetime/smalldatetime/datetime2
  'YYYY-MM-DD HH:MM:SS.fffffff' (sorts chronologically, and SQLite's date functions read it).
- datetimeoffset: the UTC instant then the offset, 'YYYY-MM-DD HH:MM:SS.fffffff @+HH:MM', so that
  ORDER BY and comparisons follow the instant as SQL Server's do.
- uniqueidentifier: upper-case 36-character TEXT (SQL Server's string form).
- sql_variant (a `SqlVariant`: the base value and its type): TEXT ``<base type>\x1f<kind><payload>``
  (kind ``i`` integer, ``f`` real, ``s`` text, ``b`` hex bytes: the base type's own storage form),
  so a stored value reads back with the same base type.  Comparisons and ORDER BY on a sql_variant
  column see that text, not SQL Server's sql_variant ordering (compare after a CAST to the base
  type instead).

`encode` and `decode` convert one value; `convert` is CAST/CONVERT from one type to another,
rounding, truncating and failing as SQL Server does (errors 245, 241, 8115, 8169).
"""

from __future__ import annotations

import datetime as dt
import decimal
import functools
import re
import struct
import uuid
from decimal import Decimal
from typing import TYPE_CHECKING, Any, cast

from . import _errors
from ._datetext import parse_temporal_text
from ._errors import SqlError
from ._types import (
    BINARY_TYPES,
    DATETIME_TYPES,
    DECIMAL_TYPES,
    FLOAT_TYPES,
    FRACTIONAL_TYPES,
    INTEGER_TYPES,
    MONEY_TYPES,
    STRING_TYPES,
    PreciseDateTime,
    PreciseTime,
    SqlType,
    SqlVariant,
    ticks_of,
)

if TYPE_CHECKING:
    from _typeshed import ConvertibleToInt, ReadableBuffer

Storage = int | float | str | bytes | None
_SEP = "\x1f"  # between a stored sql_variant's base type and its value

_INT_RANGES = {
    "bit": (0, 1),
    "tinyint": (0, 255),
    "smallint": (-(2**15), 2**15 - 1),
    "int": (-(2**31), 2**31 - 1),
    "bigint": (-(2**63), 2**63 - 1),
}
_MONEY_LIMIT = {
    "money": (Decimal("-922337203685477.5808"), Decimal("922337203685477.5807")),
    "smallmoney": (Decimal("-214748.3648"), Decimal("214748.3647")),
}
_DECIMAL_CONTEXT = decimal.Context(prec=80, rounding=decimal.ROUND_HALF_UP)

# -- storage ---------------------------------------------------------------------------------


def decimal_storage(value: Decimal) -> Storage:
    """The storage form of an exact number (see the module docstring)."""
    if value == value.to_integral_value() and -(2**63) <= value < 2**63:
        return int(value)
    as_float = float(value)
    if Decimal(repr(as_float)) == value:
        return as_float
    return format(value, "f")


def _fraction(value: object, digits: int = 7) -> str:
    ticks = getattr(value, "microsecond", 0) * 10 + ticks_of(value)
    return f"{ticks:07d}"[:digits]


def _utc_offset_text(value: dt.datetime) -> str:
    offset = value.utcoffset() or dt.timedelta(0)
    minutes = int(offset.total_seconds() // 60)
    sign = "-" if minutes < 0 else "+"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def _ymd(value: dt.date) -> str:
    # strftime("%Y") does not zero-pad years before 1000 on Linux.
    return f"{value.year:04d}-{value.month:02d}-{value.day:02d}"


def encode(sql_type: SqlType, value: object) -> Storage:
    """Storage form of a Python value already of the type's Python class (see _types)."""
    if value is None:
        return None
    name = sql_type.name
    if name in INTEGER_TYPES:
        return int(cast("ConvertibleToInt", value))
    if name in DECIMAL_TYPES or name in MONEY_TYPES:
        return decimal_storage(Decimal(value))  # type: ignore[arg-type]
    if name in FLOAT_TYPES:
        return float(value)  # type: ignore[arg-type]
    if name in STRING_TYPES:
        return str(value)
    if name in BINARY_TYPES:
        return bytes(cast("ReadableBuffer", value))
    if name == "uniqueidentifier":
        return str(value).upper()
    if name == "date":
        assert isinstance(value, dt.date)
        return _ymd(value)
    if name == "time":
        assert isinstance(value, dt.time)
        return f"{value:%H:%M:%S}.{_fraction(value)}"
    if name in DATETIME_TYPES:
        assert isinstance(value, dt.datetime)
        return f"{_ymd(value)} {value:%H:%M:%S}.{_fraction(value)}"
    if name == "xml":
        return str(value)
    if name == "sql_variant":
        return to_storage(wrap(value, None))
    if name == "datetimeoffset":
        assert isinstance(value, dt.datetime)
        assert value.tzinfo is not None
        utc = value.astimezone(dt.UTC)
        return f"{_ymd(utc)} {utc:%H:%M:%S}.{_fraction(value)} @{_utc_offset_text(value)}"
    raise ValueError(f"cannot store type {sql_type}")


def decode(sql_type: SqlType, raw: Storage) -> object:
    """Python value of a stored (or computed) SQLite value, typed as ``sql_type``."""
    if raw is None:
        return None
    # Computed values may be longer than an inferred length: never truncate on the way out.
    if sql_type.name in STRING_TYPES:
        return raw if isinstance(raw, str) else to_text(raw)
    if sql_type.name in BINARY_TYPES and isinstance(raw, bytes):
        return raw
    if sql_type.name == "xml":
        return raw if isinstance(raw, str) else to_text(raw)
    if sql_type.name == "sql_variant":
        return from_storage(raw)
    return convert(raw, sql_type, source=None)


def python_type_of(raw: object) -> SqlType:
    """The SQL Server type a Python value is given when nothing better is known."""
    if isinstance(raw, bool):
        return SqlType("bit")
    if isinstance(raw, int):
        return SqlType("int") if -(2**31) <= raw < 2**31 else SqlType("bigint")
    if isinstance(raw, float):
        return SqlType("float")
    if isinstance(raw, Decimal):
        return SqlType("decimal", precision=38, scale=max(0, -raw.as_tuple().exponent))  # type: ignore[operator]
    if isinstance(raw, bytes):
        return SqlType("varbinary", length=-1)
    if isinstance(raw, uuid.UUID):
        return SqlType("uniqueidentifier")
    if isinstance(raw, dt.datetime):
        return SqlType("datetimeoffset" if raw.tzinfo else "datetime2", scale=7)
    if isinstance(raw, dt.date):
        return SqlType("date")
    if isinstance(raw, dt.time):
        return SqlType("time", scale=7)
    if isinstance(raw, SqlVariant):
        return SqlType("sql_variant")
    return SqlType("nvarchar", length=-1)


# -- CAST / CONVERT ---------------------------------------------------------------------------


def _source_name(value: object, source: SqlType | None) -> str:
    if source is not None:
        return source.name
    return "nvarchar" if isinstance(value, str) else python_type_of(value).name


def convert(value: object, target: SqlType, *, source: SqlType | None) -> object:
    """CAST ``value`` (a Python or storage value, of type ``source`` if known) to ``target``.

    Raises:
        SqlError: 245/241/8169 conversion failed, 8115 overflow.
    """
    if value is None:
        return None
    if (
        source is not None
        and source.name in ("xml", "sql_variant")
        or target.name
        in (
            "xml",
            "sql_variant",
        )
    ):
        value, source = _special(value, target, source)
        if target.name in ("xml", "sql_variant"):
            return value
    if source is not None and isinstance(value, str | int | float | bytes):
        if source.name not in STRING_TYPES and source.name not in INTEGER_TYPES | FLOAT_TYPES:
            value = _parse_stored(value, source)
    name = target.name
    if name in INTEGER_TYPES:
        return _to_int(value, target, source)
    if name in DECIMAL_TYPES or name in MONEY_TYPES:
        return _to_decimal(value, target, source)
    if name in FLOAT_TYPES:
        return _to_float(value, target, source)
    if name in STRING_TYPES:
        return _to_string(value, target, style=0, source=source)
    if name in BINARY_TYPES:
        return _to_binary(value, target, source)
    if name == "uniqueidentifier":
        return _to_uuid(value)
    return _to_temporal(value, target, source)


def _special(value: object, target: SqlType, source: SqlType | None) -> tuple[object, SqlType]:
    """Conversions to and from xml and sql_variant: (the value, its type now).

    To xml: a string, checked for well-formedness (9400-range errors); to sql_variant: the value
    with its base type. From xml: an nvarchar(max); from sql_variant: the base value and type.
    """
    from ._xml import check_xml

    if source is not None and source.name == "sql_variant":
        variant = value if isinstance(value, SqlVariant) else from_storage(value)
        value, source = variant.value, variant.base
    elif source is not None and source.name == "xml":
        source = SqlType("nvarchar", length=-1)
    if target.name == "sql_variant":
        return wrap(value, source), target
    if target.name == "xml":
        if isinstance(value, bytes):
            value = value.decode("utf-16-le" if value[:2] == b"\xff\xfe" else "utf-8")
        elif not isinstance(value, str):
            raise SqlError(
                529, f"Explicit conversion from data type {_source_name(value, source)} to xml "
                "is not allowed.",
            )  # fmt: skip
        return check_xml(value), target
    assert source is not None
    return value, source


def _parse_stored(value: object, source: SqlType) -> object:
    """A stored value of a non-text type back to its Python class (e.g. '2024-..' -> datetime)."""
    if source.name in DECIMAL_TYPES or source.name in MONEY_TYPES:
        return Decimal(repr(value)) if isinstance(value, float) else Decimal(str(value))
    if source.name == "uniqueidentifier" and isinstance(value, str):
        return _to_uuid(value)
    if isinstance(value, str):
        return _to_temporal(value, source, source=None)
    return value


def _to_int(value: object, target: SqlType, source: SqlType | None) -> int | bool:
    low, high = _INT_RANGES[target.name]
    if isinstance(value, str):
        text = value.strip()
        if target.name == "bit" and text.lower() in ("true", "false"):
            return text.lower() == "true"
        if not re.fullmatch(r"[+-]?\d+", text):
            raise _errors.conversion_failed(_source_name(value, source), value, target.name)
        number = int(text)
    elif isinstance(value, bool | int):
        number = int(value)
    elif isinstance(value, float | Decimal):
        number = int(value)  # truncates toward zero, as SQL Server does
        if target.name == "bit":
            return value != 0
    else:
        raise _errors.conversion_failed(_source_name(value, source), str(value), target.name)
    if target.name == "bit":
        return number != 0
    if not low <= number <= high:
        raise _errors.overflow(target.name)
    return number


def _to_decimal(value: object, target: SqlType, source: SqlType | None) -> Decimal:
    if isinstance(value, Decimal):
        number = value
    elif isinstance(value, bool | int):
        number = Decimal(int(value))
    elif isinstance(value, float):
        number = Decimal(repr(value))
    elif isinstance(value, str):
        try:
            number = Decimal(value.strip().replace("$", "", 1))
        except decimal.InvalidOperation:
            raise _errors.SqlError(
                8114, f"Error converting data type {_source_name(value, source)} to numeric."
            ) from None
        if not number.is_finite():
            raise _errors.SqlError(8114, "Error converting data type nvarchar to numeric.")
    else:
        raise _errors.conversion_failed(_source_name(value, source), str(value), target.name)
    scale = 4 if target.name in MONEY_TYPES else int(target.scale or 0)
    rounded = number.quantize(Decimal(1).scaleb(-scale), context=_DECIMAL_CONTEXT)
    if target.name in MONEY_TYPES:
        low, high = _MONEY_LIMIT[target.name]
        if not low <= rounded <= high:
            raise _errors.overflow(target.name)
    elif len(rounded.as_tuple().digits) > int(target.precision or 18) and rounded != 0:
        raise _errors.overflow(f"{target.name}")
    return rounded


def _to_float(value: object, target: SqlType, source: SqlType | None) -> float:
    try:
        number = float(value.strip() if isinstance(value, str) else value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise _errors.SqlError(
            8114, f"Error converting data type {_source_name(value, source)} to {target.name}."
        ) from None
    if target.name == "real":
        number = struct.unpack("<f", struct.pack("<f", number))[0]
    return number


def to_text(value: object, *, style: int = 0, source: SqlType | None = None) -> str:
    """The string SQL Server makes of a value in CAST/CONVERT (styles 0, 23, 120, 121, 126).

    A time/datetime2/datetimeoffset prints the fractional digits of its type's scale (time(3):
    ``13:14:15.123``; scale 0: no fraction); datetime/smalldatetime print style 0 as
    ``Feb 29 2024  1:14PM`` and styles 121/126 with milliseconds, as SQL Server does.
    """
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return format(value, ".6g") if style == 0 else repr(value)
    if isinstance(value, Decimal | int):
        return format(value, "f") if isinstance(value, Decimal) else str(value)
    if isinstance(value, uuid.UUID):
        return str(value).upper()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    legacy = source is not None and source.name in ("datetime", "smalldatetime")
    digits = 3 if legacy else _scale_of(source)
    if isinstance(value, dt.datetime):
        if style == 23:
            return _ymd(value)
        if legacy and style in (0, 100):
            hour = value.hour % 12 or 12
            ampm = "AM" if value.hour < 12 else "PM"
            return f"{value:%b} {value.day:2d} {value.year:04d} {hour:2d}:{value:%M}{ampm}"
        sep = "T" if style in (126, 127) else " "
        text = f"{_ymd(value)}{sep}{value:%H:%M:%S}"
        if style == 120:
            return text
        if digits:
            text += "." + _fraction(value, digits)
        if value.tzinfo is not None:
            text += " " + _utc_offset_text(value)
        return text
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, dt.time):
        return f"{value:%H:%M:%S}" + (f".{_fraction(value, digits)}" if digits else "")
    return str(value)


def _scale_of(source: SqlType | None) -> int:
    """Fractional digits of a time/datetime2/datetimeoffset type (7 when unknown)."""
    if source is None or source.scale is None or source.name not in FRACTIONAL_TYPES:
        return 7
    return int(source.scale)


def utf16_len(text: str) -> int:
    """Length in UTF-16 code units, as SQL Server counts nchar/nvarchar (a character outside the
    Basic Multilingual Plane, such as an emoji, counts 2)."""
    return len(text) + sum(1 for ch in text if ord(ch) > 0xFFFF)


def utf16_slice(text: str, start: int, stop: int | None = None) -> str:
    """``text[start:stop]`` counted in UTF-16 code units. A cut through a surrogate pair drops the
    lone half (SQL Server would keep it; SQLite cannot store it)."""
    if text.isascii() or not any(ord(ch) > 0xFFFF for ch in text):
        return text[start:stop]
    units = text.encode("utf-16-le")
    end = None if stop is None else max(0, stop) * 2
    return units[max(0, start) * 2 : end].decode("utf-16-le", "ignore")


def _to_string(value: object, target: SqlType, *, style: int, source: SqlType | None = None) -> str:
    text = value if isinstance(value, str) else to_text(value, style=style, source=source)
    if target.length is not None and target.length > 0:
        if target.name in ("nchar", "nvarchar"):  # lengths in UTF-16 code units
            text = utf16_slice(text, 0, target.length)
            return (
                text + " " * (target.length - utf16_len(text)) if target.name == "nchar" else text
            )
        text = text[: target.length]
        if target.name == "char":
            text = text.ljust(target.length)
    return text


def _to_binary(value: object, target: SqlType, source: SqlType | None) -> bytes:
    if isinstance(value, bytes):
        data = value
    elif isinstance(value, str):
        wide = source is not None and source.name.startswith("n")
        data = value.encode("utf-16-le" if wide else "utf-8")
    elif isinstance(value, bool | int):
        size = 8 if (source is not None and source.name == "bigint") else 4
        data = int(value).to_bytes(size, "big", signed=True)
    elif isinstance(value, uuid.UUID):
        data = value.bytes_le
    else:
        raise _errors.conversion_failed(_source_name(value, source), str(value), target.name)
    if target.length is not None and target.length > 0:
        data = data[: target.length]
        if target.name == "binary":
            data = data.ljust(target.length, b"\0")
    return data


def _to_uuid(value: object) -> uuid.UUID:
    if isinstance(value, uuid.UUID):
        return value
    if isinstance(value, bytes) and len(value) == 16:
        return uuid.UUID(bytes_le=value)
    try:
        return uuid.UUID(str(value).strip().strip("{}"))
    except ValueError:
        raise _errors.SqlError(
            8169, "Conversion failed when converting from a character string to uniqueidentifier."
        ) from None


def _round_fraction(ticks: int, scale: int) -> int:
    """Round 100 ns ticks (0..9_999_999) to ``scale`` digits; may return 10_000_000 (carry)."""
    unit: int = 10 ** (7 - scale)  # int ** int is typed Any (a negative exponent gives a float)
    return (ticks + unit // 2) // unit * unit


def _parse_temporal(text: str) -> tuple[dt.datetime, int, dt.tzinfo | None, bool]:
    """Parse a date/time string: (naive datetime, 100ns ticks, tz or None, had a time part)."""
    parsed = parse_temporal_text(text)
    if parsed is None:
        raise _errors.datetime_conversion()
    return parsed


def _temporal_parts(value: object) -> tuple[dt.datetime, int, dt.tzinfo | None]:
    if isinstance(value, str):
        text = value
        # Our datetimeoffset storage: the UTC instant then " @+HH:MM".
        if len(text) > 8 and text[-8:-6] == " @" and text[-6] in "+-" and text[-3] == ":":
            base, ticks, _, _ = _parse_temporal(text[:-8])
            sign = -1 if text[-6] == "-" else 1
            tz = dt.timezone(sign * dt.timedelta(hours=int(text[-5:-3]), minutes=int(text[-2:])))
            local = base.replace(tzinfo=dt.UTC).astimezone(tz)
            return local.replace(tzinfo=None), ticks, tz
        base, ticks, parsed_tz, _ = _parse_temporal(text)
        return base, ticks, parsed_tz
    if isinstance(value, dt.datetime):
        ticks = value.microsecond * 10 + ticks_of(value)
        return value.replace(microsecond=0, tzinfo=None), ticks, value.tzinfo
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day), 0, None
    if isinstance(value, dt.time):
        ticks = value.microsecond * 10 + ticks_of(value)
        return dt.datetime(1900, 1, 1, value.hour, value.minute, value.second), ticks, None
    raise _errors.conversion_failed(python_type_of(value).name, str(value), "datetime")


def _make_datetime(
    base: dt.datetime, ticks: int, tz: dt.tzinfo | None
) -> dt.datetime | PreciseDateTime:
    base = base + dt.timedelta(seconds=ticks // 10_000_000)
    ticks %= 10_000_000
    micro, extra = divmod(ticks, 10)
    if extra:
        return PreciseDateTime(
            base.year, base.month, base.day, base.hour, base.minute, base.second, micro, tz,
            nanosecond_100=extra,
        )  # fmt: skip
    return base.replace(microsecond=micro, tzinfo=tz)


def _to_temporal(value: object, target: SqlType, source: SqlType | None) -> object:
    if isinstance(value, int | float | Decimal) and not isinstance(value, bool):
        if target.name not in ("datetime", "smalldatetime"):
            raise _errors.SqlError(
                529,
                f"Explicit conversion from data type {_source_name(value, source)} to "
                f"{target.name} is not allowed.",
            )
        days = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
        base = dt.datetime(1900, 1, 1) + dt.timedelta(days=float(days))
        value = base
    base, ticks, tz = _temporal_parts(value)
    name = target.name
    if name == "date":
        return base.date()
    if name == "time":
        ticks = _round_fraction(ticks, int(target.scale if target.scale is not None else 7))
        moment = _make_datetime(base, ticks, None)
        extra = ticks_of(moment)
        if extra:
            return PreciseTime(
                moment.hour, moment.minute, moment.second, moment.microsecond,
                nanosecond_100=extra,
            )  # fmt: skip
        return moment.time()
    if name == "datetime":
        # datetime keeps 1/300 s: milliseconds end in 0, 3 or 7.
        # rounded half up: .995 is .997 (Python's round() would make it .993)
        three_hundredths = (ticks * 300 + 5_000_000) // 10_000_000
        ms = round(three_hundredths * 1000 / 300)
        if not 1753 <= base.year <= 9999:
            raise _errors.SqlError(
                242,
                "The conversion of a varchar data type to a datetime data type resulted in an "
                "out-of-range value.",
            )
        return base + dt.timedelta(milliseconds=ms)
    if name == "smalldatetime":
        total = base.second * 10_000_000 + ticks
        minute = base.replace(second=0)
        return minute + dt.timedelta(minutes=1) if total >= 299_990_000 else minute
    scale = int(target.scale if target.scale is not None else 7)
    ticks = _round_fraction(ticks, scale)
    if name == "datetime2":
        return _make_datetime(base, ticks, None)
    # datetimeoffset: a value without an offset is taken as +00:00, as SQL Server does.
    return _make_datetime(base, ticks, tz if tz is not None else dt.UTC)


def convert_style(value: object, target: SqlType, style: int, *, source: SqlType | None) -> Any:
    """CONVERT(target, value, style) for string targets; other targets ignore the style."""
    if (
        source is not None
        and source.name not in STRING_TYPES
        and isinstance(value, str | int | float | bytes)
    ):
        value = _parse_stored(value, source)
    if target.name in STRING_TYPES and not isinstance(value, str):
        return _to_string(value, target, style=style, source=source)
    return convert(value, target, source=source)


# -- fast column decoders (result rows) ---------------------------------------------------------

_INT_LIMITS = {name: _INT_RANGES[name] for name in ("tinyint", "smallint", "int", "bigint")}


def _fast_datetime(text: str) -> dt.datetime | None:
    """'YYYY-MM-DD HH:MM:SS.fffffff' (our storage form) without regular expressions."""
    if len(text) != 27 or text[4] != "-" or text[19] != ".":
        return None
    try:
        base = dt.datetime.fromisoformat(text[:26])
    except ValueError:
        return None
    extra = ord(text[26]) - 48
    if extra:
        return PreciseDateTime(
            base.year, base.month, base.day, base.hour, base.minute, base.second,
            base.microsecond, nanosecond_100=extra,
        )  # fmt: skip
    return base


def decoder(sql_type: SqlType) -> Any:
    """A fast ``raw -> Python value`` function for one result column of ``sql_type``."""
    name = sql_type.name
    slow: Any = functools.partial(decode, sql_type)
    if name in _INT_LIMITS:
        low, high = _INT_LIMITS[name]
        return lambda v: v if type(v) is int and low <= v <= high else slow(v)
    if name == "bit":
        return lambda v: (v != 0) if type(v) is int else slow(v)
    if name in STRING_TYPES:
        return lambda v: v if type(v) is str or v is None else slow(v)
    if name == "float":
        return lambda v: v if type(v) is float or v is None else slow(v)
    if name in DECIMAL_TYPES or name in MONEY_TYPES:
        quantum = Decimal(1).scaleb(-(4 if name in MONEY_TYPES else int(sql_type.scale or 0)))

        def decimal_value(v: object) -> object:
            if type(v) is float:
                return Decimal(repr(v)).quantize(quantum, context=_DECIMAL_CONTEXT)
            if type(v) is int:
                return Decimal(v).quantize(quantum, context=_DECIMAL_CONTEXT)
            return slow(v)

        if sql_type.precision is not None and sql_type.precision > 28 or name == "money":
            return slow  # keep the precision/overflow checks for the widest types
        return decimal_value
    if name == "datetime2" and (sql_type.scale or 0) == 7:
        return lambda v: (_fast_datetime(v) or slow(v)) if type(v) is str else slow(v)
    if name == "datetimeoffset":

        def offset_value(v: object) -> object:
            if type(v) is str and len(v) == 35 and v[27:29] == " @":
                utc = _fast_datetime(v[:27])
                if utc is not None:
                    sign = -1 if v[29] == "-" else 1
                    tz = dt.timezone(
                        sign * dt.timedelta(hours=int(v[30:32]), minutes=int(v[33:35]))
                    )
                    local = (utc.replace(tzinfo=dt.UTC) + tz.utcoffset(None)).replace(tzinfo=tz)
                    extra = ticks_of(utc)
                    if extra:
                        return PreciseDateTime(
                            local.year, local.month, local.day, local.hour, local.minute,
                            local.second, local.microsecond, tz, nanosecond_100=extra,
                        )  # fmt: skip
                    return local
            return slow(v)

        return offset_value
    return lambda v: None if v is None else slow(v)


def wrap(value: object, source: SqlType | None) -> SqlVariant:
    """CAST(value AS sql_variant): keeps the source type (SQL Server error 206 for the types a
    sql_variant cannot hold: (max) types, xml, sql_variant itself is unwrapped)."""
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
    base = python_type_of(value)
    if isinstance(value, str) and utf16_len(value) <= 4000:
        return SqlType("nvarchar", length=max(1, utf16_len(value)))
    if isinstance(value, bytes) and len(value) <= 8000:
        return SqlType("varbinary", length=max(1, len(value)))
    return base
