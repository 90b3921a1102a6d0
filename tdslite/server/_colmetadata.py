"""Column metadata as bulk load and table-valued parameters carry it: per column a TYPE_INFO.

A BulkLoad message's COLMETADATA token (`_bulk`) and a table-valued parameter's TVP_COLMETADATA
(`_tvp`) describe each column with the TYPE_INFO of an RPC parameter, and each value in their rows
is that parameter's value without the TYPE_INFO: a value is read by putting its column's TYPE_INFO
bytes in front of it (`Prefixed`) and handing it to the RPC parameter reader. The reader is passed
in (`ReadParam`): it reads table-valued parameters itself, so this module cannot import it.
"""

from __future__ import annotations

from dataclasses import dataclass

from tdslite.engine import SqlType

from ._buffer import Reader
from ._datatypes import T
from ._wiretype import ReadParam, UnsupportedParameter, WireType

#: bytes of TYPE_INFO after the type byte, for the types whose TYPE_INFO has a fixed size
_INFO_SIZES: dict[int, int] = {
    T.INT1: 0, T.BIT: 0, T.INT2: 0, T.INT4: 0, T.INT8: 0, T.DATETIM4: 0, T.DATETIME: 0,
    T.FLT4: 0, T.FLT8: 0, T.MONEY4: 0, T.MONEY: 0, T.DATEN: 0,
    T.INTN: 1, T.BITN: 1, T.FLTN: 1, T.MONEYN: 1, T.DATETIMN: 1, T.GUID: 1,
    T.TIMEN: 1, T.DATETIME2N: 1, T.DATETIMEOFFSETN: 1,
    T.DECIMALN: 3, T.NUMERICN: 3, T.DECIMAL: 3, T.NUMERIC: 3,
    T.BIGVARBIN: 2, T.BIGBINARY: 2, T.BIGVARCHR: 7, T.BIGCHAR: 7, T.NVARCHAR: 7, T.NCHAR: 7,
    T.SSVARIANT: 4,
}  # fmt: skip


@dataclass(frozen=True)
class BulkColumn:
    name: str
    type_info: bytes


class Prefixed(Reader):
    """A Reader that first yields ``prefix`` and then continues in ``inner``."""

    __slots__ = ("inner", "prefix")

    def __init__(self, prefix: bytes, inner: Reader) -> None:
        super().__init__(prefix)
        self.prefix = prefix
        self.inner = inner

    def remaining(self) -> int:
        return len(self.prefix) - self.pos + self.inner.remaining()

    def take(self, n: int) -> bytes:
        head = b""
        if self.pos < len(self.prefix):
            head = self.prefix[self.pos : self.pos + n]
            self.pos += len(head)
        return head + (self.inner.take(n - len(head)) if n > len(head) else b"")


def read_type_info(r: Reader) -> bytes:
    start = r.pos
    code = r.u8()
    if code == T.XML:
        if r.u8():
            raise UnsupportedParameter("typed xml (a schema collection) in a bulk load")
    elif code in _INFO_SIZES:
        r.take(_INFO_SIZES[code])
    else:
        raise UnsupportedParameter(
            f"bulk load columns of TDS type 0x{code:02X} (text, ntext, image, udt) are not "
            "supported by tdslite; use varchar(max)/nvarchar(max)/varbinary(max)"
        )
    return r.data[start : r.pos]


def column_types(r: Reader, columns: list[BulkColumn], read_param: ReadParam) -> list[SqlType]:
    """The SQL type each column's values arrive as (read from a NULL of its TYPE_INFO)."""
    out = []
    for column in columns:
        wire, _ = read_param(Prefixed(column.type_info + _null_value(column.type_info), r))
        out.append(_sql_type(wire))
    return out


def _null_value(info: bytes) -> bytes:
    code = info[0]
    if code in (T.BIGVARBIN, T.BIGBINARY, T.BIGVARCHR, T.BIGCHAR, T.NVARCHAR, T.NCHAR):
        max_len = int.from_bytes(info[1:3], "little")
        return b"\xff" * 8 if max_len == 0xFFFF else b"\xff\xff"
    if code == T.XML:
        return b"\xff" * 8
    if code == T.SSVARIANT:
        return b"\x00\x00\x00\x00"
    if _INFO_SIZES.get(code) == 0 and code != T.DATEN:
        sizes: dict[int, int] = {
            T.INT1: 1, T.BIT: 1, T.INT2: 2, T.INT4: 4, T.INT8: 8, T.DATETIM4: 4, T.FLT4: 4,
            T.MONEY4: 4,
        }  # fmt: skip
        return bytes(sizes.get(code, 8))
    return b"\x00"


def _sql_type(wire: WireType) -> SqlType:
    return SqlType(wire.name, length=wire.length, precision=wire.precision, scale=wire.scale)
