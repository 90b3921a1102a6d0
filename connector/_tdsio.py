"""One request and its answer on a python-tds session, from the Trio thread.

python-tds reads and writes its socket blocking, so the connector runs it in a worker thread of
the connection's own (connector/_thread.py). For a small answer, the common case, that hand-off
costs more than the query's own work in the connector: a queue, a thread woken, the GIL passed
to it and back, a byte on a socket pair. `Link` does the same exchange without the thread:

1. `Link.collect`: python-tds serializes the request with its own code, into memory (the
   session's writer gets a transport that keeps what is sent);
2. `Link.exchange`: the request goes out and the answer comes in with Trio's I/O waits, the
   socket read without blocking until the TDS packet that ends the answer's message (status
   EOM, MS-TDS 2.2.3.1.2), or until ``limit`` bytes were read;
3. python-tds parses the answer with its own code, from memory (`Buffered`, the reader's
   transport until the answer is read): in the Trio thread when the whole answer was read
   (`Buffered.strict`: a read past it is an error, never a blocking read), else in the worker
   thread, which reads the rest from the socket once the bytes read ahead are used up.

A link exists only for a session whose transport is a TCP socket, or python-tds's TLS over one
(``pytds.tls.EncryptedSocket``: an OpenSSL connection on memory buffers, which `Link` feeds and
drains as python-tds does), with nothing of an earlier answer left to read.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

import trio
from OpenSSL.SSL import WantReadError, ZeroReturnError
from pytds import tds_base
from pytds.tls import EncryptedSocket

__all__ = ["Buffered", "Kept", "Link"]

#: TDS packet header: type, status, length (big-endian, the header included), SPID, packet, window
_HEADER_SIZE = 8
#: status bit EOM: the last packet of a message
_EOM = 0x01
_RECV_SIZE = 65536


class Kept:
    """python-tds's writer transport while a request is collected: keeps the packets sent."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def sendall(self, data: bytes, flags: int = 0) -> None:
        self.parts.append(bytes(data))


class Buffered:
    """python-tds's reader transport for an answer read ahead: serves the bytes read, then gives
    the reader its own transport back (`strict`: raises instead). python-tds's reader asks its
    transport for ``recv_into`` only."""

    def __init__(self, reader: Any, data: bytearray, original: Any) -> None:
        self._reader = reader
        self._data = memoryview(data)
        self._pos = 0
        self._original = original
        #: True: a read past the bytes read ahead raises tds_base.InterfaceError (the Trio
        #: thread must never block on the socket); False: it goes to the socket
        self.strict = False

    def recv_into(self, buffer: Any, size: int = 0, flags: int = 0) -> int:
        left = len(self._data) - self._pos
        if not left:
            if self.strict:
                raise tds_base.InterfaceError("python-tds read past the end of the answer")
            self.release()
            return self._original.recv_into(buffer, size, flags)  # type: ignore[no-any-return]
        n = min(size or len(buffer), left)
        buffer[:n] = self._data[self._pos : self._pos + n]
        self._pos += n
        return n

    def release(self) -> None:
        """Stop being strict; once every byte was served, give the reader its transport back."""
        self.strict = False
        if self._pos == len(self._data) and self._reader._transport is self:
            self._reader._transport = self._original


class Link:
    """The socket under a python-tds session, for one exchange at a time from the Trio thread."""

    def __init__(self, sess: Any, sock: socket.socket, transport: Any, tls: Any) -> None:
        self._sess = sess
        self._sock = sock
        #: what python-tds reads and writes through (the socket, or the TLS layer over it)
        self._transport = transport
        self._tls = tls
        self.buffered: Buffered | None = None

    @classmethod
    def of(cls, sess: Any) -> Link | None:
        """A link for ``sess`` (python-tds's ``_TdsSession``), or None: its transport is neither
        a TCP socket nor python-tds's TLS over one, or it is not idle (an earlier answer not read
        to its end, a cancel pending)."""
        reader = sess._reader
        transport = reader._transport
        if sess._writer._transport is not transport or sess.state != tds_base.TDS_IDLE:
            return None
        if reader._status != _EOM or reader._pos < reader._size:
            return None  # python-tds's own test that the last answer was read to its end
        if type(transport) is socket.socket:
            return cls(sess, transport, transport, None)
        if type(transport) is EncryptedSocket and type(transport._transport) is socket.socket:
            return cls(sess, transport._transport, transport, transport._tls_conn)
        return None

    def collect(self, write: Callable[[], None]) -> bytes:
        """Run ``write()``, python-tds writing one request, and return the request's bytes
        (plaintext) instead of sending them."""
        writer = self._sess._writer
        kept = Kept()
        writer._transport = kept
        try:
            write()
        finally:
            writer._transport = self._transport
        return b"".join(kept.parts)

    async def exchange(self, request: bytes, limit: int) -> bool:
        """Send ``request`` and read its answer; python-tds's reader then reads it from memory
        (`buffered`). True: the whole answer was read; False: more than ``limit`` bytes of it
        came, the rest is still to be read from the socket.

        Raises:
            OSError: the socket failed.
            tds_base.ClosedConnectionError: SQL Server closed the connection.
            tds_base.InterfaceError: the answer is no TDS message.
            OpenSSL.SSL.Error: TLS failed.
        """
        sock = self._sock
        timeout = sock.gettimeout()
        sock.settimeout(0.0)
        data = bytearray()
        try:
            if self._tls is None:
                await self._send(request)
            else:
                self._tls.sendall(request)
                await self._send(self._tls_out())
            complete = await self._receive(data, limit)
        finally:
            sock.settimeout(timeout)
        reader = self._sess._reader
        self.buffered = Buffered(reader, data, self._transport)
        reader._transport = self.buffered
        return complete

    def _tls_out(self) -> bytes:
        """What the TLS layer has to send (records, after a write or a read)."""
        out = bytearray()
        while True:
            try:
                out += self._tls.bio_read(_RECV_SIZE)
            except WantReadError:
                return bytes(out)

    async def _send(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                sent = self._sock.send(view)
            except BlockingIOError:
                await trio.lowlevel.wait_writable(self._sock)
            else:
                view = view[sent:]

    def _plaintext(self) -> bytes:
        """What the TLS layer has decrypted and not yet given out."""
        out = bytearray()
        while True:
            try:
                out += self._tls.recv(_RECV_SIZE)
            except WantReadError:
                return bytes(out)
            except ZeroReturnError:  # SQL Server closed the TLS session
                if out:
                    return bytes(out)
                raise tds_base.ClosedConnectionError() from None

    async def _read(self) -> bytes:
        """The answer's next bytes (plaintext); waits for the socket as long as none came."""
        while True:
            if self._tls is not None:
                plain = self._plaintext()
                if plain:
                    return plain
            try:
                raw = self._sock.recv(_RECV_SIZE)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(self._sock)
                continue
            if not raw:
                raise tds_base.ClosedConnectionError()
            if self._tls is None:
                return raw
            self._tls.bio_write(raw)
            answer = self._tls_out()  # a TLS message that wants a reply
            if answer:
                await self._send(answer)

    async def _receive(self, data: bytearray, limit: int) -> bool:
        """Read into ``data`` until the packet with EOM ends it (True) or past ``limit`` (False).

        Raises:
            tds_base.InterfaceError: a packet shorter than its header, or bytes after the packet
                with EOM (nothing is sent after an answer unless asked).
        """
        start = 0  # where the next packet header begins in ``data``
        while True:
            data += await self._read()
            while len(data) - start >= _HEADER_SIZE:
                length = int.from_bytes(data[start + 2 : start + 4], "big")
                if length < _HEADER_SIZE:
                    raise tds_base.InterfaceError(f"a TDS packet of {length} bytes")
                end = start + length
                if end > len(data):
                    break
                if data[start + 1] & _EOM:
                    if end != len(data):
                        raise tds_base.InterfaceError("bytes after the end of the answer")
                    return True
                start = end
            if len(data) > limit:
                return False
