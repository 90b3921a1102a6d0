"""One connector WebSocket, from the relay's side: handshake, reader, writer, keepalive, streams.

Strategy:

1. The WebSocket is already accepted (the token was checked before the upgrade, in `app.py`).
   `ConnectorSession.handshake()` sends the signed HELLO and waits (bounded) for READY.
2. `run()` then runs three tasks until the socket ends: the *reader* (the only task that reads,
   feeding `protocol.Connection` and routing each stream event to that stream's channel), the
   *writer* (it sends `data_to_send()` whenever woken, so an HTTP handler never waits for a
   socket that is being written to), and the *keepalive* (PING every
   interval; a connection silent for longer than `dead_after_s` is declared dead).
3. HTTP handlers open streams with `open_stream()` (synchronous: the capacity check and the QUERY
   happen with no await in between) and read events from the returned `RelayStream`. A query's
   handler sends its QUERY itself (`send_queued`) when no write is in progress: one write at a
   time, whichever task makes it, keeps the frames in order without a task switch per query.
4. When the socket ends for any reason, `Connection.receive_eof()` synthesizes a `transport.lost`
   ERROR for every open stream, so every HTTP response still ends with a terminal record.

A stream channel is unbounded, but the connector cannot send more than the credit the relay
granted, and credit is only re-granted once bytes were handed to the HTTP client: buffering per
stream is bounded by the stream window, per connection by the connection window.
"""

from __future__ import annotations

import logging
import math
import os
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, assert_never

import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protocol import (
    CHECKPOINT_CAP,
    HEADER_SIZE,
    SESSION_CAP,
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
    sign_hello,
)
from relay.config import Limits as RelayLimits
from relay.limits import RateLimiter
from relay.logs import log_event

__all__ = ["ConnectorSession", "HandshakeFailed", "RelayStream", "StreamEvents", "WebSocketIO"]

#: PINGs a connector may send: a burst, then a sustained rate per second (keepalives need ~1/15 s).
PING_BURST = 20
PING_RATE = 5.0


class HandshakeFailed(Exception):
    """The connector did not complete the HELLO/READY exchange."""


class WebSocketIO:
    """The ASGI WebSocket calls the session needs, with ASGI's message dicts kept in one place.

    ``send_now``: the server's `asgiapp.server.SEND_NOW` extension, when it has one."""

    #: the server's SEND_NOW, or None
    _send_now: Callable[[bytes], Awaitable[None] | None] | None = None

    def __init__(
        self,
        receive: Callable[[], Any],
        send: Callable[[Any], Any],
        send_now: Callable[[bytes], Awaitable[None] | None] | None = None,
    ) -> None:
        self._receive = receive
        self._send = send
        self._send_now = send_now
        self.closed = False

    async def receive(self) -> bytes | None:
        """The next binary message; None when the socket ended.

        Raises:
            RemoteProtocolError: a text message arrived (edgetds/1 is binary-only).
        """
        if self.closed:
            return None
        message = await self._receive()
        if message["type"] == "websocket.disconnect":
            self.closed = True
            return None
        data = message.get("bytes")
        if data is None:
            raise RemoteProtocolError(
                "text WebSocket message; edgetds/1 is binary-only",
                close_code=CloseCode.UNSUPPORTED_DATA,
            )
        return bytes(data)

    async def send(self, data: bytes) -> None:
        await self._send({"type": "websocket.send", "bytes": data})

    def send_now(self, data: bytes) -> Awaitable[None] | None:
        """Begin `send` at once: None when the message went out whole without waiting (or was
        dropped), else what to await (in this task) to send it or its rest."""
        if self._send_now is None:
            return self.send(data)
        return self._send_now(data)

    async def close(self, code: int, reason: str = "") -> None:
        if not self.closed:
            self.closed = True
            await self._send({"type": "websocket.close", "code": int(code), "reason": reason[:120]})


class StreamEvents:
    """One stream's events in arrival order: the session puts them, its HTTP handler takes them.

    What ``trio.open_memory_channel(math.inf)`` gave a stream (``receive_nowait``, ``receive``,
    ``close``, ``async for``, with the same exceptions: `trio.WouldBlock`, `trio.EndOfChannel`
    once the session ended the stream and everything was taken, `trio.ClosedResourceError` after
    `close`), for one reader and one writer, at a fraction of a channel pair's making. Unbounded:
    the connector's credit bounds what a stream holds (see the module docstring).
    """

    __slots__ = ("_closed", "_ended", "_events", "_waiter")

    def __init__(self) -> None:
        self._events: deque[events.Event] = deque()
        #: the session will put no more events (the stream ended)
        self._ended = False
        #: the reader is done with the stream (`close`)
        self._closed = False
        #: the task waiting in `receive`
        self._waiter: trio.lowlevel.Task | None = None

    def put(self, event: events.Event) -> bool:
        """Hand `event` to the reader; False (nothing kept) once the reader closed its side."""
        if self._closed or self._ended:
            return False
        self._events.append(event)
        self._wake()
        return True

    def end(self) -> None:
        """No more events: the reader gets `trio.EndOfChannel` after the ones it has not taken."""
        self._ended = True
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None:
            trio.lowlevel.reschedule(self._waiter)
            self._waiter = None

    def ready(self) -> bool:
        """Whether `receive_nowait` returns an event or raises what ends the stream (not
        `trio.WouldBlock`): an exception fewer where no event is there yet."""
        return bool(self._events) or self._ended or self._closed

    def take_buffered(self) -> list[events.Event]:
        """The events not taken yet, taken at once (none after `close`)."""
        if self._closed:
            return []
        taken = list(self._events)
        self._events.clear()
        return taken

    def receive_nowait(self) -> events.Event:
        if self._closed:
            raise trio.ClosedResourceError
        if self._events:
            return self._events.popleft()
        if self._ended:
            raise trio.EndOfChannel
        raise trio.WouldBlock

    async def receive(self) -> events.Event:
        """The next event (a checkpoint, as a channel's `receive`)."""
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            event = self.receive_nowait()
        except trio.WouldBlock:
            pass
        else:
            await trio.lowlevel.cancel_shielded_checkpoint()
            return event
        if self._waiter is not None:
            raise trio.BusyResourceError("another task is already waiting for this stream")
        self._waiter = trio.lowlevel.current_task()

        def abort(_: Any) -> trio.lowlevel.Abort:
            self._waiter = None
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)
        return self.receive_nowait()  # what woke it: an event, or the end

    def close(self) -> None:
        """The reader is done: what is buffered is dropped, and later puts are refused."""
        self._closed = True
        self._events.clear()

    def __aiter__(self) -> StreamEvents:
        return self

    async def __anext__(self) -> events.Event:
        try:
            return await self.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None


@dataclass(eq=False)
class RelayStream:
    """One open query stream: its events arrive on `receive`; report delivered bytes back."""

    session: ConnectorSession
    stream_id: int
    query_id: str
    receive: StreamEvents = field(default_factory=StreamEvents)
    ended: bool = False
    #: Cancelled when an event arrives for the stream: the scope its HTTP handler waits in while
    #: it waits for its client's next message and this stream's first event in one task.
    waiter: trio.CancelScope | None = None

    def wait_in(self, scope: trio.CancelScope) -> None:
        """Its handler waits in `scope` (see `waiter`)."""
        self.waiter = scope

    def consumed(self, nbytes: int) -> None:
        """`nbytes` of COLUMNS/ROWS payload reached the HTTP client: let credit flow again."""
        self.session.consumed(self.stream_id, nbytes)

    def release(self, reason: str) -> None:
        """The HTTP side is done with this stream: CANCEL it if still open, return its credit."""
        self.session.release(self, reason)


class ConnectorSession:
    """The relay's end of one connector connection (see the module docstring)."""

    def __init__(
        self,
        ws: WebSocketIO,
        *,
        tunnel: str,
        connector_id: str,
        nonce: str,
        relay_key: Ed25519PrivateKey,
        relay_key_id: str,
        limits: RelayLimits,
        peer: str,
        protocol_limits: Limits | None = None,
        connector_key_hex: str = "",
    ) -> None:
        self.ws = ws
        self.tunnel = tunnel
        self.connector_id = connector_id
        self.session_id = str(uuid.uuid4())
        self.peer = peer
        self.conn = Connection(Role.RELAY, limits=protocol_limits)
        self.limits = limits
        self._nonce = nonce
        #: The relay key this connection's HELLO is signed with; its attestations use it too, also
        #: after a reload changed the relay's key (SPEC.md 8.3), so live sessions survive.
        self.relay_key = relay_key
        self.relay_key_id = relay_key_id
        #: The registered connector key its token verified with (a reload that unregisters it
        #: drains this connection).
        self.connector_key_hex = connector_key_hex
        self._streams: dict[int, RelayStream] = {}
        self._wake = trio.Event()
        #: a write to the socket is in progress (the writer's, or a `send_queued` caller's)
        self._writing = False
        #: the cancel scope of a `send_queued` caller's write in progress
        self._direct_write: trio.CancelScope | None = None
        self._cancel_scope = trio.CancelScope()
        self.last_receive = trio.current_time()
        self.rtt_ms: float | None = None
        self._ping_sent: dict[bytes, float] = {}
        self._pings = RateLimiter(rate=PING_RATE, burst=PING_BURST, max_keys=1)
        self.closed = False
        self.draining = False
        #: Set once this connection drains (the relay's DRAIN, the connector's, or a GOAWAY):
        #: no new query goes to it from then on.
        self.drain_started = trio.Event()
        #: trio time after which a drained connection is closed by us (see `drain`)
        self._close_at = math.inf
        self.opened = time.time()
        self.queries = 0
        #: called with each CHECKPOINT received (relay/app.py stores it; SPEC.md 5.2)
        self.on_checkpoint: Callable[[ConnectorSession, events.Checkpoint], None] | None = None
        #: Called when a stream ends at the protocol level (a slot frees): the tunnel's pump.
        self.on_capacity: Callable[[], None] = _nothing

    # -- what the router looks at -------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        return len(self._streams)

    @property
    def accepting(self) -> bool:
        """Whether a new QUERY may go to this connection now."""
        return not self.closed and not self.draining and self.conn.can_open_stream()

    @property
    def free_streams(self) -> int:
        """How many more QUERYs this connection takes now (0 when closed, draining or full)."""
        if not self.accepting:
            return 0
        return self.conn.max_streams - self.conn.open_stream_count

    def describe(self) -> dict[str, Any]:
        return {
            "connector_id": self.connector_id,
            "session_id": self.session_id,
            "in_flight": self.in_flight,
            "draining": self.draining or not self.conn.can_open_stream(),
            "queries": self.queries,
            "rtt_ms": self.rtt_ms,
        }

    # -- handshake and lifetime ---------------------------------------------------------------

    async def handshake(self) -> None:
        """Send HELLO, wait for READY.

        Raises:
            HandshakeFailed: no READY within the handshake timeout, a READY for another connector,
                or a protocol error (the socket is closed with the matching close code).
        """
        fields = sign_hello(
            self.relay_key,
            relay_key_id=self.relay_key_id,
            session_id=self.session_id,
            tunnel=self.tunnel,
            connector_id=self.connector_id,
            nonce=self._nonce,
            limits=self.conn.limits,
            caps=(CHECKPOINT_CAP, SESSION_CAP),
        )
        self.conn.send(events.Hello(fields=fields))
        await self.ws.send(self.conn.data_to_send())
        with trio.move_on_after(self.limits.handshake_timeout_s):
            while True:
                try:
                    data = await self.ws.receive()
                    if data is None:
                        raise HandshakeFailed("connector closed the socket before READY")
                    self._receive(data)
                    received = self.conn.events()
                    # PINGs before READY or bundled after it in the same message count too.
                    self._check_pings(received)
                except RemoteProtocolError as exc:
                    self._goaway(exc.error_code, str(exc))
                    await self._fail_handshake(exc.close_code, str(exc))
                for index, event in enumerate(received):
                    if isinstance(event, events.Ready):
                        if event.connector_id != self.connector_id:
                            self._goaway(
                                ErrorCode.AUTH_CONNECTOR_REJECTED,
                                "READY names another connector than its token",
                            )
                            await self._fail_handshake(CloseCode.AUTH_FAILED, "READY mismatch")
                        self.last_receive = trio.current_time()
                        self._dispatch(received[index + 1 :])
                        return
                    if isinstance(event, events.GoAway):
                        await self._fail_handshake(CloseCode.NORMAL, f"GOAWAY {event.code}")
        self._goaway(ErrorCode.PROTOCOL_ERROR, "no READY within the handshake timeout")
        await self._fail_handshake(CloseCode.PROTOCOL_ERROR, "handshake timeout")

    async def _fail_handshake(self, code: int, reason: str) -> None:
        with trio.move_on_after(1) as scope:
            scope.shield = True
            await self._flush_now()
            await self.ws.close(code, reason)
        raise HandshakeFailed(reason)

    def _receive(self, message: bytes) -> None:
        """Feed one WebSocket message; SPEC 3.2: the relay refuses a message that ends inside a
        frame (else a truncated frame from a live peer would sit in the buffer indefinitely)."""
        self.conn.receive_data(message)
        if self.conn.buffered:
            raise RemoteProtocolError(
                f"a WebSocket message ended inside a frame ({self.conn.buffered} bytes "
                "left over); send whole frames per message"
            )

    def _goaway(self, code: ErrorCode, message: str) -> None:
        try:
            self.conn.send(events.GoAway(str(code), message, self.conn.last_stream_id))
        except LocalProtocolError:
            return

    async def run(self, *, on_ready: Callable[[], None]) -> None:
        """Serve the connection until it ends; every open stream then gets its terminal event."""
        close_code: int = CloseCode.GOING_AWAY
        try:
            with self._cancel_scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._writer)
                    nursery.start_soon(self._keepalive)
                    on_ready()
                    close_code = await self._reader()
                    nursery.cancel_scope.cancel()
        finally:
            self.closed = True
            self._stop_direct_write()
            self._end_streams()
            with trio.move_on_after(1) as scope:
                scope.shield = True
                try:
                    if not self._writing:  # else a cancelled `send_queued` is still unwinding
                        await self._flush_now()
                    await self.ws.close(close_code)
                except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
                    pass

    def abort(self) -> None:
        """Stop serving this connection now (dead peer, shutdown)."""
        self._cancel_scope.cancel()
        self._stop_direct_write()

    def _stop_direct_write(self) -> None:
        if self._direct_write is not None:
            self._direct_write.cancel()

    async def _reader(self) -> int:
        """Read until the socket ends; return the close code to use."""
        while True:
            received: list[events.AnyEvent] = []
            try:
                data = await self.ws.receive()
                if data is None:
                    return CloseCode.NORMAL
                self.last_receive = trio.current_time()
                self._receive(data)
                received = self.conn.events()
                pings = self._check_pings(received)
            except RemoteProtocolError as exc:
                self._goaway(exc.error_code, str(exc))
                self.log(
                    "connector.protocol_error",
                    code=exc.error_code,
                    message=str(exc),
                )
                self._dispatch(received or self.conn.events())
                return exc.close_code
            self._dispatch(received)
            # Receiving queues a frame only for a PING (its PONG); what dispatching queues (CREDIT
            # for discarded rows, a QUERY the tunnel's pump places) wakes the writer itself. A
            # result message without a PING so costs no writer wake-up.
            if pings:
                self.kick()

    def _check_pings(self, received: list[events.AnyEvent]) -> int:
        """Each PING costs a queued PONG: a connector that floods them is cut off. Returns how
        many PINGs `received` holds (each queued a PONG)."""
        now = trio.current_time()
        pings = 0
        for event in received:
            if isinstance(event, events.Ping):
                pings += 1
                if self._pings.spend("ping", now) > 0:
                    raise RemoteProtocolError(
                        f"PING flood: more than {PING_BURST} PINGs at once or {PING_RATE:g}/s "
                        "sustained"
                    )
        return pings

    def _end_streams(self) -> None:
        if not self.conn.open_streams() and not self._streams:
            return
        try:
            self.conn.receive_eof()
        except LocalProtocolError:
            pass
        self._dispatch(self.conn.events())
        for stream in list(self._streams.values()):
            # Streams the protocol no longer knew (an error state): end them here.
            self._deliver(stream, events.Error(stream.stream_id, _lost_record(stream.query_id)))

    # -- events from the connector ------------------------------------------------------------

    def _dispatch(self, received: list[events.AnyEvent]) -> None:
        self._route(received)
        if self.conn.peer_draining and not self.draining:  # DRAIN, or a draining refusal
            self._start_draining()
            self.log(
                "connector.drain",
                in_flight=self.in_flight,
            )
        for event in received:  # a loop: a generator that any() leaves is closed with an exception
            if isinstance(event, events.Done | events.Error):
                self.on_capacity()
                break

    def log(self, event: str, *, level: int = logging.INFO, **fields: object) -> None:
        """`log_event` with this connection's tunnel, connector id and session id."""
        log_event(
            event,
            level=level,
            tunnel=self.tunnel,
            connector=self.connector_id,
            session=self.session_id,
            **fields,
        )

    def _route(self, received: list[events.AnyEvent]) -> None:
        for event in received:
            match event:
                case events.Columns() | events.Rows() | events.Done() | events.Error():
                    stream = self._streams.get(event.stream_id)
                    if stream is not None:
                        self._deliver(stream, event)
                    elif isinstance(event, events.Columns | events.Rows):
                        self.consumed(event.stream_id, len(event.data))  # nobody listens: discard
                case events.Pong():
                    sent = self._ping_sent.pop(event.data, None)
                    if sent is not None:
                        self.rtt_ms = round((trio.current_time() - sent) * 1000, 3)
                case events.Drain():
                    pass  # _dispatch marks the session draining (Connection.peer_draining)
                case events.Checkpoint():
                    if self.on_checkpoint is not None:
                        self.on_checkpoint(self, event)
                case events.GoAway():
                    self._start_draining()
                    self.log(
                        "connector.goaway",
                        code=event.code,
                        last_stream=event.last_stream,
                    )
                case events.Ping() | events.Ready() | events.ConnectionLost():
                    # the protocol queues the PONG (_check_pings bounds the rate); READY is the
                    # handshake's; the end of the transport is handled by the reader
                    pass
                case events.Hello() | events.Query() | events.Cancel() | events.Credit():
                    pass  # relay -> connector frames: the protocol refuses them from a connector
                case _:
                    assert_never(event)

    def _deliver(self, stream: RelayStream, event: events.Event) -> None:
        terminal = isinstance(event, events.Done | events.Error)
        if not stream.receive.put(event) and isinstance(event, events.Columns | events.Rows):
            self.consumed(stream.stream_id, len(event.data))
        if terminal:
            stream.ended = True
            self._streams.pop(stream.stream_id, None)
            stream.receive.end()
        if stream.waiter is not None:
            # once: the handler wakes for the first of the events a message brought
            stream.waiter.cancel()
            stream.waiter = None

    # -- what HTTP handlers call --------------------------------------------------------------

    def open_stream(
        self, make_query: Callable[[int, str], events.Query], *, wake_writer: bool = True
    ) -> RelayStream:
        """Send a QUERY built by `make_query(stream_id, session_id)`; synchronous on purpose.

        ``wake_writer`` False: the caller sends the queued QUERY itself with `send_queued`.

        Raises:
            LocalProtocolError: the QUERY could not be sent (caller checked `accepting` first).
        """
        stream_id = self.conn.next_stream_id
        query = make_query(stream_id, self.session_id)
        self.conn.send(query)
        stream = RelayStream(self, stream_id, query.query_id)
        self._streams[stream_id] = stream
        self.queries += 1
        if wake_writer:
            self.kick()
        return stream

    def consumed(self, stream_id: int, nbytes: int) -> None:
        if nbytes and not self.closed:
            try:
                self.conn.consumed(stream_id, nbytes)
            except LocalProtocolError:
                return
            self.kick()

    def release(self, stream: RelayStream, reason: str) -> None:
        # Events still buffered for a stream nobody will read: give their credit back.
        leftover = 0
        for event in stream.receive.take_buffered():
            if isinstance(event, events.Columns | events.Rows):
                leftover += len(event.data)
        stream.receive.close()
        if not stream.ended and self._streams.pop(stream.stream_id, None) is not None:
            stream.ended = True
            stream.receive.end()
            if not self.closed:
                try:
                    self.conn.send(events.Cancel(stream.stream_id, reason))
                except LocalProtocolError:
                    pass
        self.consumed(stream.stream_id, leftover)
        self.kick()

    def drain(self, reason: str, *, close_after_s: float | None = None) -> None:
        """Tell the connector the relay goes away: no new queries here, reconnect elsewhere.

        ``close_after_s``: close the connection then even if the connector keeps it open (a
        revoked key must not keep a socket here; checked at the keepalive's pace).
        """
        if close_after_s is not None and not self.closed:
            self._close_at = trio.current_time() + close_after_s
        if self.closed or self.draining:
            return
        self._start_draining()
        try:
            self.conn.send(events.Drain(reason))
        except LocalProtocolError:
            return
        self.kick()

    def _start_draining(self) -> None:
        self.draining = True
        self.drain_started.set()
        self.on_capacity()  # this connection's free slots are gone

    async def wait_draining(self) -> None:
        """Return once this connection drains (see `drain_started`)."""
        await self.drain_started.wait()

    # -- writer and keepalive -----------------------------------------------------------------

    def kick(self) -> None:
        """Wake the writer when the connection has bytes to send (else it stays asleep)."""
        if self.conn.has_data_to_send:
            self._wake.set()

    async def _flush_now(self) -> None:
        limit = self.conn.max_frame + HEADER_SIZE
        while data := self.conn.data_to_send(max_bytes=limit):
            await self.ws.send(data)

    async def send_queued(self) -> None:
        """Send what is queued from the calling task when no write is in progress, else leave it
        to the write in progress (its loop takes what is queued meanwhile).

        A QUERY so reaches the socket without waking the writer task (a task step and a round
        of the run loop fewer per query). One write at a time keeps the frames in order. A
        write that waits is shielded from the caller's cancellation (a message cut half-way
        would break the frame sequence); `abort` and the end of `run` cancel it, as they cancel
        the writer. A first message the socket takes whole at once (`WebSocketIO.send_now`) is
        written without waiting, so with no scope.
        """
        if self._writing or self.closed:
            self.kick()
            return
        data = self.conn.data_to_send(max_bytes=self.conn.max_frame + HEADER_SIZE)
        if not data:
            return
        self._writing = True
        try:
            rest = self.ws.send_now(data)
            if rest is not None or self.conn.has_data_to_send:
                with trio.CancelScope(shield=True) as scope:
                    self._direct_write = scope
                    if rest is not None:
                        await rest
                    await self._flush_now()
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
            self.abort()  # as when the writer's write fails: the connection ends
        finally:
            self._direct_write = None
            self._writing = False

    async def _writer(self) -> None:
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            if self._writing:
                continue  # `send_queued`'s loop sends what woke us
            self._writing = True
            try:
                await self._flush_now()
            finally:
                self._writing = False

    async def _keepalive(self) -> None:
        interval, dead_after = self.limits.ping_interval_s, self.limits.dead_after_s
        next_ping = trio.current_time() + interval
        while True:
            now = trio.current_time()
            silent = now - self.last_receive
            if silent >= dead_after:
                self.log(
                    "connector.dead",
                    silent_s=round(silent, 1),
                )
                self.abort()
                return
            if now >= self._close_at:
                self.log(
                    "connector.drain_expired",
                    level=logging.WARNING,
                    in_flight=self.in_flight,
                )
                self._goaway(ErrorCode.AUTH_CONNECTOR_REJECTED, "drained and not closed in time")
                self.abort()
                return
            if now >= next_ping:
                payload = os.urandom(8)
                self._ping_sent = {payload: now}
                try:
                    self.conn.send(events.Ping(payload))
                except ProtocolError:
                    return
                self.kick()
                next_ping = now + interval
            await trio.sleep_until(min(next_ping, self.last_receive + dead_after, self._close_at))


def _nothing() -> None:
    return None


def _lost_record(query_id: str) -> bytes:
    return error_record(
        ErrorCode.TRANSPORT_LOST,
        "the connection between relay and connector was lost before the query finished",
        query_id=query_id,
    )
