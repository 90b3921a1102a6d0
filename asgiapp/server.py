"""A lean HTTP/1.1 + WebSocket server for one ASGI app on Trio, on llhttp and wsproto.

One task per connection, and the app runs in it: ``receive()`` reads the socket itself (no task
and no channel between the socket and the app), ``send()`` writes to it. `asgiapp.http1` reads
requests (llhttp through httptools, within checks that keep what it accepts to what h11 accepts
alike); responses are written here (Content-Length as the app gives it, else chunked; HEAD, 1xx,
204 and 304 without a body), and a response's head is held back until its first body message, so
a head and a body sent back to back leave in one write. Requests on a connection are served one
after the other (pipelined requests wait in the reader's buffer, in order).
A plain TCP connection is read and written on its socket directly (`_TCP`): a read or write that
can complete at once costs no round of the scheduler (TLS goes through `trio.SSLStream`).

HTTP:

- a request head must fit in `ServerConfig.max_head_bytes` (else 431) and be complete within
  `head_timeout_s` of its first byte (else the connection closes); a keep-alive connection idle
  for `keep_alive_timeout_s` closes; a malformed request is answered 400 and the connection closes
  (see `asgiapp.http1` for what is refused); a request that asks to upgrade to anything but a
  WebSocket is served, and the connection closes after it;
- the body arrives as ``http.request`` messages (Content-Length or chunked; ``Expect:
  100-continue`` is answered when the app first reads the body);
- once the body is read, ``receive()`` waits for the client to go away and returns
  ``http.disconnect`` (at once after the response is complete); bytes of a next, pipelined request
  read meanwhile stay buffered for it;
- an app that fails (or returns) before starting its response gets a 500; one that fails after it
  started has its connection closed; writes to a client that is gone are dropped.

WebSocket (``GET`` with ``Upgrade: websocket``; h11 reads its head a second time and writes the
101 or denial response): ``websocket.connect``, accept (with a
subprotocol the client offered), the denial response extension (``websocket.http.response.*``),
binary and text messages up to `websocket_max_message_size` (a larger one is refused with close
1009), pings answered, close handshakes in both directions. No extensions are negotiated.

No lifespan messages are sent. Shutdown (`serve`'s ``shutdown_trigger``): the listener closes,
idle connections close, requests in progress get `graceful_timeout_s` to finish, then every
connection is cancelled.
"""

from __future__ import annotations

import errno
import logging
import math
import re
import socket
import ssl
import struct
import time
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from email.utils import formatdate
from typing import Any
from urllib.parse import unquote

import h11
import trio
import wsproto
import wsproto.events as ws_events
from wsproto.connection import ConnectionState
from wsproto.frame_protocol import CloseReason
from wsproto.utilities import LocalProtocolError as WSLocalProtocolError
from wsproto.utilities import generate_accept_token, split_comma_header

from asgiapp.http1 import END, NEED_DATA, ProtocolError, Request, RequestReader

__all__ = ["RECEIVE_UNTIL", "SEND_NOW", "ASGIApp", "ServerConfig", "serve"]

Message = MutableMapping[str, Any]
ASGIApp = Callable[
    [Message, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]],
    Awaitable[None],
]

log = logging.getLogger("asgiapp.server")

_ASGI = {"version": "3.0", "spec_version": "2.3"}
_READ_SIZE = 65536
#: accept() errors that mean "out of a resource for now": wait and accept again
_ACCEPT_RETRY = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
#: accept() errors that concern only the connection being accepted (trio's SocketListener skips
#: them too): accept the next one
_ACCEPT_IGNORE = {errno.ECONNABORTED, errno.EPROTO, errno.EPERM}
_DISCONNECT: Message = {"type": "http.disconnect"}
#: An HTTP scope's extension: ``await scope["extensions"][RECEIVE_UNTIL](deadline, on_wait)`` is
#: ``await receive()``, or None once trio time ``deadline`` passed first (or once the app
#: cancelled the cancel scope that ``on_wait``, when given, gets before each wait for the
#: socket). One cancel scope, the server's own, and none while the message is already read: an
#: app's timeout around ``receive()`` without a cancel scope of its own.
RECEIVE_UNTIL = "asgiapp.receive_until"
#: A WebSocket scope's extension: ``scope["extensions"][SEND_NOW](data)`` begins what
#: ``await send({"type": "websocket.send", "bytes": data})`` does, at once: None when the message
#: went out whole without waiting (or was dropped, as `send` drops it), else an awaitable that the
#: caller must await (in the same task) to send it or what is left of it.
SEND_NOW = "asgiapp.websocket_send_now"
#: a header name (RFC 9110 token), and what a header value must not hold
_TOKEN = re.compile(rb"[-!#$%&'*+.^_`|~0-9a-z]+")
_BAD_VALUE = re.compile(rb"[\x00\r\n]|^[ \t]|[ \t]$")


@dataclass(frozen=True)
class ServerConfig:
    """Where and how to serve (``port`` 0 picks a free port)."""

    host: str = "127.0.0.1"
    port: int = 0
    certfile: str | None = None
    keyfile: str | None = None
    backlog: int = 1024
    #: the most bytes of a request head (or chunk line) held
    max_head_bytes: int = 64 * 1024
    keep_alive_timeout_s: float = 5.0
    head_timeout_s: float = 10.0
    websocket_max_message_size: int = 16 * 1024 * 1024
    graceful_timeout_s: float = 1.0
    #: bytes of a request body an app left unread that are read and dropped to keep the
    #: connection (more, and it closes)
    max_discard_bytes: int = 1024 * 1024


class _Date:
    """The Date header's value, formatted once a second."""

    second = 0
    value = b""

    @classmethod
    def now(cls) -> bytes:
        second = int(time.time())
        if second != cls.second:
            cls.second = second
            cls.value = formatdate(second, usegmt=True).encode("ascii")
        return cls.value


def _listen_socket(config: ServerConfig) -> socket.socket:
    host = config.host.strip("[]")
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, config.port))
        sock.listen(config.backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _ssl_context(config: ServerConfig) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.set_ciphers("ECDHE+AESGCM")
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_COMPRESSION
    context.set_alpn_protocols(["http/1.1"])
    context.load_cert_chain(certfile=str(config.certfile), keyfile=config.keyfile)
    return context


def _address(sockname: Any) -> tuple[str, int] | None:
    if isinstance(sockname, tuple) and len(sockname) >= 2:
        return str(sockname[0]), int(sockname[1])
    return None


def _url(scheme: str, address: tuple[str, int]) -> str:
    host, port = address
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


async def serve(
    app: ASGIApp,
    config: ServerConfig,
    *,
    shutdown_trigger: Callable[[], Awaitable[object]] | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve `app` until `shutdown_trigger` returns (or forever); ``task_status.started`` gets
    the bound URLs (``http://host:port``, ``https://[::1]:port``).

    Raises:
        OSError: the address cannot be bound.
        ssl.SSLError, OSError: the certificate or key cannot be loaded.
    """
    context = _ssl_context(config) if config.certfile else None
    sock = _listen_socket(config)
    bound = _address(sock.getsockname())
    assert bound is not None
    server = _Server(app, config, context)
    try:
        async with trio.open_nursery() as nursery:
            accepting = trio.CancelScope()

            async def accept_loop() -> None:
                with accepting:
                    await server.accept(sock, nursery)

            nursery.start_soon(accept_loop)
            task_status.started([_url("https" if context else "http", bound)])
            if shutdown_trigger is None:
                await trio.sleep_forever()
            else:
                await shutdown_trigger()
            accepting.cancel()
            _close(sock)
            await server.shut_down()
            nursery.cancel_scope.cancel()
    finally:
        _close(sock)


def _close(sock: socket.socket) -> None:
    """Close a socket a task may be waiting on (trio must be told first)."""
    if sock.fileno() != -1:
        trio.lowlevel.notify_closing(sock)
        sock.close()


class _TCP:
    """A plain TCP connection's stdlib socket, as much of a `trio.abc.Stream` as the server uses.

    A read or write that can complete at once does, without a round of the scheduler (trio's
    socket calls yield after every call that succeeded); one that cannot waits in
    `trio.lowlevel.wait_readable` / `wait_writable`. So that a peer that keeps sending cannot hold
    the loop, a read that succeeds at once right after another that did is a checkpoint too.
    A read that the caller expects to wait (``wait_first``: what comes next answers what this side
    has yet to send, or comes at the peer's own pace) waits for the socket first when the last
    read emptied it (fewer bytes than asked for), instead of trying a ``recv`` that finds nothing;
    bytes that arrived meanwhile end that wait at once (trio arms its epoll registration with
    the socket's state at that moment), so none is missed.
    Errors are trio's: `trio.BrokenResourceError` (from the OSError), `trio.ClosedResourceError`.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.socket = sock
        #: the last read succeeded without waiting
        self._read_at_once = False
        #: the last read took everything the socket held (fewer bytes than it asked for)
        self._emptied = False

    @property
    def emptied(self) -> bool:
        """The last read took everything the socket held (see ``wait_first``)."""
        return self._emptied

    def waited(self) -> None:
        """The caller waited for the socket itself: the next read tries at once."""
        self._emptied = self._read_at_once = False

    async def receive_some(self, max_bytes: int, wait_first: bool = False) -> bytes:
        sock = self.socket
        waited = wait_first and self._emptied
        if waited:
            await trio.lowlevel.wait_readable(sock)
        elif self._read_at_once:
            await trio.lowlevel.checkpoint()
        self._read_at_once = not waited
        while True:
            try:
                data = sock.recv(max_bytes)
            except BlockingIOError:
                pass
            except OSError as exc:
                self._emptied = False
                raise _stream_error(sock, exc) from exc
            else:
                self._emptied = 0 < len(data) < max_bytes
                return data
            self._read_at_once = False
            await trio.lowlevel.wait_readable(sock)

    async def send_all(self, data: bytes) -> None:
        sock = self.socket
        view = memoryview(data)
        while True:
            try:
                sent = sock.send(view)
            except BlockingIOError:
                sent = 0
            except OSError as exc:
                raise _stream_error(sock, exc) from exc
            if sent == len(view):
                return
            view = view[sent:]
            await trio.lowlevel.wait_writable(sock)

    def send_now(self, data: bytes) -> int:
        """Write what the socket takes of `data` now, without waiting; how many bytes that was."""
        try:
            return self.socket.send(data)
        except BlockingIOError:
            return 0
        except OSError as exc:
            raise _stream_error(self.socket, exc) from exc

    async def send_eof(self) -> None:
        try:
            self.socket.shutdown(socket.SHUT_WR)
        except OSError as exc:
            raise _stream_error(self.socket, exc) from exc
        await trio.lowlevel.checkpoint()

    def close(self) -> None:
        _close(self.socket)


def _stream_error(
    sock: socket.socket, exc: OSError
) -> trio.BrokenResourceError | trio.ClosedResourceError:
    if sock.fileno() == -1:
        return trio.ClosedResourceError("the socket was closed")
    return trio.BrokenResourceError(f"socket error: {exc}")


class _Server:
    def __init__(self, app: ASGIApp, config: ServerConfig, context: ssl.SSLContext | None):
        self.app = app
        self.config = config
        self.context = context
        self.connections: set[_Connection] = set()
        self.closing = False
        self.all_closed = trio.Event()

    async def accept(self, listener: socket.socket, nursery: trio.Nursery) -> None:
        while True:
            await trio.lowlevel.wait_readable(listener)
            try:
                sock, _ = listener.accept()
            except BlockingIOError:
                continue
            except OSError as exc:
                if exc.errno in _ACCEPT_IGNORE:  # that connection is gone already
                    continue
                if exc.errno not in _ACCEPT_RETRY:
                    raise
                log.error("accept() failed (%s); retrying in 0.1 s", exc)
                await trio.sleep(0.1)
                continue
            nursery.start_soon(self.connection, sock)

    async def connection(self, sock: socket.socket) -> None:
        client = server = None
        sock.setblocking(False)
        try:
            # as trio.SocketStream does: no Nagle delay, and at most 16 KiB unsent in the kernel
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if hasattr(trio.socket, "TCP_NOTSENT_LOWAT"):
                sock.setsockopt(socket.IPPROTO_TCP, trio.socket.TCP_NOTSENT_LOWAT, 2**14)
        except OSError:
            pass
        try:
            client = _address(sock.getpeername())
            server = _address(sock.getsockname())
        except OSError:
            pass
        stream: trio.abc.Stream | _TCP
        if self.context is not None:
            tcp = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
            stream = trio.SSLStream(tcp, self.context, server_side=True, https_compatible=True)
        else:
            stream = _TCP(sock)
        conn = _Connection(self, stream, client, server)
        self.connections.add(conn)
        try:
            await conn.run()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        except Exception:
            log.exception("connection from %s failed", client)
        finally:
            self.connections.discard(conn)
            if self.closing and not self.connections:
                self.all_closed.set()
            if isinstance(stream, _TCP):
                stream.close()
            else:
                await trio.aclose_forcefully(stream)

    async def shut_down(self) -> None:
        """Close idle connections, give the others the grace period, then return."""
        self.closing = True
        for conn in list(self.connections):
            conn.close_if_idle()
        if self.connections:
            with trio.move_on_after(self.config.graceful_timeout_s):
                await self.all_closed.wait()


class _Connection:
    """One client connection: its requests one after the other, or one WebSocket."""

    def __init__(
        self,
        server: _Server,
        stream: trio.abc.Stream | _TCP,
        client: tuple[str, int] | None,
        address: tuple[str, int] | None,
    ) -> None:
        self.server = server
        self.stream = stream
        self.client = client
        self.address = address
        self.tls = server.context is not None
        self.reader = RequestReader(server.config.max_head_bytes)
        #: set while waiting for a next request with nothing of it received
        self.idle_scope: trio.CancelScope | None = None
        #: the client went away (EOF, a reset, a write failed or was cancelled): nothing more is
        #: written
        self.gone = False
        # the request in progress
        self.method = b""
        self.expect_continue = False
        self.body_done = False
        self.head: tuple[int, list[tuple[bytes, bytes]]] | None = None
        self.started = False
        self.done = False
        self.wait_scope: trio.CancelScope | None = None

    def close_if_idle(self) -> None:
        if self.idle_scope is not None:
            self.idle_scope.cancel()

    async def _recv(self, wait_first: bool = False) -> bytes:
        """The next bytes from the client (b"": it is gone). ``wait_first``: the caller expects
        nothing to be there yet (see `_TCP`)."""
        stream = self.stream
        try:
            if isinstance(stream, _TCP):
                return await stream.receive_some(_READ_SIZE, wait_first)
            data = await stream.receive_some(_READ_SIZE)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return b""
        return data if isinstance(data, bytes) else bytes(data)

    async def _write(self, data: bytes) -> None:
        if self.gone or not data:
            return
        try:
            await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.gone = True
        except BaseException:
            # cancelled mid-write: the stream may end inside a message, nothing can follow
            self.gone = True
            raise

    async def _refuse(self, status: int) -> None:
        """A bare error response, then the connection closes (after reading what the client
        still sends for a moment: closing with unread bytes would reset the connection, and the
        client could lose the response)."""
        await self._write(
            b"HTTP/1.1 %d \r\ncontent-length: 0\r\nconnection: close\r\ndate: %s\r\n\r\n"
            % (status, _Date.now())
        )
        if self.gone or not isinstance(self.stream, _TCP):
            return
        try:
            await self.stream.send_eof()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            return
        left = self.server.config.max_discard_bytes
        with trio.move_on_after(1):
            while left > 0 and (data := await self._recv()):
                left -= len(data)

    async def run(self) -> None:
        while True:
            request = await self._next_request()
            if request is None:
                return
            headers = request.headers
            upgrade = _get(headers, b"upgrade")
            if request.method == b"GET" and upgrade and upgrade.lower() == b"websocket":
                await _WebSocket(self, request, headers).run()
                return
            if not await self._http(request, headers):
                return

    async def _next_request(self) -> Request | None:
        config = self.server.config
        reader = self.reader
        deadline = trio.current_time() + config.keep_alive_timeout_s
        received = reader.buffered > 0  # a pipelined request's bytes may be buffered
        while True:
            try:
                event = reader.next_event()
            except ProtocolError as exc:
                await self._refuse(exc.status)
                return None
            if event is NEED_DATA:
                if self.server.closing and not received:
                    return None
                data = b""
                with trio.move_on_at(deadline) as waited:
                    if not received:  # idle between requests: a shutdown may cancel the wait
                        self.idle_scope = waited
                    data = await self._recv(wait_first=not received)
                self.idle_scope = None
                if waited.cancelled_caught or (not data and not received):
                    return None
                if not received:
                    received = True
                    deadline = trio.current_time() + config.head_timeout_s
                reader.receive_data(data)
            elif isinstance(event, Request):
                return event
            else:  # the client closed between requests, or after an upgrade request
                return None

    def _scope(self, request: Request, kind: str, headers: list[tuple[bytes, bytes]]) -> Message:
        path, _, query = request.target.partition(b"?")
        secure = self.tls
        return {
            "type": kind,
            "asgi": _ASGI,
            "http_version": request.http_version.decode("ascii"),
            "method": request.method.decode("ascii"),
            "scheme": ("https" if secure else "http")
            if kind == "http"
            else ("wss" if secure else "ws"),
            "path": unquote(path.decode("ascii")),
            "raw_path": path,
            "query_string": query,
            "root_path": "",
            "headers": headers,
            "client": self.client,
            "server": self.address,
            "extensions": {RECEIVE_UNTIL: self.receive_until} if kind == "http" else {},
        }

    # -- HTTP ---------------------------------------------------------------------------------

    async def _http(self, request: Request, headers: list[tuple[bytes, bytes]]) -> bool:
        """Serve one request (`headers`: its headers as a list); True if the connection may carry
        another."""
        self.method = request.method
        self.http11 = request.http_version == b"1.1"
        # after an upgrade request (not a WebSocket's), what follows is not HTTP: the connection
        # closes after the response
        self.keep_alive = (
            self.http11 and not request.upgrade and not _has_token(headers, b"connection", b"close")
        )
        self.expect_continue = request.expect_continue
        self.body_done = False
        self.head = None
        self.started = self.done = self.chunked = self.bodyless = False
        self.length: int | None = None
        self.wait_scope = None
        try:
            await self.server.app(self._scope(request, "http", headers), self.receive, self.send)
        except Exception:
            log.exception(
                "ASGI app failed on %s %s",
                self.method.decode("ascii", "replace"),
                request.target.partition(b"?")[0][:200].decode("ascii", "replace"),
            )
            if self.started:
                return False
        if not self.done:
            if self.started:
                return False
            log.error("ASGI app returned without a response")
            await self._refuse(500)
            return False
        if self.gone or not self.keep_alive:
            return False
        return not self.reader.in_body or await self._discard_body()

    async def _discard_body(self) -> bool:
        """Read and drop the rest of a request body the app did not read (within limits)."""
        left = self.server.config.max_discard_bytes
        with trio.move_on_after(self.server.config.keep_alive_timeout_s):
            while left > 0:
                try:
                    event = self.reader.next_event()
                except ProtocolError:
                    return False
                if event is END:
                    return True
                if isinstance(event, bytes):
                    left -= len(event)
                else:  # NEED_DATA
                    data = await self._recv()
                    if not data:
                        return False
                    self.reader.receive_data(data)
        return False

    async def receive(self) -> Message:
        if not self.body_done:
            message = await self._read_body(math.inf, None)
            assert message is not None  # None only at a deadline
            return message
        if self.done or self.gone:
            return _DISCONNECT
        await self._wait_disconnect(trio.CancelScope())
        return _DISCONNECT

    async def receive_until(
        self, deadline: float, on_wait: Callable[[trio.CancelScope], object] | None = None
    ) -> Message | None:
        """`receive()`, or None when trio time `deadline` passes first (see `RECEIVE_UNTIL`).

        The wait for the socket runs in one cancel scope with that deadline, and only when the
        message is not there yet: ``on_wait`` gets that scope before the wait, and cancelling it
        ends the wait with None too.
        """
        if not self.body_done:
            return await self._read_body(deadline, on_wait)
        if self.done or self.gone:
            return _DISCONNECT
        waited = trio.CancelScope(deadline=deadline)
        if on_wait is not None:
            on_wait(waited)
        await self._wait_disconnect(waited)
        # cancelled by `send` (the response is complete): the answer `receive()` gives
        return _DISCONNECT if not waited.cancelled_caught or self.done else None

    async def _wait_disconnect(self, waited: trio.CancelScope) -> None:
        """The body was read: the only message left is http.disconnect; wait for it in
        ``waited`` (`send` cancels it once the response is complete)."""
        try:
            with waited:
                self.wait_scope = waited
                while True:
                    if self.reader.buffered > self.server.config.max_head_bytes:
                        await trio.sleep_forever()  # enough of a next request held: stop reading
                    stream = self.stream
                    if isinstance(stream, _TCP) and stream.emptied:
                        # `_recv(wait_first=True)` with the wait in this frame: this wait usually
                        # ends cancelled (by `send`, or by the app's scope when its answer is
                        # there), and the cancellation so unwinds through two frames fewer (only
                        # this task closes the socket, after this wait)
                        await trio.lowlevel.wait_readable(stream.socket)
                        stream.waited()
                    data = await self._recv()
                    if not data:
                        self.gone = True
                        break
                    self.reader.receive_data(data)  # a pipelined request's bytes, for its turn
        finally:
            # also when the app's own scope ended the wait: `send` has no wait to cancel then
            self.wait_scope = None

    async def _read_body(
        self, deadline: float, on_wait: Callable[[trio.CancelScope], object] | None
    ) -> Message | None:
        chunks: list[bytes] = []
        reader = self.reader
        while True:
            try:
                event = reader.next_event()
            except ProtocolError:
                self.body_done = self.gone = True
                return _DISCONNECT
            if isinstance(event, bytes):
                chunks.append(event)
                self.expect_continue = False  # the client sent the body without waiting
            elif event is END:
                self.body_done = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            elif event is NEED_DATA:
                if chunks:
                    return {"type": "http.request", "body": b"".join(chunks), "more_body": True}
                if deadline == math.inf and on_wait is None:
                    data = await self._body_data()
                else:
                    data = None
                    with trio.CancelScope(deadline=deadline) as waited:
                        if on_wait is not None:
                            on_wait(waited)
                        data = await self._body_data()
                    if data is None:
                        return None
                if not data:
                    self.body_done = self.gone = True
                    return _DISCONNECT
                reader.receive_data(data)
            else:
                self.body_done = self.gone = True
                return _DISCONNECT

    async def _body_data(self) -> bytes:
        """More of the request body from the socket (b"": the client is gone)."""
        if self.expect_continue and not self.started:
            self.expect_continue = False
            await self._write(b"HTTP/1.1 100 \r\n\r\n")
        return await self._recv()

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            if self.head is not None:
                raise RuntimeError("http.response.start sent twice")
            self.head = (int(message["status"]), list(message.get("headers", ())))
            return
        if kind != "http.response.body":
            raise RuntimeError(f"unexpected ASGI message {kind!r} for an HTTP request")
        if self.head is None or self.done:
            raise RuntimeError("http.response.body before http.response.start or after the end")
        out: list[bytes] = []
        if not self.started:
            out.append(self._response_head())
            self.started = True
        body = message.get("body", b"")
        more = message.get("more_body", False)
        if body and self.length is not None:
            self.length -= len(body)
            if self.length < 0:
                self.keep_alive = False
                raise RuntimeError("response body longer than its content-length")
        if body and not self.bodyless:
            out.append(b"%x\r\n%b\r\n" % (len(body), body) if self.chunked else bytes(body))
        if not more:
            self.done = True
            if self.chunked:
                out.append(b"0\r\n\r\n")
            if self.length:
                self.keep_alive = False  # shorter than announced: the client must not wait on
                raise RuntimeError("response body shorter than its content-length")
        await self._write(b"".join(out) if len(out) > 1 else out[0] if out else b"")
        if self.done and self.wait_scope is not None:
            self.wait_scope.cancel()

    def _response_head(self) -> bytes:
        """The status line and headers of the response `self.head`; sets the body's framing
        (`length`, `chunked`) and whether the connection is kept (`keep_alive`).

        Raises:
            ValueError: a header name or value that could split the response (CR, LF, NUL, ...).
        """
        assert self.head is not None
        status, headers = self.head
        lines = [b"HTTP/1.1 %d \r\n" % status]
        close = False
        for name, value in headers:
            lower = _HEADER_NAMES.get(name) if type(name) is bytes else None
            if lower is None:
                lower = _header_name(name)
            data = value if type(value) is bytes else bytes(value)
            if _BAD_VALUE.search(data):
                raise ValueError(f"invalid response header {lower!r}")
            if lower == b"content-length":
                self.length = int(value)
            elif lower == b"transfer-encoding":
                continue  # the framing is this server's
            elif lower == b"connection" and b"close" in data.lower():
                close = True
            lines.append(b"%b: %b\r\n" % (lower, data))
        bodyless = status < 200 or status in (204, 304)
        #: a body the app sends is dropped (a HEAD's, a 204's, ...)
        self.bodyless = bodyless or self.method == b"HEAD"
        if bodyless:
            self.length = None
        elif self.length is None:
            if self.http11:
                self.chunked = True
                lines.append(b"transfer-encoding: chunked\r\n")
            else:
                self.keep_alive = False  # an HTTP/1.0 body ends with the connection
        if self.method == b"HEAD":
            self.length = None
        if close or self.server.closing:
            self.keep_alive = False
        if not self.keep_alive and not close:
            lines.append(b"connection: close\r\n")
        lines.append(b"date: %b\r\n\r\n" % _Date.now())
        return b"".join(lines)


#: response header names already checked, as an app gave them (bytes) -> lower case; at most
#: `_HEADER_NAMES_MAX` (an app's names are few: each is checked once)
_HEADER_NAMES: dict[bytes, bytes] = {}
_HEADER_NAMES_MAX = 256


def _header_name(name: Any) -> bytes:
    """A response header's name in lower case, checked.

    Raises:
        ValueError: a name that is not an HTTP token (it could split the response).
    """
    lower = bytes(name).lower()
    if not _TOKEN.fullmatch(lower):
        raise ValueError(f"invalid response header {lower!r}")
    if type(name) is bytes:
        if len(_HEADER_NAMES) >= _HEADER_NAMES_MAX:
            _HEADER_NAMES.clear()
        _HEADER_NAMES[name] = lower
    return lower


#: the first byte of a whole binary message's frame: FIN, opcode 2 (RFC 6455 5.2)
_FIN_BINARY = 0x82
_LENGTH_16 = struct.Struct("!BBH")
_LENGTH_64 = struct.Struct("!BBQ")


def _binary_head(length: int) -> bytes:
    """The header of an unmasked frame that carries a whole binary message of `length` bytes."""
    if length < 126:
        return bytes((_FIN_BINARY, length))
    if length < 1 << 16:
        return _LENGTH_16.pack(_FIN_BINARY, 126, length)
    return _LENGTH_64.pack(_FIN_BINARY, 127, length)


def _has_token(headers: Any, name: bytes, token: bytes) -> bool:
    """Whether a comma-separated header (e.g. Connection) lists `token` (lower-case)."""
    for key, value in headers:
        if key == name and token in (part.strip() for part in bytes(value).lower().split(b",")):
            return True
    return False


def _get(headers: Any, name: bytes) -> bytes | None:
    for key, value in headers:
        if key == name:
            return bytes(value)
    return None


class _WebSocket:
    """One WebSocket connection: the upgrade request, then wsproto."""

    def __init__(
        self, conn: _Connection, request: Request, headers: list[tuple[bytes, bytes]]
    ) -> None:
        self.conn = conn
        self.request = request
        #: writes the 101 or denial response (it reads the request's head again)
        self.h11 = h11.Connection(
            h11.SERVER, max_incomplete_event_size=conn.server.config.max_head_bytes
        )
        self.scope = conn._scope(request, "websocket", headers)
        offered = _get(headers, b"sec-websocket-protocol")
        self.scope["subprotocols"] = split_comma_header(offered) if offered else []
        self.scope["extensions"] = {"websocket.http.response": {}, SEND_NOW: self.send_now}
        self.ws: wsproto.connection.Connection | None = None
        #: "handshake", "response" (denial started), "connected", "closed", "denied"
        self.state = "handshake"
        self.connect_sent = False
        self.pending: deque[ws_events.Event] = deque()
        self.message: list[bytes | str] = []
        self.message_size = 0
        self.lock = trio.Lock()
        self.response: tuple[int, list[tuple[bytes, bytes]]] | None = None
        self.disconnect_code: int | None = None

    def _valid(self) -> bool:
        headers = self.request.headers
        tokens = split_comma_header(_get(headers, b"connection") or b"")
        return (
            self.request.http_version == b"1.1"
            and _get(headers, b"sec-websocket-key") is not None
            and any(token.lower() == "upgrade" for token in tokens)
            and _get(headers, b"sec-websocket-version") == b"13"
        )

    async def run(self) -> None:
        conn = self.conn
        # The reader refused a body: the request's bytes end with its head
        self.h11.receive_data(conn.reader.last_fed)
        request: object = None
        end: object = None
        try:
            request = self.h11.next_event()
            end = self.h11.next_event()
        except h11.RemoteProtocolError:
            pass
        if (
            not self.request.upgrade
            or not self._valid()
            or not isinstance(request, h11.Request)
            or not isinstance(end, h11.EndOfMessage)
        ):
            await conn._refuse(400)
            return
        try:
            await conn.server.app(self.scope, self.receive, self.send)
        except Exception:
            log.exception("ASGI app failed on WebSocket %s", self.scope["path"][:200])
        if self.state in ("handshake", "response"):
            await conn._refuse(500)
            return
        if self.state == "connected":
            await self._send_event(ws_events.CloseConnection(code=CloseReason.INTERNAL_ERROR))
        if self.ws is not None:
            # our close frame went out: wait (briefly) for the client's
            with trio.move_on_after(1):
                while self.ws.state is ConnectionState.LOCAL_CLOSING and not conn.gone:
                    await self._next_message()

    async def _write(self, data: bytes) -> None:
        try:
            self.lock.acquire_nowait()
        except trio.WouldBlock:
            await self.lock.acquire()
        try:
            await self.conn._write(data)
        finally:
            self.lock.release()

    async def _send_event(self, event: ws_events.Event) -> None:
        assert self.ws is not None
        try:
            data = self.ws.send(event)
        except WSLocalProtocolError:
            return
        await self._write(data)

    async def _send_binary(self, data: bytes) -> None:
        """A binary message, as one frame built here: byte for byte what wsproto's `send` makes
        of it on this connection (a server's frames are unmasked, no extension is negotiated, no
        message is sent in fragments) at a fraction of its cost; dropped, as wsproto's refusal
        is, unless the connection is open."""
        assert self.ws is not None
        if self.ws.state is not ConnectionState.OPEN:
            return
        await self._write(b"".join((_binary_head(len(data)), data)))

    def send_now(self, data: bytes) -> Awaitable[None] | None:
        """`SEND_NOW`: a binary message's frame written at once when the socket takes it whole;
        else what to await: the rest of the frame (the write lock held until it is sent), or the
        whole `send` (not connected, TLS, or a write in progress)."""
        conn = self.conn
        if self.state != "connected" or not isinstance(conn.stream, _TCP):
            return self.send({"type": "websocket.send", "bytes": data})
        assert self.ws is not None
        if self.ws.state is not ConnectionState.OPEN or conn.gone:
            return None  # dropped, as `_send_binary` and `_Connection._write` drop it
        try:
            self.lock.acquire_nowait()
        except trio.WouldBlock:
            return self._send_binary(data)
        frame = b"".join((_binary_head(len(data)), data))
        try:
            sent = conn.stream.send_now(frame)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            conn.gone = True
            sent = len(frame)
        except BaseException:
            self.lock.release()
            raise
        if sent == len(frame):
            self.lock.release()
            return None
        return self._write_rest(frame[sent:])

    async def _write_rest(self, rest: bytes) -> None:
        """The rest of a frame `send_now` began, under the write lock it holds."""
        try:
            await self.conn._write(rest)
        finally:
            self.lock.release()

    async def receive(self) -> Message:
        if not self.connect_sent:
            self.connect_sent = True
            return {"type": "websocket.connect"}
        if self.state != "connected" and self.disconnect_code is None:
            self.disconnect_code = CloseReason.NORMAL_CLOSURE
        if self.disconnect_code is not None:
            return {"type": "websocket.disconnect", "code": self.disconnect_code}
        message = await self._next_message()
        if message is None:
            return {"type": "websocket.disconnect", "code": self.disconnect_code}
        return message

    async def _next_message(self) -> Message | None:
        """The next complete message, or None once the connection ended (`disconnect_code`)."""
        assert self.ws is not None
        conn = self.conn
        limit = conn.server.config.websocket_max_message_size
        while True:
            while self.pending:
                event = self.pending.popleft()
                if isinstance(event, ws_events.Message):
                    self.message_size += len(event.data)
                    if self.message_size > limit:
                        self.message, self.message_size = [], 0
                        self.state = "closed"
                        self.disconnect_code = CloseReason.MESSAGE_TOO_BIG
                        await self._send_event(
                            ws_events.CloseConnection(code=CloseReason.MESSAGE_TOO_BIG)
                        )
                        return None
                    self.message.append(event.data)
                    if event.message_finished:
                        parts, self.message, self.message_size = self.message, [], 0
                        if isinstance(event, ws_events.TextMessage):
                            text = "".join(parts)  # type: ignore[arg-type]
                            return {"type": "websocket.receive", "bytes": None, "text": text}
                        data = b"".join(parts)  # type: ignore[arg-type]
                        return {"type": "websocket.receive", "bytes": data, "text": None}
                elif isinstance(event, ws_events.Ping):
                    await self._send_event(event.response())
                elif isinstance(event, ws_events.CloseConnection):
                    if self.ws.state is ConnectionState.REMOTE_CLOSING:
                        await self._send_event(event.response())
                    self.state = "closed"
                    self.disconnect_code = event.code
                    return None
            if conn.gone:
                self.disconnect_code = CloseReason.ABNORMAL_CLOSURE
                self.state = "closed"
                return None
            data = await conn._recv(wait_first=True)
            if not data:
                conn.gone = True
                self.ws.receive_data(None)
            else:
                self.ws.receive_data(data)
            self.pending.extend(self.ws.events())

    async def send(self, message: Message) -> None:
        kind = message["type"]
        conn = self.conn
        if kind == "websocket.accept" and self.state == "handshake":
            await self._accept(message.get("subprotocol"), message.get("headers", ()))
        elif kind == "websocket.http.response.start" and self.state == "handshake":
            self.response = (int(message["status"]), list(message.get("headers", ())))
            self.state = "response"
        elif kind == "websocket.http.response.body" and self.state == "response":
            assert self.response is not None
            status, headers = self.response
            out = []
            if self.response is not None and not self.conn.started:
                conn.started = True
                headers.append((b"date", _Date.now()))
                headers.append((b"connection", b"close"))
                out.append(self.h11.send(h11.Response(status_code=status, headers=headers)))
            body = message.get("body", b"")
            if body:
                out.append(self.h11.send(h11.Data(data=body)))
            if not message.get("more_body", False):
                out.append(self.h11.send(h11.EndOfMessage()))
                self.state = "denied"
            await conn._write(b"".join(chunk for chunk in out if chunk))
        elif kind == "websocket.send" and self.state == "connected":
            data = message.get("bytes")
            if data is not None:
                await self._send_binary(data if isinstance(data, bytes) else bytes(data))
            else:
                await self._send_event(ws_events.TextMessage(data=str(message["text"])))
        elif kind == "websocket.close" and self.state == "handshake":
            self.state = "denied"
            await conn._refuse(403)
        elif kind == "websocket.close":
            if self.state == "connected":
                self.state = "closed"
                code = int(message.get("code") or CloseReason.NORMAL_CLOSURE)
                await self._send_event(
                    ws_events.CloseConnection(code=code, reason=message.get("reason") or None)
                )
        elif self.state in ("closed",) and kind == "websocket.send":
            return
        else:
            raise RuntimeError(f"unexpected ASGI message {kind!r} in WebSocket state {self.state}")

    async def _accept(self, subprotocol: str | None, extra: Any) -> None:
        conn = self.conn
        key = _get(self.request.headers, b"sec-websocket-key") or b""
        headers = [
            (b"upgrade", b"websocket"),
            (b"connection", b"Upgrade"),
            (b"sec-websocket-accept", generate_accept_token(key)),
        ]
        if subprotocol is not None:
            if subprotocol not in self.scope["subprotocols"]:
                raise RuntimeError(f"subprotocol {subprotocol!r} was not offered")
            headers.append((b"sec-websocket-protocol", subprotocol.encode("ascii")))
        headers.extend((bytes(k), bytes(v)) for k, v in extra)
        head = self.h11.send(h11.InformationalResponse(status_code=101, headers=headers)) or b""
        self.state = "connected"
        self.ws = wsproto.connection.Connection(wsproto.ConnectionType.SERVER)
        trailing, closed = conn.reader.trailing_data
        if trailing:
            self.ws.receive_data(trailing)
            self.pending.extend(self.ws.events())
        if closed:
            self.ws.receive_data(None)
            self.pending.extend(self.ws.events())
        await self._write(head)
