"""python-tds's response reader with a shorter path for the fixed-size reads of a token stream.

python-tds (1.17.1) reads every byte, smallint, int and bigint of a response through
``_TdsReader.unpack``, which goes through ``tds_base.readall_fast`` and ``_TdsReader.read_fast``:
four Python calls for one value, whether or not the value lies in the packet at hand. A small
query's answer reads about thirty such values. `FastReader` reads a value that lies wholly in the
packet at hand straight from the packet buffer, and leaves every other read (a value that reaches
past the packet, or one at the end of the response) to python-tds's own code: the values read,
the position after them and the packets read are the same.

`install(session)` turns a python-tds session's reader into a `FastReader` (its class only: the
buffer, the position and the transport stay); it is idempotent.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from pytds import tds_base
from pytds.tds_reader import _TdsReader

__all__ = ["FastReader", "install"]

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


def install(session: Any) -> None:
    """Make ``session``'s (a python-tds ``_TdsSession``) reader a `FastReader`."""
    reader = session._reader
    if type(reader) is _TdsReader:
        reader.__class__ = FastReader
