"""TDS packet framing: the 8-byte packet header, whole-message reads and packetised writes.

A TDS *message* (a SQL batch, an RPC, a reply) travels as one or more *packets*; each packet has an
8-byte header (type, status, big-endian length incl. header, spid, packet id, window) and the last
one carries the END_OF_MESSAGE status bit. This module knows nothing of what the payloads mean.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

HEADER = struct.Struct(">BBHHBB")
HEADER_SIZE = HEADER.size

#: Smallest and largest packet sizes a client may negotiate (MS-TDS LOGIN7 PacketSize).
MIN_PACKET_SIZE = 512
MAX_PACKET_SIZE = 32767
DEFAULT_PACKET_SIZE = 4096


class PacketType(enum.IntEnum):
    SQL_BATCH = 0x01  #: a T-SQL batch (UTF-16LE text after ALL_HEADERS)
    RPC = 0x03  #: a remote procedure call (sp_executesql, sp_prepexec, ...)
    REPLY = 0x04  #: tabular result: every server -> client message after PRELOGIN
    ATTENTION = 0x06  #: cancel the running request
    BULK_LOAD = 0x07  #: bulk load data (after an INSERT BULK batch)
    FEDAUTH_TOKEN = 0x08  #: federated authentication token (not used: token rides in LOGIN7)
    TRANSACTION_MANAGER = 0x0E  #: begin/commit/rollback without T-SQL
    LOGIN7 = 0x10  #: the login record
    SSPI = 0x11  #: integrated authentication: the client's next SSPI token
    PRELOGIN = 0x12  #: PRELOGIN, and the TLS handshake records during the handshake


class Status(enum.IntFlag):
    NORMAL = 0x00
    EOM = 0x01  #: last packet of the message
    IGNORE = 0x02  #: the client abandons this message: drop it, still reply
    RESET_CONNECTION = 0x08  #: reset session state before running the message
    RESET_CONNECTION_SKIP_TRAN = 0x10  #: same, but keep the open transaction


#: the status bits `Message` tests on every request, as plain ints (IntFlag arithmetic is slow)
_IGNORE = int(Status.IGNORE)
_RESETS = int(Status.RESET_CONNECTION | Status.RESET_CONNECTION_SKIP_TRAN)
_EOM = int(Status.EOM)


class ProtocolError(Exception):
    """The peer sent bytes that are not valid TDS; the connection is closed after this."""


@dataclass(frozen=True)
class Message:
    """One whole client message: the type and status of its first packet and all payloads joined."""

    type: int
    status: int
    payload: bytes

    @property
    def ignored(self) -> bool:
        return bool(self.status & _IGNORE)

    @property
    def reset_connection(self) -> bool:
        return bool(self.status & _RESETS)


def parse_header(header: bytes) -> tuple[int, int, int]:
    """Return (type, status, payload length) of an 8-byte packet header."""
    ptype, status, length, _spid, _pid, _window = HEADER.unpack(header)
    if length < HEADER_SIZE:
        raise ProtocolError(f"TDS packet length {length} is shorter than its header")
    return ptype, status, length - HEADER_SIZE


def encode_message(
    ptype: int,
    payload: bytes | bytearray,
    *,
    packet_size: int,
    spid: int = 0,
    status: int = 0,
    eom: bool = True,
    packet_id: int = 1,
) -> bytes:
    """Split ``payload`` into packets of at most ``packet_size`` bytes.

    The last packet carries END_OF_MESSAGE unless ``eom`` is False (the message goes on in a later
    call, whose first packet id is ``packet_id`` + the number of packets made here).
    """
    chunk = packet_size - HEADER_SIZE
    out = bytearray()
    view = memoryview(payload)
    total = len(payload)
    pos = 0
    while True:
        part = view[pos : pos + chunk]
        pos += len(part)
        last = pos >= total
        flags = status | (_EOM if last and eom else 0)
        out += HEADER.pack(ptype, flags, len(part) + HEADER_SIZE, spid, packet_id & 0xFF, 0)
        out += part
        packet_id += 1
        if last:
            return bytes(out)
