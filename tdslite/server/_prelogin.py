"""PRELOGIN: parse the client's options and build our reply, including the encryption decision.

Encryption, as SQL Server answers (MS-TDS 2.2.6.5), when a certificate is configured:
client ON or REQ -> ON (the whole connection is TLS); client OFF -> OFF (only LOGIN7 travels inside
TLS, then the connection goes back to clear); client NOT_SUP -> NOT_SUP (no TLS). Without a
certificate we always answer NOT_SUP; a client that insists on encryption then gives up by itself,
with its own message ("encryption not supported by server").
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from ._buffer import Reader
from ._packets import ProtocolError


class Option(enum.IntEnum):
    VERSION = 0
    ENCRYPTION = 1
    INSTOPT = 2
    THREADID = 3
    MARS = 4
    TRACEID = 5
    FEDAUTHREQUIRED = 6
    NONCEOPT = 7
    TERMINATOR = 0xFF


class Encrypt(enum.IntEnum):
    OFF = 0  #: available but off (login-only encryption)
    ON = 1  #: available and on
    NOT_SUP = 2  #: not available
    REQ = 3  #: required


@dataclass(frozen=True)
class ClientPrelogin:
    encryption: Encrypt
    mars: bool
    fedauth_required: bool


def parse(payload: bytes) -> ClientPrelogin:
    """Read the option table of a client PRELOGIN (unknown options are skipped)."""
    r = Reader(payload)
    options: dict[int, bytes] = {}
    while True:
        opt = r.u8()
        if opt == Option.TERMINATOR:
            break
        off, length = struct.unpack(">HH", r.take(4))
        if off + length > len(payload):
            raise ProtocolError(f"PRELOGIN option {opt} points past the end of the message")
        options[opt] = payload[off : off + length]
    enc_raw = options.get(Option.ENCRYPTION, b"\x02")
    enc_value = enc_raw[0] & 0x0F if enc_raw else Encrypt.NOT_SUP  # high bits: client cert flag
    try:
        encryption = Encrypt(enc_value)
    except ValueError:
        raise ProtocolError(f"unknown PRELOGIN encryption value {enc_value}") from None
    mars = bool(options.get(Option.MARS, b"\x00")[:1] == b"\x01")
    fedauth = bool(options.get(Option.FEDAUTHREQUIRED, b"\x00")[:1] == b"\x01")
    return ClientPrelogin(encryption=encryption, mars=mars, fedauth_required=fedauth)


def choose_encryption(client: Encrypt, *, have_cert: bool) -> Encrypt:
    """Our ENCRYPTION answer to the client's (see the module docstring)."""
    if not have_cert or client == Encrypt.NOT_SUP:
        return Encrypt.NOT_SUP
    if client == Encrypt.OFF:
        return Encrypt.OFF
    return Encrypt.ON


def build_reply(encryption: Encrypt, *, thread_id: int) -> bytes:
    """Our PRELOGIN reply: VERSION 16.0.1000, ENCRYPTION, INSTOPT (matched), THREADID, MARS off."""
    fields = [
        (Option.VERSION, bytes([16, 0, 0x03, 0xE8, 0, 0])),
        (Option.ENCRYPTION, bytes([encryption])),
        (Option.INSTOPT, b"\x00"),
        (Option.THREADID, struct.pack(">I", thread_id & 0xFFFFFFFF)),
        (Option.MARS, b"\x00"),
    ]
    offset = 5 * len(fields) + 1
    table = bytearray()
    data = bytearray()
    for opt, value in fields:
        table += struct.pack(">BHH", opt, offset + len(data), len(value))
        data += value
    return bytes(table) + bytes([Option.TERMINATOR]) + bytes(data)
