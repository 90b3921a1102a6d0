"""One outbound WebSocket from the connector to a relay: dial, mutual authentication, frame loop.

A `TunnelLink` is one connection (the HA supervisor in connector/runtime.py keeps several):

1. Dial ``{relay}/v1/tunnels/{tunnel}/connect`` with subprotocol ``edgetds.v1`` and
   ``Authorization: Bearer <connector token>`` (a fresh EdDSA token and nonce per dial).
2. Verify the relay's HELLO against the pinned relay keys (signature, our nonce, our tunnel and
   connector id). On any mismatch: log why, close with 4001 and serve nothing (`RelayRejected`).
3. Send READY, then serve: every QUERY becomes a task running the `QueryHandler`; CANCEL sets the
   stream's `CancelToken`; CREDIT wakes streams waiting for send window; DRAIN from the relay asks
   the supervisor for a replacement connection while in-flight streams finish here; GOAWAY ends.

One reader task per connection; every write happens under one lock (frames leave in the order
the sans-I/O `protocol.Connection` queued them). Liveness: WebSocket pings every
``ping_interval_s``; no pong within ``dead_peer_after_s - ping_interval_s`` fails the connection,
and a closing handshake is bounded too, so a black-holed peer is declared dead in bounded time.
The pings are this module's own (`TunnelLink._keepalive`), not websockets' keepalive: on trio,
websockets 17.4's keepalive task ends for good (it logs "keepalive ping failed", ValueError) once
one pong takes longer than the ping interval, and the connection would then never notice that
its peer went silent.
"""

from __future__ import annotations

import logging
import secrets
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol, assert_never

import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.frames import Frame, Opcode
from websockets.protocol import OPEN, Event
from websockets.trio.client import ClientConnection, connect

from connector._free import Free
from connector._metrics import NO_METRICS, Metrics
from connector.causes import describe_http_refusal, describe_os_error, describe_tls_error
from connector.config import TunnelConfig
from connector.results import CancelToken, QueryFailed, SinkClosed
from protocol import (
    CHECKPOINT_CAP,
    DEFAULT_STATEMENT_BYTES,
    SUBPROTOCOL,
    AuthError,
    CloseCode,
    Connection,
    ErrorCode,
    Limits,
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
    Role,
    error_record,
    events,
    make_connector_token,
    verify_hello,
)

__all__ = [
    "DialFailed",
    "LinkEnd",
    "LinkStats",
    "QueryHandler",
    "RelayRejected",
    "StreamSink",
    "TunnelLink",
    "proxy_option",
]

log = logging.getLogger("edgetds.connector.tunnel")


class DialFailed(Exception):
    """The WebSocket could not be opened; the message names the failing step."""

    def __init__(self, message: str, *, auth: bool = False) -> None:
        super().__init__(message)
        self.auth = auth


class RelayRejected(Exception):
    """The relay's HELLO did not verify: this connector serves nothing on that connection."""


@dataclass(frozen=True)
class LinkEnd:
    """How a connection ended (for the supervisor's backoff decision)."""

    reason: str  # "goaway" | "drained" | "closed" | "lost" | "local"
    uptime_s: float
    served: int
    #: the relay asked us to go elsewhere (DRAIN/GOAWAY): reconnect at once
    relay_requested: bool = False


@dataclass(frozen=True)
class LinkStats:
    url: str
    session_id: str | None
    open_streams: int
    served: int
    rtt_ms: float | None
    ready: bool
    draining: bool


class QueryHandler(Protocol):
    """Serves one QUERY and ends the stream with `StreamSink.finish` (else it is ended for it)."""

    async def __call__(
        self, link: TunnelLink, query: events.Query, sink: StreamSink, cancel: CancelToken
    ) -> None: ...


class StreamSink:
    """The connector's sending side of one stream; respects the send window (CREDIT).

    ``flush=False`` on `send_columns`/`send_rows` (the result is complete; the terminal line
    follows at once): the frame is held here, if it fits the stream's window as one frame, and
    `finish` writes the held frames and the terminal line as one WebSocket message (held in
    the sink, not in the link's outbox, so another stream's write cannot split them)."""

    def __init__(self, link: TunnelLink, stream_id: int) -> None:
        self.link = link
        self.stream_id = stream_id
        self.finished = False
        self.bytes_sent = 0
        self._held: list[events.Event] = []
        self._held_bytes = 0  # flow-controlled bytes among them (window not yet taken)

    def _open(self) -> bool:
        return self.link.conn.is_open(self.stream_id) and not self.link.closed

    def _hold(self, event: events.Columns | events.Rows) -> bool:
        """Keep ``event`` for `finish` if the window takes it on top of what is held."""
        size = len(event.data)
        if size > self.link.max_payload or not self._open():
            return False
        if self.link.conn.send_window(self.stream_id) < self._held_bytes + size:
            return False
        self._held.append(event)
        self._held_bytes += size
        self.bytes_sent += size
        return True

    def hold(self, columns: bytes | None, rows: bytes) -> bool:
        """`connector.results.Sink.hold`: both are held (as `_hold` holds each) when both fit
        the window and a frame, else neither."""
        size = len(rows)
        max_payload = self.link.max_payload
        if size > max_payload or not self._open():
            return False
        if columns is not None:
            if len(columns) > max_payload:
                return False
            size += len(columns)
        if self.link.conn.send_window(self.stream_id) < self._held_bytes + size:
            return False
        if columns is not None:
            self._held.append(events.Columns(self.stream_id, columns))
        if rows:
            self._held.append(events.Rows(self.stream_id, rows))
        self._held_bytes += size
        self.bytes_sent += size
        return True

    async def _release(self) -> None:
        """Write what is held (before anything else of this stream)."""
        if self._held:
            held, self._held, self._held_bytes = self._held, [], 0
            await self._send(*held)

    async def _wait_window(self, need: int) -> int:
        link = self.link
        while True:
            if not self._open():
                raise SinkClosed(f"stream {self.stream_id} is closed")
            window = link.conn.send_window(self.stream_id)
            if window >= need:
                return window
            link.ops.backpressure_stall()
            await link.credit_changed()

    async def _send(self, *batch: events.Event) -> None:
        try:
            await self.link.send(*batch)
        except (LocalProtocolError, ConnectionClosed, trio.BrokenResourceError) as exc:
            raise SinkClosed(str(exc)) from None

    async def send_columns(self, data: bytes, *, flush: bool = True) -> None:
        if len(data) > self.link.max_payload:
            raise QueryFailed(
                ErrorCode.LIMITS_RESULT_TOO_LARGE,
                f"the column list ({len(data)} bytes) exceeds the largest frame",
            )
        if not flush and self._hold(events.Columns(self.stream_id, data)):
            return
        await self._release()
        await self._wait_window(len(data))
        await self._send(events.Columns(self.stream_id, data))
        self.bytes_sent += len(data)

    async def send_rows(self, data: bytes, *, flush: bool = True) -> None:
        """Send whole NDJSON lines in frames that fit the window and the peer's max frame."""
        # rows that fit go with a held COLUMNS (one message), or are held for finish
        if data and (self._held or not flush) and self._hold(events.Rows(self.stream_id, data)):
            if flush:
                await self._release()
            return
        await self._release()
        pos, end = 0, len(data)
        while pos < end:
            window = await self._wait_window(1)
            limit = min(window, self.link.max_payload)
            cut = data.rfind(b"\n", pos, pos + limit) + 1
            if cut <= pos:
                line_end = data.index(b"\n", pos) + 1
                size = line_end - pos
                if size > self.link.max_payload:
                    raise QueryFailed(
                        ErrorCode.LIMITS_RESULT_TOO_LARGE,
                        f"a row of {size} bytes exceeds the largest frame "
                        f"({self.link.max_payload} bytes)",
                    )
                await self._wait_window(size)
                continue
            await self._send(events.Rows(self.stream_id, data[pos:cut]))
            self.bytes_sent += cut - pos
            pos = cut

    async def finish(self, line: bytes, *, error: bool) -> None:
        """End the stream with a DONE or ERROR line (never needs credit), after what is held."""
        if self.finished:
            return
        self.finished = True
        event = events.Error if error else events.Done
        held, self._held, self._held_bytes = self._held, [], 0
        try:
            await self.link.send(*held, event(self.stream_id, line))
        except (LocalProtocolError, ConnectionClosed, trio.BrokenResourceError):
            log.info("stream ended after its connection", extra={"stream": self.stream_id})


class _WebSocket(ClientConnection):
    """websockets' trio client connection, with fewer Trio schedule points per message.

    websockets 17.4 writes under ``async with self.send_lock`` (a trio.Lock: a schedule point
    even when free), and its reader task does so after every message it read, even with nothing
    to write. Here the lock is a `Free` one, set before any task of the connection runs (it is
    created with the connection: ``connect(create_connection=...)``), and a write with nothing
    queued returns at once: a small query's answer costs one round of the run loop less to send
    and its QUERY one less to receive.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # recv_events, the only other user of the lock, is started by the constructor but has not
        # run yet: nothing holds the lock being replaced
        self.send_lock = Free(self.send_lock)  # type: ignore[assignment]
        #: the socket of a plain TCP connection, written at once by `send_now`
        self._raw_socket: socket.socket | None = None
        if isinstance(self.stream, trio.SocketStream):
            raw = getattr(self.stream.socket, "_sock", None)
            self._raw_socket = raw if isinstance(raw, socket.socket) else None
        #: takes a whole binary message in websockets' reader task, as it arrives; False: the
        #: message goes to `recv` as usual (see `TunnelLink._receive_now`)
        self.on_message: Callable[[bytes], bool] | None = None
        #: messages handed to `recv` (counted from their first frame) that the link's reader
        #: has not finished handling: while there are any, none is taken by ``on_message``
        self.queued = 0

    async def send_data(self) -> None:
        if self.protocol.writes:  # what the sans-I/O protocol queued (data, or b"" for EOF)
            await super().send_data()

    def send_now(self, data: bytes) -> Awaitable[None] | None:
        """Begin ``send(data)`` at once: None when its frame went out whole without waiting,
        else what the caller must await (in this task, before anything else writes) to send it
        or what is left of it.

        On a plain TCP connection that is open, with no write in progress, the frame is queued
        as `send` queues it and written with one non-blocking ``send`` on the socket: the
        system call trio's ``send_all`` makes first, without its schedule point after the
        write. What the socket did not take (all of it when the call failed) goes back to the
        front of the protocol's queue, and the awaitable writes the queue as `send` does
        (``send_context``: its waits, and its handling of a failed write, which closes the
        connection). Anything else (TLS, not open, a write or fragmented message in progress)
        is `send` itself.
        """
        raw = self._raw_socket
        if (
            raw is None
            or self.protocol.state is not OPEN
            or self.send_in_progress is not None
            or self.send_lock.locked()
        ):
            return self.send(data)
        protocol = self.protocol
        protocol.send_binary(data)
        writes = protocol.data_to_send()
        frame = writes[0] if len(writes) == 1 else b"".join(writes)
        try:
            sent = raw.send(frame)
        except OSError:  # BlockingIOError: the socket is full; else the write below fails too
            sent = 0
        if sent == len(frame):
            return None
        protocol.writes.insert(0, frame[sent:])
        return self._send_queued()

    async def _send_queued(self) -> None:
        """Write what the protocol has queued, as `send` does after queueing its frame."""
        async with self.send_context():
            pass

    def process_event(self, event: Event) -> None:
        if isinstance(event, Frame):  # else the handshake's response
            opcode = event.opcode
            if opcode is Opcode.BINARY and event.fin and not self.queued:
                on_message = self.on_message
                if on_message is not None and on_message(bytes(event.data)):
                    return
            if opcode is Opcode.BINARY or opcode is Opcode.TEXT:
                self.queued += 1
        super().process_event(event)


#: the events `TunnelLink._handle_now` handles
_HANDLED_NOW = frozenset({events.Query, events.Cancel, events.Credit, events.Pong})


def proxy_option(setting: str) -> str | Literal[True] | None:
    """websockets' proxy argument: True = from the environment, None = direct, or a URL."""
    if setting == "auto":
        return True
    if setting == "none":
        return None
    return setting


def _ssl_context(cfg: TunnelConfig) -> ssl.SSLContext | None:
    if not cfg.relay_cafile:
        return None
    return ssl.create_default_context(cafile=cfg.relay_cafile)


class TunnelLink:
    """One WebSocket connection to a relay. Create, then ``await link.run()``."""

    def __init__(
        self,
        cfg: TunnelConfig,
        url: str,
        *,
        private_key: Ed25519PrivateKey,
        relay_keys: Mapping[str, Ed25519PublicKey],
        handler: QueryHandler,
        on_ready: Callable[[TunnelLink], None] | None = None,
        on_relay_drain: Callable[[TunnelLink], None] | None = None,
        limits: Limits | None = None,
        max_statement_bytes: int = DEFAULT_STATEMENT_BYTES,
        clock: Callable[[], float] = time.time,
        caps: tuple[str, ...] = (),
    ) -> None:
        self.cfg = cfg
        #: capabilities announced in READY (``audit.checkpoint`` when there is an audit log)
        self.caps = caps
        self.base_url = url
        self.url = f"{url}/v1/tunnels/{cfg.tunnel}/connect"
        self._key = private_key
        self._relay_keys = relay_keys
        self._handler = handler
        self._on_ready = on_ready
        self._on_relay_drain = on_relay_drain
        self._clock = clock
        max_streams = min(128, cfg.max_concurrent_queries)
        self.limits = limits or Limits(max_streams=max_streams)
        #: announced in READY: the relay refuses longer ad-hoc SQL (the largest of any role's)
        self.max_statement_bytes = max_statement_bytes
        self.conn = Connection(Role.CONNECTOR, limits=self.limits)
        self.ws: ClientConnection | None = None
        self._send_lock = Free(trio.Lock())
        self._credit = trio.Event()
        self._tokens: dict[int, CancelToken] = {}
        #: set when the last open stream ends; made only while `settle` waits for that
        self._idle: trio.Event | None = None
        self.closed = False
        self.ready = False
        self.draining = False
        self._pongs: dict[bytes, trio.Event] = {}
        self.relay_draining = False
        self.session_id: str | None = None
        #: The pinned relay key that signed this connection's HELLO (a reload that unpins it
        #: retires the connection).
        self.relay_key_id: str | None = None
        self.served = 0
        self._started = 0.0
        self._end_reason = "closed"
        self._goaway_received = False
        self._rejected: RelayRejected | None = None
        #: metrics sink (connector/ops.py `Ops`), set by the runtime
        self.ops: Metrics = NO_METRICS
        #: where the reader starts query tasks (set when it starts serving)
        self._nursery: trio.Nursery | None = None
        #: what `_receive_now` parsed of the message it handed on to the reader
        self._parsed: list[events.AnyEvent] | ProtocolError | None = None

    # -- what the streams use ---------------------------------------------------------------

    @property
    def max_payload(self) -> int:
        """Largest COLUMNS/ROWS payload: the peer's max frame, and never above a stream window."""
        return self.conn.max_frame

    async def credit_changed(self) -> None:
        await self._credit.wait()

    def _wake_credit(self) -> None:
        self._credit.set()
        self._credit = trio.Event()

    async def send(self, *batch: events.Event) -> None:
        """Queue the events and write everything queued, in order, under the write lock (the
        events of one call go out in one WebSocket message when they fit 256 KiB)."""
        async with self._send_lock:
            queued = 0
            try:
                for event in batch:
                    self.conn.send(event)
                    queued += 1
            finally:
                self.ops.frame_sent(0, frames=queued)
            await self._flush_locked()

    async def send_checkpoint(self, fields: Mapping[str, Any]) -> bool:
        """Send a signed audit checkpoint if this connection is up and negotiated the
        ``audit.checkpoint`` capability; False when it was not sent."""
        if not self.ready or self.closed or CHECKPOINT_CAP not in self.conn.caps:
            return False
        try:
            await self.send(events.Checkpoint(fields=dict(fields)))
        except (LocalProtocolError, ConnectionClosed, trio.BrokenResourceError) as exc:
            log.debug("checkpoint not sent: %s", exc, extra={"relay": self.base_url})
            return False
        return True

    async def flush(self) -> None:
        async with self._send_lock:
            await self._flush_locked()

    async def _flush_locked(self) -> None:
        ws = self.ws
        if ws is None:
            return
        while True:
            data = self.conn.data_to_send(256 * 1024)
            if not data:
                return
            # never cancel half-way through a message (the frame sequence would be broken);
            # a peer that stops reading is bounded by the dead-peer deadline instead. A message
            # the socket takes whole at once is not waited for: nothing a cancel could cut.
            rest = ws.send_now(data) if isinstance(ws, _WebSocket) else ws.send(data)
            if rest is not None:
                with trio.CancelScope(shield=True):
                    await rest
            self.ops.frame_sent(len(data), frames=0)

    def statistics(self) -> LinkStats:
        latency = self.ws.latency if self.ws is not None else None
        return LinkStats(
            url=self.base_url,
            session_id=self.session_id,
            open_streams=len(self._tokens),
            served=self.served,
            rtt_ms=round(latency * 1000, 2) if latency else None,
            ready=self.ready,
            draining=self.draining or self.relay_draining,
        )

    # -- lifecycle ------------------------------------------------------------------------------

    def _connect(self, nonce: str) -> connect:
        token = make_connector_token(
            self._key,
            connector_id=self.cfg.connector_id,
            tunnel=self.cfg.tunnel,
            now=int(self._clock()),
            nonce=nonce,
        )
        return connect(
            self.url,
            subprotocols=[SUBPROTOCOL],  # type: ignore[list-item]
            additional_headers={"Authorization": f"Bearer {token}"},
            ssl=_ssl_context(self.cfg),
            compression=None,
            open_timeout=self.cfg.open_timeout_s,
            ping_interval=None,  # _keepalive pings
            ping_timeout=None,
            close_timeout=min(5.0, self.cfg.dead_peer_after_s),
            max_size=max(4 * self.limits.max_frame, 4 * 1024 * 1024),
            proxy=proxy_option(self.cfg.proxy),
            create_connection=_WebSocket,
        )

    def _dial_failed(self, exc: BaseException) -> DialFailed:
        """Name the step that failed: TCP, TLS, HTTP status (auth), WebSocket handshake."""
        if isinstance(exc, InvalidStatus):
            status = exc.response.status_code
            refusal = describe_http_refusal(status, bytes(exc.response.body or b""))
            return DialFailed(
                f"relay {self.base_url} refused the connection: {refusal}",
                auth=status in (401, 403),
            )
        if isinstance(exc, InvalidHandshake):
            return DialFailed(f"WebSocket handshake with {self.base_url} failed: {exc}")
        if isinstance(exc, ssl.SSLError | trio.BrokenResourceError):
            return DialFailed(f"TLS with {self.base_url} failed: {describe_tls_error(exc)}")
        if isinstance(exc, OSError) and not (isinstance(exc, TimeoutError) and not exc.strerror):
            return DialFailed(f"cannot reach relay {self.base_url}: {describe_os_error(exc)}")
        return DialFailed(
            f"cannot reach relay {self.base_url}: no answer within {self.cfg.open_timeout_s:g} s"
        )

    async def run(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> LinkEnd:
        """Dial, authenticate, serve until the connection ends. `task_status.started()` after
        READY was sent.

        Raises:
            DialFailed: the connection could not be opened (the step is named).
            RelayRejected: the relay's HELLO did not verify.
        """
        nonce = secrets.token_urlsafe(16)
        opened = False
        try:
            async with self._connect(nonce) as ws:
                opened = True
                self.ws = ws
                self._started = trio.current_time()
                if ws.subprotocol != SUBPROTOCOL:
                    raise DialFailed(
                        f"relay {self.base_url} did not accept subprotocol {SUBPROTOCOL}"
                    )
                try:
                    async with trio.open_nursery() as nursery:
                        keepalive = trio.CancelScope()
                        nursery.start_soon(self._keepalive, ws, keepalive)
                        try:
                            await self._serve(nursery, nonce, task_status)
                            # the reader finished; in-flight queries end (sinks fail fast if lost)
                        finally:
                            keepalive.cancel()
                finally:
                    self.closed = True
                    for waiter in self._pongs.values():  # nothing more comes: stop waiting
                        waiter.set()
                    if self.ready:
                        self.ops.connection_down(self.base_url, self._end_reason)
                    self._wake_credit()
                    with (
                        trio.CancelScope(shield=True),
                        trio.move_on_after(self.cfg.dead_peer_after_s),
                    ):
                        await ws.aclose()
        except (
            InvalidHandshake,
            ssl.SSLError,
            trio.BrokenResourceError,  # a TLS handshake that failed, from trio's SSLStream
            OSError,
            trio.TooSlowError,
            TimeoutError,
        ) as exc:
            if opened:
                raise
            raise self._dial_failed(exc) from None
        if self._rejected is not None:
            raise self._rejected
        return LinkEnd(
            reason=self._end_reason,
            uptime_s=trio.current_time() - self._started,
            served=self.served,
            relay_requested=self.relay_draining or self._goaway_received,
        )

    async def _keepalive(self, ws: ClientConnection, scope: trio.CancelScope) -> None:
        """A WebSocket ping ``ping_interval_s`` after the last pong; a pong that does not come
        within ``dead_peer_after_s - ping_interval_s`` fails the connection (close 1011, its
        closing handshake bounded by the close timeout), so the reader sees it closed."""
        interval = self.cfg.ping_interval_s
        timeout = max(0.05, self.cfg.dead_peer_after_s - interval)
        with scope:
            while True:
                await trio.sleep(interval)
                try:
                    pong = await ws.ping(ack_on_close=True)
                except ConnectionClosed:
                    return
                with trio.move_on_after(timeout):
                    await pong.wait()
                    continue
                log.info(
                    "no pong within %.1f s: the relay connection is dead",
                    timeout,
                    extra={"relay": self.base_url},
                )
                await ws.aclose(CloseCode.INTERNAL_ERROR, "keepalive ping timeout")
                return

    async def _serve(
        self, nursery: trio.Nursery, nonce: str, task_status: trio.TaskStatus[None]
    ) -> None:
        ws = self.ws
        assert isinstance(ws, _WebSocket)
        self._nursery = nursery
        ws.on_message = self._receive_now
        try:
            while True:
                message = await ws.recv()
                if isinstance(message, str):
                    await ws.aclose(CloseCode.UNSUPPORTED_DATA, "edgetds/1 is binary-only")
                    self._end_reason = "lost"
                    return
                # what `_receive_now` already parsed of this message, if it did
                parsed, self._parsed = self._parsed, None
                try:
                    if parsed is None:
                        self.conn.receive_data(message)
                    elif isinstance(parsed, ProtocolError):
                        raise parsed
                except RemoteProtocolError as exc:
                    log.warning("relay broke edgetds/1: %s", exc)
                    await self.flush()  # the GOAWAY the protocol queued
                    await ws.aclose(exc.close_code, str(exc)[:120])
                    self._end_reason = "lost"
                    return
                received = self.conn.events() if parsed is None else parsed
                assert isinstance(received, list)
                self.ops.frame_received(len(message), frames=len(received))
                for event in received:
                    if await self._handle(event, nursery, nonce, task_status):
                        return
                await self.flush()
                ws.queued -= 1
        except ConnectionClosed:
            pass
        finally:
            ws.on_message = None
        if self._end_reason == "closed":
            self._end_reason = "goaway" if self._goaway_received else "lost"
        try:
            self.conn.receive_eof()
        except LocalProtocolError:
            pass
        self.conn.events()
        for token in self._tokens.values():
            token.cancel("connection lost")

    async def _handle(
        self,
        event: events.AnyEvent,
        nursery: trio.Nursery,
        nonce: str,
        task_status: trio.TaskStatus[None],
    ) -> bool:
        """Handle one event; True ends the connection."""
        if self._handle_now(event):
            return False
        match event:
            case events.Hello():
                if self.closed:
                    # close() (shutdown) raced the handshake: GOAWAY is already sent, serve nothing
                    return True
                try:
                    verify_hello(
                        event,
                        self._relay_keys,
                        nonce=nonce,
                        tunnel=self.cfg.tunnel,
                        connector_id=self.cfg.connector_id,
                    )
                except AuthError as exc:
                    log.error(
                        "refusing to serve relay %s: %s (check [connector] relay_public_keys)",
                        self.base_url,
                        exc,
                    )
                    assert self.ws is not None
                    await self.ws.aclose(CloseCode.AUTH_FAILED, "relay HELLO rejected")
                    self._rejected = RelayRejected(f"relay {self.base_url}: {exc}")
                    return True
                self.session_id = event.session_id
                self.relay_key_id = event.relay_key_id
                await self.send(
                    events.Ready(
                        connector_id=self.cfg.connector_id,
                        max_streams=self.limits.max_streams,
                        caps=self.caps,
                        max_frame=self.limits.max_frame,
                        max_statement_bytes=self.max_statement_bytes,
                    )
                )
                self.ready = True
                self.ops.connection_up(self.base_url)
                log.info(
                    "tunnel ready",
                    extra={"relay": self.base_url, "session": self.session_id},
                )
                task_status.started()
                if self._on_ready is not None:
                    self._on_ready(self)
            case events.Query() | events.Cancel() | events.Credit() | events.Pong():
                pass  # handled by _handle_now
            case events.Drain():
                self.relay_draining = True
                log.info(
                    "relay is draining; opening a replacement connection",
                    extra={"relay": self.base_url},
                )
                if self._on_relay_drain is not None:
                    self._on_relay_drain(self)
                if not self._tokens:
                    await self.close("relay drained")
                    return True
            case events.GoAway():
                self._goaway_received = True
                log.info("relay sent GOAWAY: %s", event.code, extra={"relay": self.base_url})
            case events.Ping() | events.ConnectionLost():
                pass  # the protocol queues the PONG; the reader handles the end
            case (
                events.Ready()
                | events.Columns()
                | events.Rows()
                | events.Done()
                | events.Error()
                | events.Checkpoint()
            ):
                pass  # connector -> relay frames: the protocol refuses them from a relay
            case _:
                assert_never(event)
        return False

    def _handle_now(self, event: events.AnyEvent) -> bool:
        """Handle ``event`` if it needs no waiting (QUERY, CANCEL, CREDIT, PONG): True when it
        was handled."""
        match event:
            case events.Query():
                token = CancelToken()
                self._tokens[event.stream_id] = token
                assert self._nursery is not None
                self._nursery.start_soon(self._serve_query, event, token)
            case events.Cancel():
                target = self._tokens.get(event.stream_id)
                if target is not None:
                    target.cancel(event.reason or "cancelled by the relay")
            case events.Credit():
                self._wake_credit()
            case events.Pong():
                waiter = self._pongs.get(event.data)
                if waiter is not None:
                    waiter.set()
            case _:
                return False
        return True

    def _receive_now(self, message: bytes) -> bool:
        """A binary message, as websockets' reader task received it (`_WebSocket.on_message`):
        once the link is ready, parse it here and, when all its events need no waiting, handle
        them here: no hand-over to the link's reader task. False hands the message on to that
        task, with what was parsed of it (events, or the protocol error) in ``_parsed``."""
        if not self.ready or self.closed:
            return False
        try:
            self.conn.receive_data(message)
        except ProtocolError as exc:
            self._parsed = exc  # the reader answers it (GOAWAY, close) as for any message
            return False
        received = self.conn.events()
        if not all(type(event) in _HANDLED_NOW for event in received):
            self._parsed = received
            return False
        self.ops.frame_received(len(message), frames=len(received))
        for event in received:
            self._handle_now(event)
        return True

    async def _serve_query(self, query: events.Query, token: CancelToken) -> None:
        sink = StreamSink(self, query.stream_id)
        try:
            await self._handler(self, query, sink, token)
        except Exception:  # never let one query take the connection down
            log.exception("query handler failed", extra={"query_id": query.query_id})
        finally:
            if not sink.finished:
                with trio.CancelScope(shield=True):
                    await sink.finish(
                        error_record(
                            ErrorCode.INTERNAL,
                            "the query ended without a result (the cause is in the connector's "
                            f"log under query_id {query.query_id})",
                            query_id=query.query_id,
                        ),
                        error=True,
                    )
            self.served += 1
            del self._tokens[query.stream_id]
            if not self._tokens:
                if self._idle is not None:
                    self._idle.set()
                    self._idle = None
                if self.relay_draining and not self.closed:
                    with trio.CancelScope(shield=True):
                        await self.close("relay drained")

    # -- drain and close --------------------------------------------------------------------

    async def drain(self, reason: str = "connector shutting down") -> None:
        """Tell the relay to send no new queries (DRAIN); in-flight ones continue, and a QUERY
        the relay sent before it read the DRAIN is still served (SPEC 6.4)."""
        if self.draining or self.closed or not self.ready:
            self.draining = True
            return
        self.draining = True
        try:
            await self.send(events.Drain(reason))
        except (LocalProtocolError, ConnectionClosed, trio.BrokenResourceError):
            pass

    async def settle(self) -> None:
        """After `drain`: return once no QUERY is on the way any more and none is in flight.

        The relay answers a PING after the frames sent before it, so its PONG means it has read
        our DRAIN: every QUERY it sent before has arrived (SPEC 6.4). Then wait for idle.
        """
        await self._relay_caught_up()
        if self._tokens:
            if self._idle is None:
                self._idle = trio.Event()
            await self._idle.wait()
        else:
            await trio.lowlevel.checkpoint()

    async def _relay_caught_up(self) -> None:
        if not self.ready or self.closed:
            return
        payload = secrets.token_bytes(8)
        answered = self._pongs[payload] = trio.Event()
        try:
            await self.send(events.Ping(payload))
        except (LocalProtocolError, ConnectionClosed, trio.BrokenResourceError):
            return
        try:
            await answered.wait()
        finally:
            self._pongs.pop(payload, None)

    def request_replacement(self) -> None:
        """Ask this connection's slot to dial a new one now (as a relay DRAIN does); this one
        keeps serving until it is drained and closed."""
        if self._on_relay_drain is not None:
            self._on_relay_drain(self)

    async def close(
        self, message: str = "bye", *, code: ErrorCode = ErrorCode.CONNECTOR_DRAINING
    ) -> None:
        """Send GOAWAY (if possible) and close the WebSocket."""
        if self.closed:
            return
        self.closed = True
        self._end_reason = "drained" if self.draining or self.relay_draining else "local"
        self._wake_credit()
        for token in self._tokens.values():
            token.cancel("connection closing")
        try:
            await self.send(events.GoAway(code, message, self.conn.last_stream_id))
        except (LocalProtocolError, ConnectionClosed, trio.BrokenResourceError):
            pass
        if self.ws is not None:
            with trio.move_on_after(self.cfg.dead_peer_after_s):
                await self.ws.aclose(CloseCode.GOING_AWAY, message[:120])
