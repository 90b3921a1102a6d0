"""Byte transport of one connection: whole TDS messages in, packetised messages out, and TLS.

TLS the SQL Server way (MS-TDS 2.2.6.5 / 3.3.5.4): during the handshake every TLS record travels
inside TDS PRELOGIN (0x12) packets; once the handshake is done, TLS records go on the socket as they
are. `_PreloginWrapped` is the trio Stream that does that wrapping under `trio.SSLStream` and is
switched to pass-through when the handshake completes. TLS is capped at 1.2 (FreeTDS hangs on 1.3).
With login-only encryption (PRELOGIN answer OFF), LOGIN7 is read through TLS and the connection
then continues in clear (`use_clear`).
"""

from __future__ import annotations

import ssl

import trio

from ._packets import (
    HEADER_SIZE,
    MAX_PACKET_SIZE,
    Message,
    PacketType,
    ProtocolError,
    Status,
    encode_message,
    parse_header,
)

#: Largest client message we accept (a guard against unbounded memory use).
MAX_MESSAGE_SIZE = 64 * 1024 * 1024
_KNOWN_TYPES = frozenset(int(t) for t in PacketType)
_EOM, _IGNORE = int(Status.EOM), int(Status.IGNORE)


class ConnectionClosed(Exception):
    """The peer went away (EOF, reset, or TLS failure)."""


class _Buffered:
    """A trio stream with a read buffer, so exact-size reads and hand-overs lose no byte."""

    def __init__(self, stream: trio.abc.Stream, buffered: bytes = b"") -> None:
        self.stream = stream
        self.buffer = bytearray(buffered)

    async def receive_exactly(self, n: int) -> bytes:
        while len(self.buffer) < n:
            try:
                data = await self.stream.receive_some(65536)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise ConnectionClosed(str(exc)) from None
            if not data:
                raise ConnectionClosed("peer closed the connection")
            self.buffer += data
        out = bytes(self.buffer[:n])
        del self.buffer[:n]
        return out


class _PreloginWrapped(trio.abc.Stream):
    """TLS records inside PRELOGIN packets until `passthrough` is set, then raw."""

    def __init__(self, raw: _Buffered, *, packet_size: int) -> None:
        self.raw = raw
        self.passthrough = False
        self._packet_size = packet_size

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        payload = bytes(data)
        if not self.passthrough:
            payload = encode_message(PacketType.PRELOGIN, payload, packet_size=self._packet_size)
        await self.raw.stream.send_all(payload)

    async def wait_send_all_might_not_block(self) -> None:
        await self.raw.stream.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self.passthrough:
            if self.raw.buffer:
                out = bytes(self.raw.buffer)
                self.raw.buffer.clear()
                return out
            return bytes(await self.raw.stream.receive_some(max_bytes))
        try:
            ptype, _status, length = parse_header(await self.raw.receive_exactly(HEADER_SIZE))
            payload = await self.raw.receive_exactly(length)
        except ConnectionClosed:
            return b""
        if ptype != PacketType.PRELOGIN:
            raise trio.BrokenResourceError(f"TDS packet type {ptype} during the TLS handshake")
        return payload

    async def aclose(self) -> None:
        await self.raw.stream.aclose()


class PacketTransport:
    """Reads whole client messages and writes packetised server messages on one connection."""

    def __init__(self, stream: trio.abc.Stream, *, spid: int) -> None:
        self._raw = _Buffered(stream)
        self._io = self._raw
        self._tls: trio.SSLStream[_PreloginWrapped] | None = None
        self._send_lock = trio.Lock()
        self.spid = spid
        self.packet_size = 4096

    async def receive_message(self) -> Message:
        """The next whole message (packets joined); raises ConnectionClosed at EOF."""
        first_type = first_status = -1
        parts: list[bytes] = []
        size = 0
        while True:
            ptype, status, length = parse_header(await self._io.receive_exactly(HEADER_SIZE))
            if ptype not in _KNOWN_TYPES:
                if ptype == 0x16:  # a TLS record: the client speaks TDS 8.0 "strict" (TLS first)
                    raise ProtocolError(
                        "the client starts with TLS (TDS 8.0 strict encryption), which tdslite "
                        "does not support; use encrypt=true/mandatory (TLS inside PRELOGIN)"
                    )
                raise ProtocolError(f"not a TDS packet (type 0x{ptype:02x})")
            if length > MAX_PACKET_SIZE:
                raise ProtocolError(f"TDS packet of {length} bytes is over {MAX_PACKET_SIZE}")
            payload = await self._io.receive_exactly(length)
            if first_type < 0:
                first_type, first_status = ptype, status
            elif ptype != first_type and ptype != PacketType.ATTENTION:
                raise ProtocolError(f"packet type {ptype} inside a message of type {first_type}")
            if ptype == PacketType.ATTENTION and first_type != PacketType.ATTENTION:
                # An attention in the middle of a message abandons it: report the attention.
                return Message(PacketType.ATTENTION, status, b"")
            size += length
            if size > MAX_MESSAGE_SIZE:
                raise ProtocolError(f"message over {MAX_MESSAGE_SIZE} bytes")
            parts.append(payload)
            if status & _EOM:
                return Message(
                    first_type, first_status, parts[0] if len(parts) == 1 else b"".join(parts)
                )
            if status & _IGNORE:
                # the client abandons the message: IGNORE and EOM come together on its last packet
                continue

    async def send_message(self, ptype: int, payload: bytes) -> None:
        """Send one whole message."""
        data = encode_message(ptype, payload, packet_size=self.packet_size, spid=self.spid)
        await self.send_raw(data)

    async def send_raw(self, data: bytes) -> None:
        lock = self._send_lock
        try:
            # uncontended (the usual case): no schedule point of its own, send_all has them
            lock.acquire_nowait()
        except trio.WouldBlock:
            await lock.acquire()
        try:
            await self._io.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise ConnectionClosed(str(exc)) from None
        finally:
            lock.release()

    async def start_tls(self, context: ssl.SSLContext) -> None:
        """Run the TLS handshake inside PRELOGIN packets, then read/write through TLS."""
        wrapped = _PreloginWrapped(self._raw, packet_size=self.packet_size)
        tls = trio.SSLStream(wrapped, context, server_side=True, https_compatible=True)
        try:
            await tls.do_handshake()
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise ConnectionClosed(f"TLS handshake failed: {exc.__cause__ or exc}") from None
        wrapped.passthrough = True
        self._tls = tls
        self._io = _Buffered(tls)

    def use_clear(self) -> None:
        """After a login-only TLS exchange, go back to clear TDS on the socket."""
        assert self._tls is not None
        leftover = bytes(self._io.buffer)
        self._io = self._raw
        self._raw.buffer[:0] = leftover
        self._tls = None

    async def aclose(self) -> None:
        with trio.move_on_after(1) as scope:
            scope.shield = True
            try:
                await self._io.stream.aclose()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
        if self._io is not self._raw:
            await trio.aclose_forcefully(self._raw.stream)
