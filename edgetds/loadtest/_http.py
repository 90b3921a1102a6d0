"""A lean HTTP/1.1 client for the load generator: one keep-alive connection per slot.

A load generator that spends more CPU per request than the service it measures measures itself.
A general client (httpx) builds a request object, a response object, a pool lookup and several
layers of async context per request; here a slot owns one `HttpConnection` (trio stream +
httptools' response parser, llhttp in C) for the whole run, and a request is one ``send`` of
the head and body and a loop over ``recv``. The request head is written by h11 (which
validates every header against its grammar) once per path, headers and body length, and the
same bytes are sent again.

Plain HTTP uses the connected socket itself (trio connects it, then hands it over with
``detach``): the request is sent at once (waiting only if the socket's buffer is full), and each
read first waits for the socket to be readable, then reads. A trio `SocketStream` would try the
read first (it fails: the answer is not there yet), raise and catch `BlockingIOError`, and
yield to the scheduler once more after every send. HTTPS goes through a `trio.SSLStream`.

Responses: Content-Length, chunked, or (no length, not chunked) ended by the connection's close,
as RFC 9112 section 6.3 says; 1xx interim responses are skipped. A response the parser refuses
(bad status line, header, chunk size, an upgrade), a head over `HEAD_MAX` bytes, or bytes that
do not parse after the response raise `ResponseInvalid`; nothing is counted from them.

Rules: a connection is used by one query at a time (its slot's). A request that does not reach
the end of its response (cancelled by the caller's timeout, an error) closes the connection; the
next request on that slot opens a new one, as does one after a response that ends the
connection (``Connection: close``, HTTP/1.0 without keep-alive, a body ended by the close, bytes
after the response). A reused connection that the server closed while it was idle (keep-alive
timeout) fails before any response byte: the request is sent again once on a new connection
(the server never read it).
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable, Sequence
from urllib.parse import urlsplit

import h11
import httptools
import trio

__all__ = ["HEAD_MAX", "HttpConnection", "ResponseInvalid", "ResponseTruncated"]

_RECEIVE = 64 * 1024
#: request heads kept per connection (one per distinct headers and body length)
_HEADS_MAX = 256
#: bytes a response may take before the end of its head (h11's default limit)
HEAD_MAX = 16 * 1024


class ResponseTruncated(Exception):
    """The server closed the connection before the end of the response."""


class ResponseInvalid(ResponseTruncated):
    """The response is not HTTP/1.1 this client can read (the message says what is wrong)."""


class _ClosedBeforeResponse(Exception):
    """No byte of a response came before the connection closed."""


class _Response:
    """The parser's callbacks for the responses on one connection: the state of the current one.

    The parser goes on past the end of a response within the same ``feed_data`` (the next
    response of a pipeline): a callback after the end only marks ``extra``."""

    __slots__ = (
        "parser",
        "status",
        "body",
        "head_done",
        "complete",
        "keep_alive",
        "ends_at_close",
        "framing",
        "extra",
    )

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.reset()

    def reset(self) -> None:
        self.status = 0
        self.body: list[bytes] = []
        self.head_done = False
        self.complete = False
        self.keep_alive = False
        self.ends_at_close = False
        #: "length" (Content-Length), "chunked", "other" (a Transfer-Encoding that is not chunked)
        self.framing = ""
        self.extra = False

    def on_message_begin(self) -> None:
        if self.complete:
            self.extra = True

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.complete or len(name) not in (14, 17):
            return
        name = name.lower()
        if name == b"transfer-encoding":
            last = value.rpartition(b",")[2].strip().lower()
            self.framing = "chunked" if last == b"chunked" else "other"
        elif name == b"content-length" and not self.framing:
            self.framing = "length"

    def on_headers_complete(self) -> None:
        if self.complete:
            return
        status = self.parser.get_status_code()
        if 100 <= status < 200:  # an interim response (101 stops the parser: an upgrade)
            self.framing = ""
            return
        self.status = status
        self.head_done = True
        # read while the flags of this response are set (they are cleared at its end)
        self.keep_alive = self.parser.should_keep_alive()
        self.ends_at_close = self.framing in ("", "other") and status not in (204, 304)

    def on_body(self, body: bytes) -> None:
        if not self.complete:
            self.body.append(body)

    def on_message_complete(self) -> None:
        if self.head_done and not self.complete:
            self.complete = True


class HttpConnection:
    """One keep-alive HTTP/1.1 connection to ``base_url``'s host (see the module docstring)."""

    def __init__(self, base_url: str, *, tls: ssl.SSLContext | None = None) -> None:
        parts = urlsplit(base_url)
        self.host = parts.hostname or "127.0.0.1"
        self.https = parts.scheme == "https"
        self.port = parts.port or (443 if self.https else 80)
        self.authority = parts.netloc.encode()
        self._tls = tls
        #: the connection: a socket (plain HTTP) or a TLS stream (HTTPS); None when closed
        self._sock: socket.socket | None = None
        self._stream: trio.abc.Stream | None = None
        self._response: _Response | None = None
        self._heads: dict[tuple[str, tuple[tuple[bytes, bytes], ...], int], bytes] = {}

    def _head(self, path: str, headers: tuple[tuple[bytes, bytes], ...], length: int) -> bytes:
        """The request head for a body of ``length`` bytes, as h11 writes it, built (and
        validated by h11) once: a load test sends the same path and headers again and again,
        only the body changes, and h11 checks every header against its grammar each time it
        builds a request."""
        key = (path, headers, length)
        head = self._heads.get(key)
        if head is None:
            if len(self._heads) >= _HEADS_MAX:
                self._heads.clear()
            request = h11.Request(
                method=b"POST",
                target=path.encode(),
                headers=[(b"host", self.authority), (b"content-length", b"%d" % length), *headers],
            )
            head = self._heads[key] = h11.Connection(h11.CLIENT).send(request) or b""
        return head

    @property
    def connected(self) -> bool:
        return self._sock is not None or self._stream is not None

    async def _connect(self) -> None:
        stream = await trio.open_tcp_stream(self.host, self.port)  # non-blocking, TCP_NODELAY
        if self.https:
            context = self._tls or ssl.create_default_context()
            tls_stream = trio.SSLStream(stream, context, server_hostname=self.host)
            try:
                await tls_stream.do_handshake()
            except BaseException:
                with trio.CancelScope(shield=True):
                    await tls_stream.aclose()
                raise
            self._stream = tls_stream
        else:
            self._sock = socket.socket(fileno=stream.socket.detach())
        self._response = _Response()

    async def aclose(self) -> None:
        sock, stream = self._sock, self._stream
        self._sock = self._stream = self._response = None
        if sock is not None:
            trio.lowlevel.notify_closing(sock)
            sock.close()
        if stream is not None:
            with trio.CancelScope(shield=True):
                await stream.aclose()

    async def _send(self, data: bytes) -> None:
        """Send all of ``data``; `_ClosedBeforeResponse` when the connection is gone."""
        sock = self._sock
        try:
            if sock is None:
                assert self._stream is not None
                await self._stream.send_all(data)
                return
            sent = 0
            while True:
                try:
                    sent += sock.send(data[sent:] if sent else data)
                except BlockingIOError:
                    pass
                if sent == len(data):
                    return
                await trio.lowlevel.wait_writable(sock)  # the socket's buffer is full
        except (OSError, trio.BrokenResourceError):
            raise _ClosedBeforeResponse() from None

    async def _receive(self) -> bytes:
        """The next bytes of the response; b"" at the end of the connection (or its failure)."""
        sock = self._sock
        try:
            if sock is None:
                assert self._stream is not None
                return bytes(await self._stream.receive_some(_RECEIVE))
            while True:
                await trio.lowlevel.wait_readable(sock)
                try:
                    return sock.recv(_RECEIVE)
                except BlockingIOError:
                    pass
        except (OSError, trio.BrokenResourceError):
            return b""

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
            ResponseInvalid: the response is not valid HTTP/1.1 (module docstring).
            OSError, trio.BrokenResourceError: the connection failed.
        """
        out = self._head(path, tuple(headers), len(body)) + body  # no copy of a tuple
        while True:
            reused = self._response is not None
            if self._response is None:
                await self._connect()
            response = self._response
            assert response is not None
            finished = False
            try:
                await self._send(out)
                answer = await self._read_response(response, on_body)
                finished = True
                return answer
            except _ClosedBeforeResponse:
                if not reused:
                    raise ResponseTruncated(
                        "the server closed the connection without a response"
                    ) from None
                # a reused connection the server closed while idle: once more on a new one
            finally:
                if not finished or not response.keep_alive or response.extra:
                    await self.aclose()

    async def _read_response(
        self, response: _Response, on_body: Callable[[bytes], None]
    ) -> tuple[int, bytes]:
        response.reset()
        feed = response.parser.feed_data
        received = 0
        while True:
            data = await self._receive()
            if not data:
                if received == 0:
                    raise _ClosedBeforeResponse()
                if not (response.head_done and response.ends_at_close):
                    raise ResponseTruncated("the server closed the connection mid-response")
                response.complete = True  # the close ends the body
                response.keep_alive = False
            else:
                received += len(data)
                try:
                    feed(data)
                except httptools.HttpParserUpgrade:
                    if not response.complete:
                        raise ResponseInvalid(
                            "malformed HTTP response: the server switched protocols"
                        ) from None
                    response.extra = True
                except httptools.HttpParserError as exc:
                    if not response.complete:
                        raise ResponseInvalid(f"malformed HTTP response: {exc}") from None
                    response.extra = True  # bytes after the response that do not parse
                if not response.head_done and received > HEAD_MAX:
                    raise ResponseInvalid(
                        f"malformed HTTP response: no end of the head in {received} bytes"
                    )
            if response.status == 200:
                if response.body:
                    for chunk in response.body:
                        on_body(chunk)
                    response.body.clear()
                if response.complete:
                    return 200, b""
            elif response.complete:
                return response.status, b"".join(response.body)
