"""python-tds's response reader, with shorter paths for a token stream's fixed-size reads and rows.

python-tds (1.17.1) reads every byte, smallint, int and bigint of a response through
``_TdsReader.unpack``, which goes through ``tds_base.readall_fast`` and ``_TdsReader.read_fast``:
four Python calls for one value, whether or not the value lies in the packet at hand. A small
query's answer reads about thirty such values. `FastReader` reads a value that lies wholly in the
packet at hand straight from the packet buffer, and leaves every other read (a value that reaches
past the packet, or one at the end of the response) to python-tds's own code: the values read,
the position after them and the packets read are the same.

A string that lies wholly in the packet at hand is decoded from the packet buffer too
(`FastReader.read_str`), without python-tds's generic ``readall``.

`install(session)` turns a python-tds session's reader into a `FastReader` (its class only: the
buffer, the position and the transport stay); it is idempotent.

`fetch_rows(session, count)` is python-tds's ``cursor.fetchmany(count)`` with a shorter path for
a ROW or NBCROW token that starts in the packet at hand: python-tds reads a row through about a
dozen Python calls (``fetchone``, ``next_row``, the token dispatch, ``process_row``, and each
column's serializer and the reader's methods beneath it); here one loop reads the row's values
from the packet buffer for the common column types (the integers, bit, float and real, the
non-MAX character types), each with the serializer's own rules. A value that reaches past the
packet, a size python-tds would refuse and any other column type are read by the column's own
serializer from the same position, as ``process_row`` does, and any other token (the end of the
result, a message) by python-tds's ``fetchone``: the rows, the errors and the reader's state
after them are python-tds's.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from pytds import tds_base, tds_types
from pytds.collate import ucs2_codec
from pytds.tds_reader import _TdsReader

__all__ = ["FastReader", "fetch_rows", "install"]

_unpack = _TdsReader.unpack


def _fixed(struc: struct.Struct) -> Callable[[Any], Any]:
    """A reader method for one value of ``struc``: from the packet buffer when the value lies in
    the packet at hand, else through python-tds's ``unpack``."""
    size = struc.size
    unpack_from = struc.unpack_from

    def get(self: Any) -> Any:
        pos = self._pos
        end = pos + size
        if end <= self._size:
            self._pos = end
            return unpack_from(self._buf, pos)[0]
        return _unpack(self, struc)[0]

    get.__name__ = get.__qualname__ = f"get_{struc.format}"
    return get


class FastReader(_TdsReader):  # type: ignore[misc]
    """python-tds's ``_TdsReader``; a value inside the packet at hand is read without its
    generic stream path (see the module docstring)."""

    #: python-tds's: the packet buffer, the read position in it and the packet's end
    _buf: bytearray
    _pos: int
    _size: int

    def unpack(self, struc: struct.Struct) -> tuple[Any, ...]:
        pos = self._pos
        end = pos + struc.size
        if end <= self._size:
            self._pos = end
            return struc.unpack_from(self._buf, pos)
        return _unpack(self, struc)  # type: ignore[no-any-return]

    def get_byte(self) -> int:
        pos = self._pos
        if pos < self._size:
            self._pos = pos + 1
            return self._buf[pos]
        return _unpack(self, tds_base._byte)[0]  # type: ignore[no-any-return]

    get_smallint = _fixed(tds_base._smallint_le)
    get_usmallint = _fixed(tds_base._usmallint_le)
    get_int = _fixed(tds_base._int_le)
    get_uint = _fixed(tds_base._uint_le)
    get_uint_be = _fixed(tds_base._uint_be)
    get_uint8 = _fixed(tds_base._uint8_le)
    get_int8 = _fixed(tds_base._int8_le)

    def read_str(self, size: int, codec: Any) -> str:
        pos = self._pos
        end = pos + size
        if size and end <= self._size:
            self._pos = end
            return codec.decode(self._buf[pos:end])[0]  # type: ignore[no-any-return]
        return _TdsReader.read_str(self, size, codec)  # type: ignore[no-any-return]


def install(session: Any) -> None:
    """Make ``session``'s (a python-tds ``_TdsSession``) reader a `FastReader`."""
    reader = session._reader
    if type(reader) is _TdsReader:
        reader.__class__ = FastReader


# ------------------------------------------------------------------------------ rows

# How `_read_row` reads a column: the kinds below, else through the column's serializer.
_GENERIC, _SIZED, _FIXED, _TEXT = range(4)

#: IntN's value sizes and how each is read: the structs python-tds's serializers read with
#: (tinyint unsigned, the others signed; float and real in the machine's byte order, as python-tds)
_INTN_SIZES: dict[int, Callable[..., tuple[Any, ...]]] = {
    1: tds_base._byte.unpack_from,
    2: tds_base._smallint_le.unpack_from,
    4: tds_base._int_le.unpack_from,
    8: tds_base._int8_le.unpack_from,
}
_FLOATN_SIZES: dict[int, Callable[..., tuple[Any, ...]]] = {
    4: tds_types._flt4_struct.unpack_from,
    8: tds_types._flt8_struct.unpack_from,
}


def _bit(buf: Any, pos: int) -> tuple[bool]:
    return (bool(buf[pos]),)


#: BitN's one value size (python-tds: any byte but 0 is True)
_BITN_SIZES: dict[int, Callable[..., tuple[Any, ...]]] = {1: _bit}
#: the fixed-size primitive serializers: their value's size and how it is read
_FIXED_TYPES: dict[type, tuple[int, Callable[..., tuple[Any, ...]]]] = {
    tds_types.TinyIntSerializer: (1, _INTN_SIZES[1]),
    tds_types.SmallIntSerializer: (2, _INTN_SIZES[2]),
    tds_types.IntSerializer: (4, _INTN_SIZES[4]),
    tds_types.BigIntSerializer: (8, _INTN_SIZES[8]),
    tds_types.BitSerializer: (1, _bit),
    tds_types.RealSerializer: (4, _FLOATN_SIZES[4]),
    tds_types.FloatSerializer: (8, _FLOATN_SIZES[8]),
}
#: the non-MAX character serializers (their MAX subclasses read PLP chunks: not these)
_NVARCHAR_TYPES = (
    tds_types.NVarChar70Serializer,
    tds_types.NVarChar71Serializer,
    tds_types.NVarChar72Serializer,
)
_VARCHAR_TYPES = (
    tds_types.VarChar70Serializer,
    tds_types.VarChar71Serializer,
    tds_types.VarChar72Serializer,
)
_ROW = tds_base.TDS_ROW_TOKEN
_NBC_ROW = tds_base.TDS_NBC_ROW_TOKEN
_READING = tds_base.TDS_READING
_ucs2_decode = ucs2_codec.decode

_Plan = list[tuple[int, Any, Any]]
_UNSEEN = object()


def _plan(session: Any) -> _Plan:
    """How `_read_row` reads each column of ``session``'s current result: (kind, serializer,
    argument). The kinds are chosen by the serializer's exact class, so a subclass (MAX types,
    the connector's own time serializers) is read by its own ``read``."""
    bytes_to_unicode = session._tds._login.bytes_to_unicode
    plan: _Plan = []
    for column in session.res_info.columns:
        ser = column.serializer
        cls = type(ser)
        if cls is tds_types.IntNSerializer:
            plan.append((_SIZED, ser, _INTN_SIZES))
        elif cls is tds_types.BitNSerializer:
            plan.append((_SIZED, ser, _BITN_SIZES))
        elif cls is tds_types.FloatNSerializer:
            plan.append((_SIZED, ser, _FLOATN_SIZES))
        elif cls in _FIXED_TYPES:
            plan.append((_FIXED, ser, _FIXED_TYPES[cls]))
        elif cls in _NVARCHAR_TYPES:  # its length unsigned: 0xFFFF is NULL
            plan.append((_TEXT, ser, (_ucs2_decode, 0xFFFF)))
        elif cls in _VARCHAR_TYPES and bytes_to_unicode:  # its length signed: < 0 is NULL
            plan.append((_TEXT, ser, (ser._codec.decode, 0x8000)))
        else:
            plan.append((_GENERIC, ser, None))
    return plan


def _read_row(r: Any, plan: _Plan, nulls: bytes | None) -> list[Any]:
    """One row's values, the reader after its token (and an NBCROW's null bitmap, ``nulls``).

    Each value is read from the packet buffer when it lies wholly in it, else by its
    serializer's ``read`` from the same position (which may read the next packet)."""
    buf = r._buf
    p = r._pos
    size = r._size
    values: list[Any] = []
    append = values.append
    for i, (kind, ser, arg) in enumerate(plan):
        if nulls is not None and nulls[i >> 3] & (1 << (i & 7)):
            append(None)
            continue
        if kind == _SIZED:  # a size byte (0: NULL), then the value
            if p < size:
                n = buf[p]
                if n == 0:
                    append(None)
                    p += 1
                    continue
                unpack = arg.get(n)
                if unpack is not None and p + 1 + n <= size:
                    append(unpack(buf, p + 1)[0])
                    p += 1 + n
                    continue
        elif kind == _FIXED:
            n, unpack = arg
            if p + n <= size:
                append(unpack(buf, p)[0])
                p += n
                continue
        elif kind == _TEXT:  # a 2-byte length (from ``null``: NULL), then the encoded text
            if p + 2 <= size:
                decode, null = arg
                n = buf[p] | buf[p + 1] << 8
                if n >= null:
                    append(None)
                    p += 2
                    continue
                end = p + 2 + n
                if end <= size:
                    append(decode(buf[p + 2 : end])[0])
                    p = end
                    continue
        # not in the packet at hand, a size the serializer refuses, or another type
        r._pos = p
        append(ser.read(r))
        buf = r._buf
        p = r._pos
        size = r._size
    r._pos = p
    return values


def fetch_rows(sess: Any, count: int) -> list[Any]:
    """Up to ``count`` rows of ``sess``'s (a python-tds ``_TdsSession``) current result: what
    python-tds's ``cursor.fetchmany(count)`` returns (``fetchone`` until a row is falsy), read as
    the module docstring says."""
    r = sess._reader
    info: Any = _UNSEEN
    rows: list[Any] = []
    while len(rows) < count:
        if sess.res_info is not info:  # the first row, or python-tds read a new COLMETADATA
            info = sess.res_info
            plan = _plan(sess) if info is not None and not sess.skipped_to_status else []
            nbc_size = (len(plan) + 7) // 8
            convert = sess._row_convertor
        pos = r._pos
        # python-tds's token read checks the session is reading (else raises): its path then;
        # no plan (no result, no column): python-tds's path for every row
        token = r._buf[pos] if plan and pos < r._size and sess.state == _READING else None
        if token == _ROW and sess.more_rows:
            r._pos = pos + 1
            values = _read_row(r, plan, None)
        elif token == _NBC_ROW and sess.more_rows and pos + 1 + nbc_size <= r._size:
            r._pos = pos + 1 + nbc_size
            values = _read_row(r, plan, bytes(r._buf[pos + 1 : pos + 1 + nbc_size]))
        else:
            row = sess.fetchone()  # another token, one in the next packet, or the end
            if not row:
                break
            rows.append(row)
            continue
        info.row_count += 1
        rows.append(convert(values))
    return rows
