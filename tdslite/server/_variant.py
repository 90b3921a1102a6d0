"""sql_variant and xml on the wire (MS-TDS 2.2.5.5.4 SSVARIANTTYPE, 2.2.5.5.3 XML).

sql_variant: TYPE_INFO ``0x62`` + 4-byte maximum length; each value is a 4-byte length (0 for
NULL), the base type byte, the count of property bytes, the properties (precision and scale of a
decimal, the scale of a time type, the maximum length of a binary, collation and maximum length
of a string) and the base value without a length prefix.
xml: TYPE_INFO ``0xF1`` + a schema-present byte (0: untyped xml); values are PLP UTF-16LE.
"""

from __future__ import annotations

import struct

from tdslite.engine import SqlType
from tdslite.engine._types import SqlVariant
from tdslite.engine._values import wrap

from . import _datatypes as d
from ._buffer import Reader
from ._datatypes import CODEPAGE, COLLATION, T
from ._packets import ProtocolError
from ._plp import read_plp

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
#: The maximum length SQL Server announces for a sql_variant column.
VARIANT_MAX = 8016

_FIXED_BASE = {
    "tinyint": (T.INT1, 1), "smallint": (T.INT2, 2), "int": (T.INT4, 4), "bigint": (T.INT8, 8),
}  # fmt: skip


def variant_type_info() -> bytes:
    return bytes([T.SSVARIANT]) + _U32.pack(VARIANT_MAX)


def encode_variant(value: object) -> bytes:
    """One sql_variant value (length prefix included) from a `SqlVariant` or a plain value."""
    variant = value if isinstance(value, SqlVariant) else wrap(value, None)
    code, props, data = _base(variant.base, variant.value)
    return _U32.pack(2 + len(props) + len(data)) + bytes([code, len(props)]) + props + data


def _base(base: SqlType, value: object) -> tuple[int, bytes, bytes]:
    name = base.name
    if name in _FIXED_BASE:
        code, size = _FIXED_BASE[name]
        return code, b"", d.encode_int(value, size)
    if name == "bit":
        return T.BIT, b"", b"\x01" if value else b"\x00"
    if name in ("real", "float"):
        fmt = "<f" if name == "real" else "<d"
        return (T.FLT4 if name == "real" else T.FLT8), b"", struct.pack(fmt, float(value))  # type: ignore[arg-type]
    if name in ("money", "smallmoney"):
        size = 8 if name == "money" else 4
        return (T.MONEY if size == 8 else T.MONEY4), b"", d.encode_money(value, size)
    if name in ("datetime", "smalldatetime"):
        size = 8 if name == "datetime" else 4
        return (T.DATETIME if size == 8 else T.DATETIM4), b"", d.encode_datetime(value, size)
    if name == "uniqueidentifier":
        return T.GUID, b"", d.encode_guid(value)
    if name == "date":
        return T.DATEN, b"", d.encode_date(value)
    if name in ("time", "datetime2", "datetimeoffset"):
        scale = 7 if base.scale is None else int(base.scale)
        code, fn = {
            "time": (T.TIMEN, d.encode_time),
            "datetime2": (T.DATETIME2N, d.encode_datetime2),
            "datetimeoffset": (T.DATETIMEOFFSETN, d.encode_datetimeoffset),
        }[name]
        return code, bytes([scale]), fn(value, scale)
    if name in ("decimal", "numeric"):
        p, s = int(base.precision or 18), int(base.scale or 0)
        code = T.DECIMALN if name == "decimal" else T.NUMERICN
        return code, bytes([p, s]), d.encode_decimal(value, p, s)
    if name in ("binary", "varbinary"):
        data = bytes(value)  # type: ignore[call-overload]
        code = T.BIGBINARY if name == "binary" else T.BIGVARBIN
        return code, _U16.pack(int(base.length or len(data))), data
    text = value if isinstance(value, str) else str(value)
    wide = name in ("nchar", "nvarchar")
    data = text.encode("utf-16-le") if wide else text.encode(CODEPAGE, "replace")
    code = {"char": T.BIGCHAR, "nchar": T.NCHAR, "nvarchar": T.NVARCHAR}.get(name, T.BIGVARCHR)
    width = 2 if wide else 1
    return code, COLLATION + _U16.pack(max(len(data), int(base.length or 1) * width)), data


def read_variant(r: Reader) -> tuple[SqlType, object]:
    """A sql_variant parameter after its type byte: (sql_variant, SqlVariant or None)."""
    r.u32()  # maximum length
    total = r.u32()
    if total == 0:
        return SqlType("sql_variant"), None
    if total < 2:
        raise ProtocolError(f"sql_variant value of {total} bytes")
    body = Reader(r.take(total))
    code, nprops = body.u8(), body.u8()
    props = Reader(body.take(nprops))
    data = body.take(body.remaining())
    base, value = _decode_base(code, props, data)
    return SqlType("sql_variant"), SqlVariant(value, base)


_FIXED_CODES: dict[int, str] = {
    T.INT1: "tinyint", T.INT2: "smallint", T.INT4: "int", T.INT8: "bigint", T.BIT: "bit",
    T.FLT4: "real", T.FLT8: "float", T.MONEY: "money", T.MONEY4: "smallmoney",
    T.DATETIME: "datetime", T.DATETIM4: "smalldatetime",
}  # fmt: skip


def _decode_base(code: int, props: Reader, data: bytes) -> tuple[SqlType, object]:
    if code in _FIXED_CODES:
        name = _FIXED_CODES[code]
        if name == "bit":
            return SqlType("bit"), data != b"\x00"
        if name in ("tinyint", "smallint", "int", "bigint"):
            return SqlType(name), d.decode_int(data)
        if name in ("real", "float"):
            return SqlType(name), d.decode_float(data)
        if name in ("money", "smallmoney"):
            return SqlType(name), d.decode_money(data)
        return SqlType(name), d.decode_datetime(data)
    if code == T.GUID:
        if len(data) != 16:
            raise ProtocolError("uniqueidentifier in sql_variant is not 16 bytes")
        import uuid

        return SqlType("uniqueidentifier"), uuid.UUID(bytes_le=data)
    if code == T.DATEN:
        return SqlType("date"), d.decode_date(data)
    if code in (T.TIMEN, T.DATETIME2N, T.DATETIMEOFFSETN):
        scale = props.u8()
        if scale > 7:
            raise ProtocolError(f"fractional-second scale {scale} is over 7")
        if code == T.TIMEN:
            return SqlType("time", scale=scale), d.decode_time(data, scale)
        if code == T.DATETIME2N:
            return SqlType("datetime2", scale=scale), d.decode_datetime2(data, scale)
        return SqlType("datetimeoffset", scale=scale), d.decode_datetimeoffset(data, scale)
    if code in (T.DECIMALN, T.NUMERICN):
        p, s = props.u8(), props.u8()
        if not 1 <= p <= 38 or s > p:
            raise ProtocolError(f"decimal({p},{s}) in sql_variant")
        name = "decimal" if code == T.DECIMALN else "numeric"
        return SqlType(name, precision=p, scale=s), d.decode_decimal(data, s)
    if code in (T.BIGVARBIN, T.BIGBINARY):
        length = props.u16()
        name = "binary" if code == T.BIGBINARY else "varbinary"
        return SqlType(name, length=max(1, min(length, 8000))), bytes(data)
    if code in (T.BIGVARCHR, T.BIGCHAR, T.NVARCHAR, T.NCHAR):
        props.take(5)  # collation
        length = props.u16()
        wide = code in (T.NVARCHAR, T.NCHAR)
        names: dict[int, str] = {T.BIGVARCHR: "varchar", T.BIGCHAR: "char", T.NVARCHAR: "nvarchar"}
        name = names.get(code, "nchar")
        chars = max(1, min(length // (2 if wide else 1), 4000 if wide else 8000))
        text = data.decode("utf-16-le") if wide else data.decode(CODEPAGE, "replace")
        return SqlType(name, length=chars), text
    raise ProtocolError(f"base type 0x{code:02X} cannot be in a sql_variant")


def read_xml(r: Reader) -> tuple[SqlType, object]:
    """An xml parameter after its type byte: schema info, then a PLP UTF-16LE value."""
    if r.u8():  # a schema collection: database, owning schema, collection name
        r.b_varchar()
        r.b_varchar()
        r.us_varchar()
    data = read_plp(r)
    return SqlType("xml"), None if data is None else _xml_text(data)


def _xml_text(data: bytes) -> str:
    if data[:2] == b"\xff\xfe":
        data = data[2:]
    return data.decode("utf-16-le")
