"""Result sets on the wire: COLMETADATA from each Column's SqlType, then ROW / NBCROW tokens.

Each column gets a `ColumnCodec`: its TYPE_INFO bytes (sent once in COLMETADATA) and a function
turning a Python value into the value bytes of a ROW (length prefix included). A NULL has its own
bytes per wire form (0x00 for BYTELEN types, 0xFFFF for USHORTLEN, the PLP NULL marker for (max)).
"""

from __future__ import annotations

import datetime
import functools
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tdslite.engine import Column, SqlType

from . import _datatypes as d
from ._datatypes import CODEPAGE, COLLATION, PLP_NULL, T, encode_utf16
from ._variant import encode_variant, variant_type_info

TOKEN_COLMETADATA = 0x81
TOKEN_ROW = 0xD1
TOKEN_NBCROW = 0xD2

_FLAG_NULLABLE = 0x0001
_FLAG_UPDATEABLE_UNKNOWN = 0x0010  # usUpdateable = 2 (unknown), bits 2-3 of Flags

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_PLP_CHUNK = 8000


@dataclass(frozen=True)
class ColumnCodec:
    type_info: bytes
    null: bytes
    encode: Callable[[object], bytes]


def _bytelen(fn: Callable[[object], bytes]) -> Callable[[object], bytes]:
    def enc(value: object) -> bytes:
        body = fn(value)
        return bytes([len(body)]) + body

    return enc


def _plp(body: bytes) -> bytes:
    out = bytearray(_U64.pack(len(body)))
    for pos in range(0, len(body), _PLP_CHUNK):
        chunk = body[pos : pos + _PLP_CHUNK]
        out += _U32.pack(len(chunk)) + chunk
    out += b"\x00\x00\x00\x00"
    return bytes(out)


def _ushort(body: bytes) -> bytes:
    if len(body) > 8000:
        raise ValueError(f"value of {len(body)} bytes exceeds 8000 for a non-(max) column")
    return _U16.pack(len(body)) + body


def _text(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


def _binary(value: object) -> bytes:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8")
    raise TypeError(f"cannot send {type(value).__name__} as binary")


def _str_codec(kind: str, length: int | None) -> ColumnCodec:
    unicode = kind.startswith("n")
    fixed = kind in ("char", "nchar")
    width = 2 if unicode else 1
    limit = 4000 if unicode else 8000
    is_max = length is None or length == -1 or length > limit
    if unicode:

        def raw(value: object) -> bytes:
            return encode_utf16(_text(value))

    else:

        def raw(value: object) -> bytes:
            return _text(value).encode(CODEPAGE, "replace")

    if is_max:
        code = T.NVARCHAR if unicode else T.BIGVARCHR
        return ColumnCodec(
            bytes([code]) + b"\xff\xff" + COLLATION, _U64.pack(PLP_NULL), lambda v: _plp(raw(v))
        )
    assert length is not None
    code = (T.NCHAR if fixed else T.NVARCHAR) if unicode else (T.BIGCHAR if fixed else T.BIGVARCHR)
    type_info = bytes([code]) + _U16.pack(length * width) + COLLATION
    if fixed:
        pad = length * width

        def enc(value: object) -> bytes:
            body = raw(value)
            return _ushort(
                body + (" ".encode("utf-16-le") if unicode else b" ") * ((pad - len(body)) // width)
            )

        return ColumnCodec(type_info, b"\xff\xff", enc)
    return ColumnCodec(type_info, b"\xff\xff", lambda v: _ushort(raw(v)))


def _bin_codec(kind: str, length: int | None) -> ColumnCodec:
    if length is None or length == -1 or length > 8000:
        return ColumnCodec(
            bytes([T.BIGVARBIN]) + b"\xff\xff", _U64.pack(PLP_NULL), lambda v: _plp(_binary(v))
        )
    if kind == "binary":

        def enc(value: object) -> bytes:
            body = _binary(value)
            return _ushort(body + b"\x00" * (length - len(body)))

        return ColumnCodec(bytes([T.BIGBINARY]) + _U16.pack(length), b"\xff\xff", enc)
    return ColumnCodec(
        bytes([T.BIGVARBIN]) + _U16.pack(length), b"\xff\xff", lambda v: _ushort(_binary(v))
    )


_INT_SIZES = {"tinyint": 1, "smallint": 2, "int": 4, "bigint": 8}

#: TDS versions (LOGINACK TDSVersion) where the wire forms change.
TDS71 = 0x71000001
TDS72 = 0x72090002
TDS73 = 0x730A0003
TDS74 = 0x74000004
_DATE_TEXT_WIDTH = {"date": 10, "time": 8, "datetime2": 19, "datetimeoffset": 26}
_TEXTPTR = b"\x00" * 16 + b"\x00" * 8  # text pointer and timestamp of a TEXT/NTEXT/IMAGE value


def _date_as_text(sql_type: SqlType) -> ColumnCodec:
    """date/time/datetime2/datetimeoffset for clients below TDS 7.3: nvarchar strings in the
    form SQL Server converts them to (``2024-02-29 13:14:15.1234567 +05:30``)."""
    name = sql_type.name
    scale = 0 if name == "date" else 7 if sql_type.scale is None else sql_type.scale
    width = _DATE_TEXT_WIDTH[name] + (scale + 1 if scale else 0)

    def text(value: object) -> str:
        if name == "date":
            assert isinstance(value, datetime.date)
            return value.isoformat()
        assert isinstance(value, datetime.time | datetime.datetime)
        units = value.microsecond * 10 + int(getattr(value, "nanosecond_100", 0))
        fraction = f".{units:07d}"[: scale + 1] if scale else ""
        clock = f"{value.hour:02d}:{value.minute:02d}:{value.second:02d}{fraction}"
        if name == "time":
            return clock
        assert isinstance(value, datetime.datetime)
        out = f"{value.date().isoformat()} {clock}"
        if name == "datetimeoffset":
            offset = value.utcoffset() or datetime.timedelta(0)
            minutes = int(offset.total_seconds()) // 60
            sign = "-" if minutes < 0 else "+"
            out += f" {sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
        return out

    codec = _str_codec("nvarchar", width)
    return ColumnCodec(codec.type_info, codec.null, lambda v: codec.encode(text(v)))


def _legacy_lob(name: str) -> ColumnCodec:
    """(max) types for TDS 7.1 clients, which have no PLP: TEXT, NTEXT or IMAGE with a dummy
    text pointer, as SQL Server sends varchar(max)/nvarchar(max)/varbinary(max) to them."""
    empty_table_name = b"\x00\x00"
    if name in ("varchar", "char", "text"):
        info = bytes([T.TEXT]) + _U32.pack(0x7FFFFFFF) + COLLATION + empty_table_name
        return ColumnCodec(
            info,
            b"\x00",
            lambda v: bytes([16]) + _TEXTPTR + _with_len(_text(v).encode(CODEPAGE, "replace")),
        )
    if name in ("binary", "varbinary", "image"):
        info = bytes([T.IMAGE]) + _U32.pack(0x7FFFFFFF) + empty_table_name
        return ColumnCodec(info, b"\x00", lambda v: bytes([16]) + _TEXTPTR + _with_len(_binary(v)))
    info = bytes([T.NTEXT]) + _U32.pack(0x7FFFFFFE) + COLLATION + empty_table_name
    return ColumnCodec(
        info, b"\x00", lambda v: bytes([16]) + _TEXTPTR + _with_len(_text(v).encode("utf-16-le"))
    )


def _with_len(body: bytes) -> bytes:
    return _U32.pack(len(body)) + body


def _is_max(sql_type: SqlType) -> bool:
    if sql_type.name in ("text", "ntext", "image"):
        return True
    if sql_type.name in ("char", "varchar", "nchar", "nvarchar", "binary", "varbinary"):
        limit = 4000 if sql_type.name.startswith("n") else 8000
        return sql_type.length is None or sql_type.length == -1 or sql_type.length > limit
    return sql_type.name not in _KNOWN


def codec_for(sql_type: SqlType, tds_version: int = TDS74) -> ColumnCodec:
    """The wire form of one column of ``sql_type`` (unknown types travel as nvarchar(max)) for a
    client logged in with ``tds_version``: below 7.3 date and time types are nvarchar strings,
    below 7.2 (max) types are TEXT/NTEXT/IMAGE (as SQL Server sends them)."""
    name = sql_type.name
    if tds_version < TDS73 and name in _DATE_TEXT_WIDTH:
        return _date_as_text(sql_type)
    if tds_version < TDS72 and _is_max(sql_type):
        return _legacy_lob(name)
    if name in _INT_SIZES:
        size = _INT_SIZES[name]
        return ColumnCodec(
            bytes([T.INTN, size]), b"\x00", _bytelen(lambda v: d.encode_int(v, size))
        )
    if name == "bit":
        return ColumnCodec(bytes([T.BITN, 1]), b"\x00", lambda v: b"\x01\x01" if v else b"\x01\x00")
    if name in ("decimal", "numeric"):
        p = sql_type.precision or 18
        s = sql_type.scale or 0
        code = T.DECIMALN if name == "decimal" else T.NUMERICN
        return ColumnCodec(
            bytes([code, d.decimal_size(p), p, s]),
            b"\x00",
            _bytelen(lambda v: d.encode_decimal(v, p, s)),
        )
    if name in ("money", "smallmoney"):
        size = 8 if name == "money" else 4
        return ColumnCodec(
            bytes([T.MONEYN, size]), b"\x00", _bytelen(lambda v: d.encode_money(v, size))
        )
    if name in ("real", "float"):
        fmt = struct.Struct("<f" if name == "real" else "<d")
        return ColumnCodec(
            bytes([T.FLTN, fmt.size]),
            b"\x00",
            _bytelen(lambda v: fmt.pack(float(v))),  # type: ignore[arg-type]
        )
    if name in ("datetime", "smalldatetime"):
        size = 8 if name == "datetime" else 4
        return ColumnCodec(
            bytes([T.DATETIMN, size]), b"\x00", _bytelen(lambda v: d.encode_datetime(v, size))
        )
    if name == "date":
        return ColumnCodec(bytes([T.DATEN]), b"\x00", _bytelen(d.encode_date))
    if name in ("time", "datetime2", "datetimeoffset"):
        scale = 7 if sql_type.scale is None else sql_type.scale
        code, fn = {
            "time": (T.TIMEN, d.encode_time),
            "datetime2": (T.DATETIME2N, d.encode_datetime2),
            "datetimeoffset": (T.DATETIMEOFFSETN, d.encode_datetimeoffset),
        }[name]
        return ColumnCodec(bytes([code, scale]), b"\x00", _bytelen(lambda v: fn(v, scale)))
    if name == "uniqueidentifier":
        return ColumnCodec(bytes([T.GUID, 16]), b"\x00", _bytelen(d.encode_guid))
    if name in ("char", "varchar", "nchar", "nvarchar"):
        return _str_codec(name, sql_type.length)
    if name in ("binary", "varbinary"):
        return _bin_codec(name, sql_type.length)
    if name in ("text", "ntext"):
        return _str_codec("varchar" if name == "text" else "nvarchar", -1)
    if name == "image":
        return _bin_codec("varbinary", -1)
    if name == "sql_variant":
        return ColumnCodec(variant_type_info(), b"\x00\x00\x00\x00", encode_variant)
    if name == "xml":
        # untyped xml: no schema; values are PLP UTF-16LE like nvarchar(max)
        return ColumnCodec(
            bytes([T.XML, 0]), _U64.pack(PLP_NULL), lambda v: _plp(_text(v).encode("utf-16-le"))
        )
    return _str_codec("nvarchar", -1)


_KNOWN = frozenset(
    set(_INT_SIZES) | set(_DATE_TEXT_WIDTH)
    | {"bit", "decimal", "numeric", "money", "smallmoney", "real", "float", "datetime",
       "smalldatetime", "uniqueidentifier", "char", "varchar", "nchar", "nvarchar", "binary",
       "varbinary", "text", "ntext", "image"}
)  # fmt: skip


def _b_varchar(text: str) -> bytes:
    raw = encode_utf16(text[:128])
    return bytes([len(raw) // 2]) + raw


class RowEncoder:
    """COLMETADATA for ``columns`` and ROW/NBCROW tokens for their rows."""

    def __init__(self, columns: Sequence[Column], *, tds_version: int = TDS74) -> None:
        self.codecs = [codec_for(c.type, tds_version) for c in columns]
        self._columns = columns
        self._bitmap_len = (len(columns) + 7) // 8
        self._nbcrow = tds_version >= TDS73  # NBCROW came with TDS 7.3
        self._user_type = b"\x00" * (4 if tds_version >= TDS72 else 2)  # ULONG since TDS 7.2
        self._colmetadata: bytes | None = None

    def colmetadata(self) -> bytes:
        if self._colmetadata is None:
            out = bytearray([TOKEN_COLMETADATA]) + _U16.pack(len(self.codecs))
            for column, codec in zip(self._columns, self.codecs, strict=True):
                flags = _FLAG_UPDATEABLE_UNKNOWN | (_FLAG_NULLABLE if column.nullable else 0)
                out += self._user_type + _U16.pack(flags) + codec.type_info
                out += _b_varchar(column.name)
            self._colmetadata = bytes(out)
        return self._colmetadata

    def row(self, values: Sequence[object]) -> bytes:
        codecs = self.codecs
        if len(values) != len(codecs):
            raise ValueError(f"row has {len(values)} values for {len(codecs)} columns")
        nulls = sum(1 for v in values if v is None)
        if nulls and nulls >= self._bitmap_len and self._nbcrow:
            # NBCROW: a null bitmap (bit i of byte i//8) and then only the non-NULL values.
            bitmap = bytearray(self._bitmap_len)
            parts = [b""]
            for i, (codec, value) in enumerate(zip(codecs, values, strict=True)):
                if value is None:
                    bitmap[i >> 3] |= 1 << (i & 7)
                else:
                    parts.append(codec.encode(value))
            parts[0] = bytes([TOKEN_NBCROW]) + bitmap
            return b"".join(parts)
        return bytes([TOKEN_ROW]) + b"".join(
            codec.null if value is None else codec.encode(value)
            for codec, value in zip(codecs, values, strict=True)
        )


@functools.lru_cache(maxsize=256)
def _cached_encoder(columns: tuple[Column, ...], tds_version: int) -> RowEncoder:
    return RowEncoder(columns, tds_version=tds_version)


def row_encoder(columns: Sequence[Column], tds_version: int = TDS74) -> RowEncoder:
    """The `RowEncoder` of ``columns``, shared by every result of the same columns (an encoder
    keeps no state of a result; its COLMETADATA is made once): a statement run again and again
    describes its columns with the same bytes without building them again."""
    try:
        return _cached_encoder(tuple(columns), tds_version)
    except TypeError:  # a column that cannot be a cache key
        return RowEncoder(columns, tds_version=tds_version)


NO_METADATA = bytes([TOKEN_COLMETADATA]) + b"\xff\xff"


def returnvalue(ordinal: int, name: str, sql_type: SqlType, value: object) -> bytes:
    """RETURNVALUE of an OUTPUT parameter of a procedure call (MS-TDS 2.2.7.19): its ordinal
    and name as the client sent them, its type described as a column's, then its value."""
    codec = codec_for(sql_type)
    return (
        bytes([0xAC])
        + _U16.pack(ordinal)
        + _b_varchar(name)
        + bytes([0x01])  # status: output parameter
        + _U32.pack(0)
        + _U16.pack(_FLAG_NULLABLE)
        + codec.type_info
        + (codec.null if value is None else codec.encode(value))
    )
