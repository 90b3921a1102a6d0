"""RPC parameters: read one TYPE_INFO and its value into (SqlType fields, Python value).

Covers every type tdslite carries, in the wire forms clients really use: the nullable N-types, the
fixed-length types, the BIG* character/binary types, PLP for (max), and the legacy TEXT/NTEXT/IMAGE
that FreeTDS ODBC sends for long strings; xml and sql_variant (_variant.py) and table-valued
parameters (_tvp.py). UDT parameters are refused with a clear error.
"""

from __future__ import annotations

import functools
import struct
import uuid

from . import _datatypes as d
from ._buffer import Reader, truncated
from ._datatypes import CODEPAGE, PLP_UNKNOWN, T, decode_utf16, utf16_decoder
from ._packets import ProtocolError
from ._plp import read_plp
from ._tvp import read_tvp
from ._variant import read_variant, read_xml
from ._wiretype import BadDataLength, UnsupportedParameter, WireType

_FIXED: dict[int, tuple[str, int]] = {
    T.INT1: ("tinyint", 1),
    T.BIT: ("bit", 1),
    T.INT2: ("smallint", 2),
    T.INT4: ("int", 4),
    T.INT8: ("bigint", 8),
    T.DATETIM4: ("smalldatetime", 4),
    T.DATETIME: ("datetime", 8),
    T.FLT4: ("real", 4),
    T.FLT8: ("float", 8),
    T.MONEY4: ("smallmoney", 4),
    T.MONEY: ("money", 8),
}
_INTN = {1: "tinyint", 2: "smallint", 4: "int", 8: "bigint"}
# the type codes `_read_param` tells apart, as plain ints (tested once per parameter of every RPC)
_BYTELEN_CODES = frozenset(int(c) for c in (T.INTN, T.BITN, T.FLTN, T.MONEYN, T.DATETIMN, T.GUID))
_DECIMAL_CODES = frozenset(int(c) for c in (T.DECIMALN, T.NUMERICN, T.DECIMAL, T.NUMERIC))
_NUMERIC_CODES = frozenset(int(c) for c in (T.NUMERICN, T.NUMERIC))
_TEMPORAL_CODES = frozenset(int(c) for c in (T.TIMEN, T.DATETIME2N, T.DATETIMEOFFSETN))
_USHORT_CODES = frozenset(
    int(c) for c in (T.BIGVARCHR, T.BIGCHAR, T.NVARCHAR, T.NCHAR, T.BIGVARBIN, T.BIGBINARY)
)
_LEGACY_SHORT_CODES = frozenset(int(c) for c in (T.VARCHAR, T.CHAR, T.VARBINARY, T.BINARY))
_LONG_CODES = frozenset(int(c) for c in (T.TEXT, T.NTEXT, T.IMAGE))
_NULL, _DATEN = int(T.NULL), int(T.DATEN)
_TEXT_CODES = frozenset(int(c) for c in (T.BIGVARCHR, T.BIGCHAR, T.NVARCHAR, T.NCHAR))
_WIDE_CODES = frozenset(int(c) for c in (T.NVARCHAR, T.NCHAR))


def read_param(r: Reader) -> tuple[WireType, object]:
    """Read TYPE_INFO then the value; returns the type and the Python value (None for NULL).

    Raises:
        ProtocolError: malformed bytes, or a value out of its type's range.
        UnsupportedParameter: a type tdslite does not take as a parameter.
    """
    try:
        if type(r) is Reader:  # the RPC parameters' own buffer: the common types read off it
            data, pos = r.data, r.pos
            if pos < len(data):
                code = data[pos]
                if code == _NVARCHAR_CODE:
                    found = read_nvarchar(r, data, pos)
                    if found is not None:
                        return found
                if code in _USHORT_CODES:
                    r.pos = pos + 1
                    return _ushortlen(code, r)
                if code == _INTN_CODE:
                    return _intn(r, data, pos)
        return _read_param(r)
    except (ValueError, OverflowError) as exc:  # UnicodeDecodeError is a ValueError too
        raise ProtocolError(f"invalid parameter value: {exc}") from None


_NVARCHAR_CODE = int(T.NVARCHAR)
#: the WireType of nvarchar(max)
NVARCHAR_MAX = WireType("nvarchar", length=-1)
_U32_AT = struct.Struct("<I").unpack_from
#: an nvarchar's maximum length and, for a non-(max) one, its length: the 9 bytes after the
#: type code (the 5-byte collation between them skipped)
_NVARCHAR_HEAD = struct.Struct("<H5xH").unpack_from
#: a PLP value's total length and its first chunk's length
_PLP_HEAD = struct.Struct("<QI").unpack_from


def read_nvarchar(r: Reader, data: bytes, pos: int) -> tuple[WireType, object] | None:
    """An nvarchar parameter (type code at ``pos``) in its two common forms, read in one step:
    up to 4000 characters, or (max) as ONE PLP chunk (every statement text and declaration);
    None for any other form or anything cut short, which `_ushortlen` then reads (and reports)."""
    end = len(data)
    if pos + 10 > end:  # the code, the maximum length, the collation, a length
        return None
    max_len, n = _NVARCHAR_HEAD(data, pos + 1)
    if max_len != 0xFFFF:
        stop = pos + 10 + n
        if n == 0xFFFF or n > max_len or stop > end:
            return None
        value = utf16_decoder(data[pos + 10 : stop], "strict", True)[0]
        r.pos = stop
        return nvarchar_type(max_len), value
    first = pos + 20  # after the PLP total (8 bytes) and the first chunk's length (4)
    if first > end:
        return None
    total, n = _PLP_HEAD(data, pos + 8)
    stop = first + n
    if n == 0 or stop + 4 > end or _U32_AT(data, stop)[0] != 0:
        return None
    if total != n and total != PLP_UNKNOWN:
        return None
    value = utf16_decoder(data[first:stop], "strict", True)[0]
    r.pos = stop + 4
    return NVARCHAR_MAX, value


@functools.lru_cache(maxsize=512)
def nvarchar_type(max_len: int) -> WireType:
    """The WireType of an nvarchar of at most ``max_len`` bytes (not (max))."""
    return _sized("nvarchar", max(1, max_len // 2))


_INTN_CODE = int(T.INTN)
#: INTN's wire type by the value's length (0: NULL, sent as int)
_INTN_TYPES = {n: WireType(_INTN.get(n, "int")) for n in (0, 1, 2, 4, 8)}


def _intn(r: Reader, data: bytes, pos: int) -> tuple[WireType, object]:
    """An INTN parameter (type code at ``pos``): the maximum length, then the value's."""
    n = data[pos + 2] if pos + 3 <= len(data) else -1
    stop = pos + 3 + n
    wtype = _INTN_TYPES.get(n)
    if wtype is None or stop > len(data):
        return _read_param(r)  # cut short, or a length no integer has: the general reader's error
    r.pos = stop
    if n == 0:
        return wtype, None
    return wtype, int.from_bytes(data[pos + 3 : stop], "little", signed=n != 1)


def _read_param(r: Reader) -> tuple[WireType, object]:
    code = r.u8()
    if code in _USHORT_CODES:  # first: (n)varchar and varbinary are the most common
        return _ushortlen(code, r)
    if code in _FIXED:
        name, size = _FIXED[code]
        return WireType(name), _fixed_value(name, r.take(size))
    if code == _NULL:
        return WireType("int"), None
    if code in _BYTELEN_CODES:
        r.u8()  # max length
        data = _bytelen(r)
        return _bytelen_type(code, data), None if data is None else _bytelen_value(code, data)
    if code in _DECIMAL_CODES:
        r.u8()
        precision, scale = r.u8(), r.u8()
        name = "numeric" if code in _NUMERIC_CODES else "decimal"
        data = _bytelen(r)
        value = None if data is None else d.decode_decimal(data, scale)
        return WireType(name, precision=precision, scale=scale), value
    if code == _DATEN:
        data = _bytelen(r)
        return WireType("date"), None if data is None else d.decode_date(data)
    if code in _TEMPORAL_CODES:
        scale = r.u8()
        if scale > 7:
            raise ProtocolError(f"fractional-second scale {scale} is over 7")
        data = _bytelen(r)
        return _temporal(code, scale, data)
    if code in _LEGACY_SHORT_CODES:
        return _legacy_short(code, r)
    if code in _LONG_CODES:
        return _long(code, r)
    if code in (T.SSVARIANT, T.XML):
        sql_type, special = read_variant(r) if code == T.SSVARIANT else read_xml(r)
        return WireType(sql_type.name), special
    if code == T.TVP:
        return read_tvp(r, read_param)
    raise UnsupportedParameter(
        f"parameters of TDS type 0x{code:02X} (udt) are not supported by tdslite; send them as "
        "nvarchar/varbinary"
    )


def _bytelen(r: Reader) -> bytes | None:
    n = r.u8()
    return None if n == 0 else r.take(n)


def _fixed_value(name: str, data: bytes) -> object:
    if name == "bit":
        return data != b"\x00"
    if name in ("tinyint", "smallint", "int", "bigint"):
        return d.decode_int(data)
    if name in ("real", "float"):
        return d.decode_float(data)
    if name in ("money", "smallmoney"):
        return d.decode_money(data)
    return d.decode_datetime(data)


def _bytelen_type(code: int, data: bytes | None) -> WireType:
    n = len(data) if data else 0
    if code == T.INTN:
        return WireType(_INTN.get(n, "int"))
    if code == T.BITN:
        return WireType("bit")
    if code == T.FLTN:
        return WireType("real" if n == 4 else "float")
    if code == T.MONEYN:
        return WireType("smallmoney" if n == 4 else "money")
    if code == T.DATETIMN:
        return WireType("smalldatetime" if n == 4 else "datetime")
    return WireType("uniqueidentifier")


def _bytelen_value(code: int, data: bytes) -> object:
    if code == T.INTN:
        return d.decode_int(data)
    if code == T.BITN:
        return data != b"\x00"
    if code == T.FLTN:
        return d.decode_float(data)
    if code == T.MONEYN:
        return d.decode_money(data)
    if code == T.DATETIMN:
        return d.decode_datetime(data)
    if len(data) != 16:
        raise ProtocolError(f"uniqueidentifier value of {len(data)} bytes")
    return uuid.UUID(bytes_le=data)


def _temporal(code: int, scale: int, data: bytes | None) -> tuple[WireType, object]:
    value: object
    if code == T.TIMEN:
        name = "time"
        value = None if data is None else d.decode_time(data, scale)
    elif code == T.DATETIME2N:
        name = "datetime2"
        value = None if data is None else d.decode_datetime2(data, scale)
    else:
        name = "datetimeoffset"
        value = None if data is None else d.decode_datetimeoffset(data, scale)
    return WireType(name, scale=scale), value


_USHORT_NAMES: dict[int, str] = {
    T.BIGVARCHR: "varchar",
    T.BIGCHAR: "char",
    T.NVARCHAR: "nvarchar",
    T.NCHAR: "nchar",
    T.BIGVARBIN: "varbinary",
    T.BIGBINARY: "binary",
    T.VARCHAR: "varchar",
    T.CHAR: "char",
    T.VARBINARY: "varbinary",
    T.BINARY: "binary",
}


def _decode_text(name: str, data: bytes) -> object:
    if name in ("nvarchar", "nchar"):
        return decode_utf16(data)
    if name in ("varchar", "char"):
        return data.decode(CODEPAGE, "replace")
    return bytes(data)


@functools.lru_cache(maxsize=512)
def _sized(name: str, length: int) -> WireType:
    """The WireType of a sized type (immutable: one instance per name and length is shared)."""
    return WireType(name, length=length)


def _ushortlen(code: int, r: Reader) -> tuple[WireType, object]:
    # the most common parameters (every string and statement text): read off the buffer
    # directly, bounds checked (a bulk load's reader is no plain Reader: see _colmetadata)
    if type(r) is not Reader:
        return _ushortlen_read(code, r)
    name = _USHORT_NAMES[code]
    data, pos = r.data, r.pos
    # the maximum length, then a text type's collation: tdslite stores text as Unicode whatever
    # the client's collation
    after = pos + (7 if code in _TEXT_CODES else 2)
    if after + 2 > len(data):
        raise truncated(after + 2 - pos, pos)
    max_len = data[pos] | data[pos + 1] << 8
    if max_len == 0xFFFF:
        r.pos = after
        value = read_plp(r)
        return _sized(name, -1), None if value is None else _decode_text(name, value)
    n = data[after] | data[after + 1] << 8
    wtype = _sized(name, max(1, max_len // 2 if code in _WIDE_CODES else max_len))
    if n == 0xFFFF:
        r.pos = after + 2
        return wtype, None
    if n > max_len:
        raise BadDataLength(code)
    stop = after + 2 + n
    if stop > len(data):
        raise truncated(n, after + 2)
    r.pos = stop
    return wtype, _decode_text(name, data[after + 2 : stop])


def _ushortlen_read(code: int, r: Reader) -> tuple[WireType, object]:
    """`_ushortlen` through the Reader's own methods."""
    name = _USHORT_NAMES[code]
    max_len = r.u16()
    if code in _TEXT_CODES:
        r.take(5)  # collation
    if max_len == 0xFFFF:
        data = read_plp(r)
        return _sized(name, -1), None if data is None else _decode_text(name, data)
    n = r.u16()
    wtype = _sized(name, max(1, max_len // 2 if code in _WIDE_CODES else max_len))
    if n == 0xFFFF:
        return wtype, None
    return wtype, _decode_text(name, r.take(n))


def _legacy_short(code: int, r: Reader) -> tuple[WireType, object]:
    name = _USHORT_NAMES[code]
    max_len = r.u8()
    data = _bytelen(r)
    if data is None:
        return WireType(name, length=max(1, max_len)), None
    return WireType(name, length=max(1, max_len)), _decode_text(name, data)


def _long(code: int, r: Reader) -> tuple[WireType, object]:
    r.u32()  # max length
    if code != T.IMAGE:
        r.take(5)  # collation
    names: dict[int, str] = {T.TEXT: "varchar", T.NTEXT: "nvarchar", T.IMAGE: "varbinary"}
    name = names[code]
    n = r.i32()
    if n < 0:
        return WireType(name, length=-1), None
    return WireType(name, length=-1), _decode_text(name, r.take(n))
