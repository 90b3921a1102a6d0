"""A deliberately small TDS client over a trio stream, for wire tests that need to send what real
clients rarely do (IGNORE bit, bulk load, malformed or batched RPCs, garbage). Built from MS-TDS,
independently of tdslite.server."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import trio

EOM = 0x01
IGNORE = 0x02
RESETCONNECTION = 0x08


def utf16(text: str) -> bytes:
    return text.encode("utf-16-le")


def packets(ptype: int, payload: bytes, status: int = 0, size: int = 4096) -> bytes:
    out = b""
    chunks = [payload[i : i + size - 8] for i in range(0, len(payload), size - 8)] or [b""]
    for n, chunk in enumerate(chunks):
        last = n == len(chunks) - 1
        flags = status | (EOM if last else 0)
        out += struct.pack(">BBHHBB", ptype, flags, len(chunk) + 8, 0, n + 1, 0) + chunk
    return out


def prelogin() -> bytes:
    version = bytes([0x10, 0, 0, 0, 0, 0])
    encryption = bytes([2])  # NOT_SUP
    table = struct.pack(">BHH", 0, 11, 6) + struct.pack(">BHH", 1, 17, 1) + b"\xff"
    return table + version + encryption


def login7(user: str, password: str) -> bytes:
    obfuscated = bytes(((b << 4) & 0xF0 | (b >> 4)) ^ 0xA5 for b in utf16(password))
    strings = [b"", utf16(user), obfuscated, utf16("raw"), b"", b"", b"", b"", b""]
    offset = 94
    table = b""
    data = b""
    for raw in strings:
        table += struct.pack("<HH", offset + len(data), len(raw) // 2)
        data += raw
    fixed = struct.pack(
        "<IIIIIIBBBBiI", 94 + len(data), 0x74000004, 4096, 7, 1234, 0, 0xE0, 0x03, 0, 0, 0, 0x409
    )
    # 9 offset/length pairs, ClientID (6), SSPI, AtchDBFile, ChangePassword, cbSSPILong
    tail = b"\x00" * 6 + struct.pack("<HHHHHHI", offset + len(data), 0, 0, 0, 0, 0, 0)
    body = fixed + table + tail
    assert len(body) == 94, len(body)
    return body + data


def all_headers() -> bytes:
    return struct.pack("<IIHQI", 22, 18, 2, 0, 1)


def sql_batch(text: str) -> bytes:
    return all_headers() + utf16(text)


@dataclass
class Reply:
    """Tokens of one reply, decoded just enough for assertions."""

    errors: list[int] = field(default_factory=list)
    envchanges: list[int] = field(default_factory=list)
    dones: list[tuple[int, int, int]] = field(default_factory=list)  # (token, status, count)
    other: list[int] = field(default_factory=list)
    returns: list[tuple[str, int]] = field(default_factory=list)  # int RETURNVALUEs


def parse_reply(data: bytes) -> Reply:
    reply = Reply()
    pos = 0
    while pos < len(data):
        token = data[pos]
        pos += 1
        if token in (0xAA, 0xAB, 0xE3, 0xAD):
            (length,) = struct.unpack_from("<H", data, pos)
            body = data[pos + 2 : pos + 2 + length]
            pos += 2 + length
            if token == 0xAA:
                reply.errors.append(struct.unpack_from("<i", body)[0])
            elif token == 0xE3:
                reply.envchanges.append(body[0])
        elif token in (0xFD, 0xFE, 0xFF):
            status, _cmd, count = struct.unpack_from("<HHQ", data, pos)
            reply.dones.append((token, status, count))
            pos += 12
        elif token == 0x79:
            pos += 4
            reply.other.append(token)
        elif token == 0xAC:  # RETURNVALUE; only int (INTN) values are understood here
            pos += 2
            name = data[pos + 1 : pos + 1 + 2 * data[pos]].decode("utf-16-le")
            pos += 1 + 2 * data[pos] + 1 + 4 + 2
            assert data[pos] == 0x26, "only INTN return values are understood"
            size = data[pos + 2]
            value = int.from_bytes(data[pos + 3 : pos + 3 + size], "little", signed=True)
            reply.returns.append((name, value))
            pos += 3 + size
        else:
            raise AssertionError(f"token 0x{token:02x} not understood by the raw test client")
    return reply


class RawClient:
    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = b""

    @classmethod
    async def connect(cls, host: str, port: int, user: str, password: str) -> RawClient:
        client = cls(await trio.open_tcp_stream(host, port))
        await client.send(0x12, prelogin())
        await client.receive()
        await client.send(0x10, login7(user, password))
        reply = parse_reply(await client.receive())
        assert reply.errors == [], reply
        return client

    async def send(self, ptype: int, payload: bytes, status: int = 0) -> None:
        await self.stream.send_all(packets(ptype, payload, status))

    async def _exactly(self, n: int) -> bytes:
        while len(self.buffer) < n:
            data = await self.stream.receive_some(65536)
            if not data:
                raise EOFError("server closed the connection")
            self.buffer += data
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        return out

    async def receive(self) -> bytes:
        """One whole reply message (packets joined)."""
        payload = b""
        while True:
            _t, status, length, _s, _p, _w = struct.unpack(">BBHHBB", await self._exactly(8))
            payload += await self._exactly(length - 8)
            if status & EOM:
                return payload

    async def request(self, ptype: int, payload: bytes, status: int = 0) -> Reply:
        await self.send(ptype, payload, status)
        return parse_reply(await self.receive())

    async def aclose(self) -> None:
        await self.stream.aclose()
