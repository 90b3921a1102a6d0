"""A lean HTTP/1.1 client for the load generator: one keep-alive connection per slot.

A load generator that spends more CPU per request than the service it measures measures itself.
A general client (httpx) builds a request object, a response object, a pool lookup and several
layers of async context per request; here a slot owns one `HttpConnection` (trio stream + h11
state machine) for the whole run, and a request is one ``send_all`` of the head and body and a
loop over ``receive_some``. The request head (an `h11.Request`, validated by h11 when built) is
built once per path, headers and body length and sent again as it is.

Rules: a connection is used by one query at a time (its slot's). A request that does not reach
the end of its response (cancelled by the caller's timeout, an error) closes the connection; the
next request on that slot opens a new one. A reused connection that the server closed while it
was idle (keep-alive timeout) fails before any response byte: the request is sent again once on
a new connection (the server never read it).
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Sequence
from urllib.parse import urlsplit

import h11
import trio

__all__ = ["HttpConnection", "ResponseTruncated"]

_RECEIVE = 64 * 1024
#: request heads kept per connection (one per distinct headers and body length)
_HEADS_MAX = 256
_END = h11.EndOfMessage()


class ResponseTruncated(Exception):
    """The server closed the connection before the end of the response."""


class _ClosedBeforeResponse(Exception):
    """No byte of a response came before the connection closed."""


class HttpConnection:
    """One keep-alive HTTP/1.1 connection to ``base_url``'s host (see the module docstring)."""

    def __init__(self, base_url: str, *, tls: ssl.SSLContext | None = None) -> None:
        parts = urlsplit(base_url)
        self.host = parts.hostname or "127.0.0.1"
        self.https = parts.scheme == "https"
        self.port = parts.port or (443 if self.https else 80)
        self.authority = parts.netloc.encode()
        self._tls = tls
        self._stream: trio.abc.Stream | None = None
        self._h11: h11.Connection | None = None
        self._heads: dict[tuple[str, tuple[tuple[bytes, bytes], ...], int], h11.Request] = {}

    def _head(
        self, path: str, headers: tuple[tuple[bytes, bytes], ...], length: int
    ) -> h11.Request:
        """The request head for a body of ``length`` bytes, built (and validated by h11) once:
        a load test sends the same path and headers again and again, only the body changes,
        and h11 checks every header against its grammar each time it builds a `h11.Request`.
        The event is immutable; h11 writes the same bytes for it on every send."""
        key = (path, headers, length)
        head = self._heads.get(key)
        if head is None:
            if len(self._heads) >= _HEADS_MAX:
                self._heads.clear()
            head = self._heads[key] = h11.Request(
                method=b"POST",
                target=path.encode(),
                headers=[(b"host", self.authority), (b"content-length", b"%d" % length), *headers],
            )
        return head

    async def _connect(self) -> None:
        stream: trio.abc.Stream = await trio.open_tcp_stream(self.host, self.port)
        if self.https:
            context = self._tls or ssl.create_default_context()
            tls_stream = trio.SSLStream(stream, context, server_hostname=self.host)
            await tls_stream.do_handshake()
            stream = tls_stream
        self._stream = stream
        self._h11 = h11.Connection(h11.CLIENT)

    async def aclose(self) -> None:
        stream, self._stream, self._h11 = self._stream, None, None
        if stream is not None:
            with trio.CancelScope(shield=True):
                await stream.aclose()

    async def post(
        self,
        path: str,
        headers: Sequence[tuple[bytes, bytes]],
        body: bytes,
        on_body: Callable[[bytes], None],
    ) -> tuple[int, bytes]:
        """POST ``body``; every chunk of a 200 response's body goes to ``on_body`` as it
        arrives. Returns the status and, for any other status, the whole body.

        Raises:
            ResponseTruncated: the connection closed before the end of the response.
            OSError, trio.BrokenResourceError: the connection failed.
        """
        head = self._head(path, tuple(headers), len(body))  # no copy of a tuple
        while True:
            reused = self._stream is not None
            if self._stream is None:
                await self._connect()
            stream, conn = self._stream, self._h11
            assert stream is not None
            assert conn is not None
            finished = False
            try:
                out = (conn.send(head) or b"") + (conn.send(h11.Data(data=body)) or b"")
                out += conn.send(_END) or b""
                try:
                    await stream.send_all(out)
                except trio.BrokenResourceError:
                    raise _ClosedBeforeResponse() from None
                answer = await self._read_response(stream, conn, on_body)
                finished = True
                return answer
            except _ClosedBeforeResponse:
                if not reused:
                    raise ResponseTruncated(
                        "the server closed the connection without a response"
                    ) from None
                # a reused connection the server closed while idle: once more on a new one
            finally:
                if not finished:
                    await self.aclose()
                elif conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                    await self.aclose()
                else:
                    conn.start_next_cycle()

    async def _read_response(
        self, stream: trio.abc.Stream, conn: h11.Connection, on_body: Callable[[bytes], None]
    ) -> tuple[int, bytes]:
        status = 0
        other: list[bytes] = []  # the body of a status other than 200
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                raise ResponseTruncated(str(exc)) from None
            if event is h11.NEED_DATA:
                try:
                    data = await stream.receive_some(_RECEIVE)
                except trio.BrokenResourceError:
                    data = b""
                if not data and status == 0:
                    raise _ClosedBeforeResponse()
                conn.receive_data(bytes(data))
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                if status == 200:
                    on_body(bytes(event.data))
                else:
                    other.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                return status, b"".join(other)
            elif isinstance(event, h11.ConnectionClosed):
                raise ResponseTruncated("the server closed the connection mid-response")
