"""TDS data types: type codes, and the value codecs shared by column encoding and RPC decoding.

Strategy: every SQL Server type that tdslite carries is sent with its *nullable* wire form (INTN,
BITN, FLTN, MONEYN, DATETIMN, DECIMALN, GUID, DATEN, TIMEN, DATETIME2N, DATETIMEOFFSETN, the BIG*
character/binary types and PLP for (max)), exactly as SQL Server describes a nullable column.
"""

from __future__ import annotations

import codecs
import datetime
import decimal
import enum
import struct
import uuid

from tdslite.engine import PreciseDateTime, PreciseTime
from tdslite.engine._types import ticks_of

from ._packets import ProtocolError


class T(enum.IntEnum):
    """TDS TYPE_INFO type codes (MS-TDS 2.2.5.4)."""

    NULL = 0x1F
    INT1 = 0x30
    BIT = 0x32
    INT2 = 0x34
    INT4 = 0x38
    DATETIM4 = 0x3A
    FLT4 = 0x3B
    MONEY = 0x3C
    DATETIME = 0x3D
    FLT8 = 0x3E
    MONEY4 = 0x7A
    INT8 = 0x7F
    GUID = 0x24
    INTN = 0x26
    DECIMAL = 0x37
    NUMERIC = 0x3F
    BITN = 0x68
    DECIMALN = 0x6A
    NUMERICN = 0x6C
    FLTN = 0x6D
    MONEYN = 0x6E
    DATETIMN = 0x6F
    DATEN = 0x28
    TIMEN = 0x29
    DATETIME2N = 0x2A
    DATETIMEOFFSETN = 0x2B
    CHAR = 0x2F
    VARCHAR = 0x27
    BINARY = 0x2D
    VARBINARY = 0x25
    BIGVARBIN = 0xA5
    BIGVARCHR = 0xA7
    BIGBINARY = 0xAD
    BIGCHAR = 0xAF
    NVARCHAR = 0xE7
    NCHAR = 0xEF
    XML = 0xF1
    UDT = 0xF0
    TEXT = 0x23
    IMAGE = 0x22
    NTEXT = 0x63
    SSVARIANT = 0x62
    TVP = 0xF3


#: SQL_Latin1_General_CP1_CI_AS: LCID 0x0409 with case/kana/width-insensitive flags, sort id 52.
COLLATION = bytes([0x09, 0x04, 0xD0, 0x00, 0x34])
#: The single-byte code page that collation implies for char/varchar/text data.
CODEPAGE = "cp1252"

PLP_NULL = 0xFFFFFFFFFFFFFFFF
PLP_UNKNOWN = 0xFFFFFFFFFFFFFFFE

#: ``codecs.utf_16_le_decode``: ``utf16_decoder(data, "strict", True)[0]`` is `decode_utf16`
#: without a call of its own (for the few places that decode every parameter of every RPC)
utf16_decoder = _UTF16_DECODE = codecs.utf_16_le_decode
_UTF16_ENCODE = codecs.utf_16_le_encode


def decode_utf16(data: bytes | bytearray | memoryview, errors: str = "strict") -> str:
    """``data.decode("utf-16-le", errors)``, the same result or UnicodeDecodeError, without
    the codec registry lookup of ``bytes.decode`` (UTF-16 is every name and text on the wire)."""
    text: str = _UTF16_DECODE(data, errors, True)[0]
    return text


def encode_utf16(text: str) -> bytes:
    """``text.encode("utf-16-le")`` (the same bytes or error), without the codec lookup."""
    data: bytes = _UTF16_ENCODE(text)[0]
    return data


_EPOCH_1900 = datetime.date(1900, 1, 1).toordinal()
_TEN = decimal.Context(prec=80)

_I16 = struct.Struct("<h")
_I32 = struct.Struct("<i")
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_I64 = struct.Struct("<q")
_MONEY = struct.Struct("<iI")
_DT8 = struct.Struct("<iI")
_DT4 = struct.Struct("<HH")


def decimal_size(precision: int) -> int:
    """Bytes of a DECIMALN value (sign byte included) for a precision 1..38."""
    if precision <= 9:
        return 5
    if precision <= 19:
        return 9
    if precision <= 28:
        return 13
    return 17


def time_size(scale: int) -> int:
    """Bytes of the time part of TIMEN/DATETIME2N/DATETIMEOFFSETN for a scale 0..7."""
    return 3 if scale <= 2 else 4 if scale <= 4 else 5


# --- to wire --------------------------------------------------------------------------------


def to_decimal(value: object) -> decimal.Decimal:
    if isinstance(value, decimal.Decimal):
        return value
    if isinstance(value, float):
        return decimal.Decimal(repr(value))
    return decimal.Decimal(str(value))


def encode_decimal(value: object, precision: int, scale: int) -> bytes:
    """Sign byte (1 positive, 0 negative) then |value| * 10**scale as a little-endian integer."""
    d = to_decimal(value)
    units = int(d.scaleb(scale, _TEN).to_integral_value(decimal.ROUND_HALF_EVEN, _TEN))
    size = decimal_size(precision)
    try:
        body = abs(units).to_bytes(size - 1, "little")
    except OverflowError:
        raise ValueError(f"value {d} does not fit decimal({precision},{scale})") from None
    return bytes([1 if units >= 0 else 0]) + body


def encode_money(value: object, size: int) -> bytes:
    units = int(to_decimal(value).scaleb(4, _TEN).to_integral_value(decimal.ROUND_HALF_EVEN, _TEN))
    if size == 4:
        return _I32.pack(units)
    return _MONEY.pack(units >> 32, units & 0xFFFFFFFF)


def _as_datetime(value: object) -> datetime.datetime:
    if isinstance(value, datetime.datetime):
        return value
    if isinstance(value, datetime.date):
        return datetime.datetime.combine(value, datetime.time())
    if isinstance(value, str):
        return datetime.datetime.fromisoformat(value)
    raise TypeError(f"cannot send {type(value).__name__} as a date/time value")


def encode_datetime(value: object, size: int) -> bytes:
    dt = _as_datetime(value).replace(tzinfo=None)
    days = dt.toordinal() - _EPOCH_1900
    if size == 4:
        minutes = dt.hour * 60 + dt.minute + (1 if dt.second >= 30 else 0)
        if minutes >= 1440:
            days, minutes = days + 1, 0
        return _DT4.pack(days, minutes)
    micro = ((dt.hour * 60 + dt.minute) * 60 + dt.second) * 1_000_000 + dt.microsecond
    ticks = (micro * 300 + 500_000) // 1_000_000
    if ticks >= 300 * 86400:
        days, ticks = days + 1, 0
    return _DT8.pack(days, ticks)


def _time_units(t: datetime.time | datetime.datetime, scale: int, ticks: int | None = None) -> int:
    # 100 ns units of the day (engine values may carry a 7th digit in ``nanosecond_100``), then
    # rounded to the column's scale.
    micro = ((t.hour * 60 + t.minute) * 60 + t.second) * 1_000_000 + t.microsecond
    units = micro * 10 + (int(getattr(t, "nanosecond_100", 0)) if ticks is None else ticks)
    div: int = 10 ** (7 - scale)
    return (units + div // 2) // div


def encode_time(value: object, scale: int) -> bytes:
    """TIMEN body; ``value`` may be a time or a datetime (its time of day is used)."""
    if isinstance(value, str):
        value = datetime.time.fromisoformat(value)
    if not isinstance(value, datetime.time | datetime.datetime):
        raise TypeError(f"cannot send {type(value).__name__} as time")
    units = min(_time_units(value, scale), int(86400 * 10**scale - 1))
    return units.to_bytes(time_size(scale), "little")


def encode_date(value: object) -> bytes:
    if isinstance(value, datetime.datetime):
        value = value.date()
    if isinstance(value, str):
        value = datetime.date.fromisoformat(value)
    if not isinstance(value, datetime.date):
        raise TypeError(f"cannot send {type(value).__name__} as date")
    return (value.toordinal() - 1).to_bytes(3, "little")


def encode_datetime2(value: object, scale: int) -> bytes:
    dt = _as_datetime(value)
    return encode_time(dt, scale) + encode_date(dt.date())


def encode_datetimeoffset(value: object, scale: int) -> bytes:
    dt = _as_datetime(value)
    offset = dt.utcoffset() or datetime.timedelta()
    utc = dt.replace(tzinfo=None) - offset
    minutes = int(offset.total_seconds()) // 60
    # the subtraction above drops a 100 ns digit: take it from the original value
    units = _time_units(utc, scale, ticks=int(getattr(dt, "nanosecond_100", 0)))
    body = min(units, int(86400 * 10**scale - 1)).to_bytes(time_size(scale), "little")
    return body + encode_date(utc.date()) + _I16.pack(minutes)


def encode_guid(value: object) -> bytes:
    if isinstance(value, bytes) and len(value) == 16:
        value = uuid.UUID(bytes=value)
    if not isinstance(value, uuid.UUID):
        value = uuid.UUID(str(value))
    return value.bytes_le


def encode_int(value: object, size: int) -> bytes:
    if not isinstance(value, int | str | float | decimal.Decimal):
        raise TypeError(f"cannot send {type(value).__name__} as an integer")
    return int(value).to_bytes(size, "little", signed=size != 1)


# --- from wire ------------------------------------------------------------------------------


def decode_decimal(data: bytes, scale: int) -> decimal.Decimal:
    if not data:
        raise ProtocolError("empty decimal value")
    units = int.from_bytes(data[1:], "little")
    digits = tuple(int(c) for c in str(units))
    return decimal.Decimal((0 if data[0] == 1 else 1, digits, -scale))


def decode_money(data: bytes) -> decimal.Decimal:
    if len(data) == 4:
        units = _I32.unpack(data)[0]
    elif len(data) == 8:
        hi, lo = _MONEY.unpack(data)
        units = (hi << 32) | lo
    else:
        raise ProtocolError(f"money value of {len(data)} bytes")
    sign = 1 if units < 0 else 0
    return decimal.Decimal((sign, tuple(int(c) for c in str(abs(units))), -4))


def decode_datetime(data: bytes) -> datetime.datetime:
    if len(data) == 4:
        days, minutes = _DT4.unpack(data)
        return datetime.datetime.fromordinal(_EPOCH_1900 + days) + datetime.timedelta(
            minutes=minutes
        )
    if len(data) == 8:
        days, ticks = _DT8.unpack(data)
        micro = round(ticks * 10 / 3) * 1000  # 1/300 s ticks, to whole milliseconds
        return datetime.datetime.fromordinal(_EPOCH_1900 + days) + datetime.timedelta(
            microseconds=micro
        )
    raise ProtocolError(f"datetime value of {len(data)} bytes")


def decode_time_units(data: bytes, scale: int) -> tuple[int, int]:
    """(microseconds of the day, extra 100 ns digit) of a TIMEN value."""
    factor: int = 10 ** (7 - scale)
    units = int.from_bytes(data, "little") * factor
    if units >= 86400 * 10**7:
        raise ProtocolError("time value past midnight")
    micro, ticks = divmod(units, 10)
    return micro, ticks


def decode_time(data: bytes, scale: int) -> datetime.time:
    """A TIMEN value; a non-zero 100 ns digit makes it a `PreciseTime`."""
    micro, ticks = decode_time_units(data, scale)
    secs, us = divmod(micro, 1_000_000)
    hms = (secs // 3600, secs // 60 % 60, secs % 60, us)
    return PreciseTime(*hms, nanosecond_100=ticks) if ticks else datetime.time(*hms)


def _with_ticks(value: datetime.datetime, ticks: int) -> datetime.datetime:
    """`value` as a `PreciseDateTime` when the 100 ns digit `ticks` is not zero."""
    if not ticks:
        return value
    v = value
    fields = (v.year, v.month, v.day, v.hour, v.minute, v.second, v.microsecond, v.tzinfo)
    return PreciseDateTime(*fields, nanosecond_100=ticks)


def decode_date(data: bytes) -> datetime.date:
    if len(data) != 3:
        raise ProtocolError(f"date value of {len(data)} bytes")
    return datetime.date.fromordinal(int.from_bytes(data, "little") + 1)


def decode_datetime2(data: bytes, scale: int) -> datetime.datetime:
    n = time_size(scale)
    if len(data) != n + 3:
        raise ProtocolError(f"datetime2({scale}) value of {len(data)} bytes")
    t = decode_time(data[:n], scale)
    return _with_ticks(datetime.datetime.combine(decode_date(data[n:]), t), ticks_of(t))


def decode_datetimeoffset(data: bytes, scale: int) -> datetime.datetime:
    n = time_size(scale)
    if len(data) != n + 5:
        raise ProtocolError(f"datetimeoffset({scale}) value of {len(data)} bytes")
    t = decode_time(data[:n], scale)
    utc = datetime.datetime.combine(decode_date(data[n : n + 3]), t)
    minutes = _I16.unpack(data[n + 3 :])[0]
    tz = datetime.timezone(datetime.timedelta(minutes=minutes))
    local = (utc + datetime.timedelta(minutes=minutes)).replace(tzinfo=tz)
    return _with_ticks(local, ticks_of(t))


def decode_float(data: bytes) -> float:
    if len(data) == 4:
        return float(struct.unpack("<f", data)[0])
    if len(data) == 8:
        return float(struct.unpack("<d", data)[0])
    raise ProtocolError(f"float value of {len(data)} bytes")


def decode_int(data: bytes) -> int:
    if len(data) not in (1, 2, 4, 8):
        raise ProtocolError(f"integer value of {len(data)} bytes")
    return int.from_bytes(data, "little", signed=len(data) != 1)
