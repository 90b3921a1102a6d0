"""A bounds-checked little-endian cursor over a client payload (LOGIN7, RPC, PRELOGIN, TM)."""

from __future__ import annotations

import struct

from ._packets import ProtocolError

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_I32 = struct.Struct("<i")
_U64 = struct.Struct("<Q")


def truncated(wanted: int, pos: int) -> ProtocolError:
    """The error for a payload that ends before the ``wanted`` bytes at offset ``pos``."""
    return ProtocolError(f"truncated TDS payload: wanted {wanted} bytes at offset {pos}")


class Reader:
    """Reads ``data`` from ``pos``; reading past the end raises ProtocolError, never IndexError."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes, pos: int = 0) -> None:
        self.data = data
        self.pos = pos

    def remaining(self) -> int:
        return len(self.data) - self.pos

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise truncated(n, self.pos)
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        value: int = _U16.unpack(self.take(2))[0]
        return value

    def u32(self) -> int:
        value: int = _U32.unpack(self.take(4))[0]
        return value

    def i32(self) -> int:
        value: int = _I32.unpack(self.take(4))[0]
        return value

    def u64(self) -> int:
        value: int = _U64.unpack(self.take(8))[0]
        return value

    def b_varchar(self) -> str:
        """A string prefixed by its length in UTF-16 code units as one byte."""
        return self.take(self.u8() * 2).decode("utf-16-le")

    def us_varchar(self) -> str:
        """A string prefixed by its length in UTF-16 code units as two bytes."""
        return self.take(self.u16() * 2).decode("utf-16-le")

    def skip_all_headers(self) -> None:
        """Skip the ALL_HEADERS block that starts SQLBatch, RPC and TM requests (TDS 7.2+)."""
        total = self.u32()
        if total < 4 or self.pos - 4 + total > len(self.data):
            raise ProtocolError(f"invalid ALL_HEADERS length {total}")
        self.pos += total - 4
