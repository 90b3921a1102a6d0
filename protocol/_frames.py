"""The frame layer: the 12-byte header codec and an incremental frame reader.

Every edgetds/1 frame is a fixed header followed by ``length`` payload bytes::

    offset size field
    0      1    version      = 1
    1      1    type         a FrameType
    2      1    flags        = 0 in edgetds/1
    3      1    reserved     = 0
    4      4    stream id    u32 big-endian, 0 = the connection
    8      4    length       u32 big-endian, <= the receiver's max frame payload

This module knows nothing about roles or streams: it turns bytes into :class:`Frame` values and
back, and rejects a header as soon as its 12 bytes are in (a declared length above the limit is
refused before any payload byte is buffered).
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from ._errors import CloseCode, LocalProtocolError, RemoteProtocolError

__all__ = [
    "HEADER_SIZE",
    "MAX_STREAM_ID",
    "VERSION",
    "Frame",
    "FrameReader",
    "FrameType",
    "encode_frame",
    "parse_frame",
]

#: The version byte of edgetds/1 frames.
VERSION = 1
#: Size of the fixed frame header in bytes.
HEADER_SIZE = 12
#: The largest stream id (u32).
MAX_STREAM_ID = 0xFFFFFFFF

_HEADER = struct.Struct(">BBBBII")


class FrameType(enum.IntEnum):
    """Frame type codes (the header's second byte)."""

    #: Relay -> connector, stream 0: the relay's signed hello (first relay frame).
    HELLO = 0x01
    #: Connector -> relay, stream 0: the connector accepted HELLO (first connector frame).
    READY = 0x02
    #: Relay -> connector: opens stream n with an identity-tagged query.
    QUERY = 0x10
    #: Relay -> connector: asks the connector to stop stream n.
    CANCEL = 0x11
    #: Connector -> relay: one NDJSON ``{"columns": [...]}`` line, starts a result set.
    COLUMNS = 0x20
    #: Connector -> relay: one or more NDJSON row lines.
    ROWS = 0x21
    #: Connector -> relay: the terminal ``{"done": ...}`` line; ends the stream.
    DONE = 0x22
    #: Connector -> relay: the terminal ``{"error": ...}`` line; ends the stream.
    ERROR = 0x23
    #: Relay -> connector: a u32 send-window increment for stream n (0 = the connection).
    CREDIT = 0x30
    #: Either side, stream 0: 8 opaque bytes, answered by PONG.
    PING = 0x31
    #: Either side, stream 0: the 8 bytes of the PING it answers.
    PONG = 0x32
    #: Either side, stream 0: the sender opens/accepts no new streams.
    DRAIN = 0x33
    #: Either side, stream 0: the sender is closing the connection.
    GOAWAY = 0x34
    #: Connector -> relay, stream 0: a signed audit checkpoint (capability ``audit.checkpoint``).
    CHECKPOINT = 0x35


#: each frame type by its code (a dict look-up costs a fraction of ``FrameType(code)``)
_TYPES = {int(t): t for t in FrameType}


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded frame. ``flags`` is always 0 in edgetds/1 (kept for the codec's symmetry)."""

    type: FrameType
    stream_id: int
    payload: bytes = b""


def encode_frame(frame: Frame) -> bytes:
    """Serialize ``frame`` (header + payload).

    Raises:
        LocalProtocolError: the stream id or length does not fit in a u32.
    """
    if not 0 <= frame.stream_id <= MAX_STREAM_ID:
        raise LocalProtocolError(f"stream id {frame.stream_id} does not fit in a u32")
    if len(frame.payload) > MAX_STREAM_ID:
        raise LocalProtocolError("payload longer than 2^32-1 bytes")
    header = _HEADER.pack(VERSION, frame.type, 0, 0, frame.stream_id, len(frame.payload))
    return header + frame.payload


def _check_header(header: bytes, max_payload: int) -> tuple[FrameType, int, int]:
    version, type_code, flags, reserved, stream_id, length = _HEADER.unpack(header)
    if version != VERSION:
        raise RemoteProtocolError(f"unsupported frame version {version} (this side speaks 1)")
    frame_type = _TYPES.get(type_code)
    if frame_type is None:
        raise RemoteProtocolError(f"unknown frame type 0x{type_code:02x}")
    if flags != 0:
        raise RemoteProtocolError(f"frame flags must be 0 in edgetds/1, got 0x{flags:02x}")
    if reserved != 0:
        raise RemoteProtocolError(f"reserved header byte must be 0, got 0x{reserved:02x}")
    if length > max_payload:
        raise RemoteProtocolError(
            f"frame payload of {length} bytes exceeds the max frame payload {max_payload}",
            close_code=CloseCode.MESSAGE_TOO_BIG,
        )
    return frame_type, stream_id, length


class FrameReader:
    """Incremental frame parser: feed bytes in any split, take whole frames out.

    Args:
        max_payload: frames declaring a longer payload are rejected from their header alone.
    """

    def __init__(self, *, max_payload: int) -> None:
        self.max_payload = max_payload
        self._buffer = bytearray()
        self._pending: tuple[FrameType, int, int] | None = None

    def feed(self, data: bytes) -> None:
        """Append received bytes."""
        self._buffer += data

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as a frame (a partial frame at EOF = truncation)."""
        return len(self._buffer) + (HEADER_SIZE if self._pending else 0)

    def next_frame(self) -> Frame | None:
        """Return the next whole frame, or None when more bytes are needed.

        Raises:
            RemoteProtocolError: the next header is invalid.
        """
        if self._pending is None:
            if len(self._buffer) < HEADER_SIZE:
                return None
            self._pending = _check_header(bytes(self._buffer[:HEADER_SIZE]), self.max_payload)
            del self._buffer[:HEADER_SIZE]
        frame_type, stream_id, length = self._pending
        if len(self._buffer) < length:
            return None
        payload = bytes(self._buffer[:length])
        del self._buffer[:length]
        self._pending = None
        return Frame(frame_type, stream_id, payload)


def parse_frame(data: bytes, *, max_payload: int) -> Frame:
    """Parse exactly one whole frame (test vectors, tooling).

    Raises:
        RemoteProtocolError: invalid header, truncated frame or trailing bytes.
    """
    reader = FrameReader(max_payload=max_payload)
    reader.feed(data)
    frame = reader.next_frame()
    if frame is None:
        raise RemoteProtocolError(f"truncated frame: {len(data)} bytes is not a whole frame")
    if reader.buffered:
        raise RemoteProtocolError(f"{reader.buffered} bytes after the end of the frame")
    return frame
