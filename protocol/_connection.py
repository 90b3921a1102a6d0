"""The sans-I/O edgetds/1 connection: bytes in, events out, for either role.

Bring your own I/O:

1. Create ``Connection(Role.RELAY)`` or ``Connection(Role.CONNECTOR)`` per WebSocket.
2. Feed every received binary message to :meth:`Connection.receive_data` and the end of the
   transport to :meth:`Connection.receive_eof`; then handle :meth:`Connection.events`.
3. Call :meth:`Connection.send` with events, and after *every* call into the connection (receiving
   can queue PONG, CREDIT or GOAWAY) write :meth:`Connection.data_to_send` as one binary message
   when it is not empty.

The connection checks every frame in both directions against the tables in ``_state.py``, keeps the
credit windows of ``_flow.py``, and never does I/O, reads a clock or draws random numbers.
"""

from __future__ import annotations

from collections import deque
from typing import NoReturn

from . import events as ev
from ._codec import EVENT_TYPES, decode, encode
from ._errors import ErrorCode, LocalProtocolError, ProtocolError, RemoteProtocolError
from ._flow import DEFAULT_STATEMENT_BYTES, MIN_FRAME, Limits, Window
from ._frames import Frame, FrameReader, FrameType, encode_frame
from ._json import loads_object
from ._records import error_record
from ._sessions import SESSION_CAP
from ._state import (
    CONNECTION_TRANSITIONS,
    FRAME_CAPS,
    FRAME_RULES,
    LATE_FRAMES,
    STREAM_TRANSITIONS,
    ConnectionState,
    Role,
    Scope,
    StreamState,
)

__all__ = ["Connection"]

_FLOW_CONTROLLED = frozenset({FrameType.COLUMNS, FrameType.ROWS})
_LOST_MESSAGE = "the connection between relay and connector was lost before the query finished"


class _Stream:
    __slots__ = ("query_id", "state", "unconsumed", "window")

    def __init__(self, query_id: str, window: int) -> None:
        self.query_id = query_id
        self.state = StreamState.OPEN
        #: Connector: the send window. Relay: the receive window.
        self.window = Window(window)
        #: Relay: bytes received on this stream that the application has not reported consumed.
        self.unconsumed = 0


class Connection:
    """One edgetds/1 connection, seen from ``role``.

    Args:
        role: which end this is.
        limits: this side's limits. The relay announces them in HELLO (its Hello ``limits`` must
            equal them); the connector uses ``max_frame`` and ``max_streams`` (announced in READY).
            Frames received with a longer payload than ``limits.max_frame`` are refused.
    """

    def __init__(self, role: Role, *, limits: Limits | None = None) -> None:
        self.role = role
        self.limits = limits if limits is not None else Limits()
        self.state = ConnectionState.AWAIT_HELLO
        #: The HELLO's session id, once HELLO crossed.
        self.session_id: str | None = None
        #: Capabilities both sides announced (set when READY crossed).
        self.caps: frozenset[str] = frozenset()
        #: The largest ad-hoc statement (UTF-8 bytes) the connector accepts: its READY's
        #: ``max_statement_bytes`` (the default until READY crossed).
        self.max_statement_bytes = DEFAULT_STATEMENT_BYTES
        self._peer = Role.CONNECTOR if role is Role.RELAY else Role.RELAY
        self._reader = FrameReader(max_payload=self.limits.max_frame)
        self._events: list[ev.AnyEvent] = []
        self._outbox: deque[bytes] = deque()
        self._streams: dict[int, _Stream] = {}
        self._last_stream_id = 0
        self._max_streams = self.limits.max_streams
        self._send_max_frame = MIN_FRAME
        self._stream_window = self.limits.stream_window
        self._window = Window(self.limits.connection_window)
        self._unconsumed = 0
        self._hello_caps: frozenset[str] = frozenset()
        self._goaway_sent = self._goaway_received = False
        self._drain_sent = self._drain_received = False
        self._eof = False
        self._error: ProtocolError | None = None

    # -- the public face ----------------------------------------------------------------------

    @property
    def last_stream_id(self) -> int:
        """The highest stream id opened so far (0 if none): GOAWAY's ``last_stream``."""
        return self._last_stream_id

    @property
    def buffered(self) -> int:
        """Bytes received but not yet parsed into a frame (a partial frame). A relay that carries
        one frame per WebSocket message refuses a message that leaves this above 0 (SPEC 3.2)."""
        return self._reader.buffered

    @property
    def next_stream_id(self) -> int:
        """The stream id the relay's next QUERY should use."""
        return self._last_stream_id + 1

    @property
    def max_streams(self) -> int:
        """The number of streams that may be open at once (the smaller of both announcements)."""
        return self._max_streams

    @property
    def max_frame(self) -> int:
        """The largest payload this side may send in one frame (what the peer announced)."""
        return self._send_max_frame

    @property
    def peer_draining(self) -> bool:
        """Relay: whether the connector takes no new queries: it sent DRAIN, or refused a query
        unexecuted with ERROR ``connector.draining`` (SPEC 6.4)."""
        return self._drain_received

    def open_streams(self) -> frozenset[int]:
        """The ids of the streams that are open (QUERY crossed, DONE/ERROR not yet)."""
        return frozenset(self._streams)

    @property
    def open_stream_count(self) -> int:
        """How many streams are open: ``len(open_streams())`` without making the set."""
        return len(self._streams)

    def is_open(self, stream_id: int) -> bool:
        """Whether ``stream_id`` is one of `open_streams` (without making the set)."""
        return stream_id in self._streams

    def can_open_stream(self) -> bool:
        """Relay: whether a QUERY may be sent now (handshake done, no DRAIN/GOAWAY, capacity)."""
        return (
            self.role is Role.RELAY
            and self.state is ConnectionState.OPEN
            and not (self._drain_sent or self._drain_received or self._goaway_sent)
            and not self._goaway_received
            and len(self._streams) < self._max_streams
        )

    def send_window(self, stream_id: int) -> int:
        """Connector: how many COLUMNS/ROWS payload bytes may be sent on ``stream_id`` now.

        Returns 0 for a stream that is not open.

        Raises:
            LocalProtocolError: called on the relay (its frames are not flow-controlled).
        """
        if self.role is not Role.CONNECTOR:
            raise LocalProtocolError("only the connector's frames are flow-controlled")
        stream = self._streams.get(stream_id)
        if stream is None:
            return 0
        return min(stream.window.size, self._window.size)

    def events(self) -> list[ev.AnyEvent]:
        """Return and forget the events parsed so far, oldest first."""
        events, self._events = self._events, []
        return events

    @property
    def has_data_to_send(self) -> bool:
        """Whether `data_to_send` would return bytes (a writer with nothing to send stays idle)."""
        return bool(self._outbox)

    def data_to_send(self, max_bytes: int | None = None) -> bytes:
        """Return and forget the bytes to send, as whole frames for ONE WebSocket message.

        Args:
            max_bytes: stop before a frame that would make the message longer (at least one frame
                is always returned, so a message may reach ``max_frame`` + 12 bytes).
        """
        taken: list[bytes] = []
        size = 0
        while self._outbox:
            chunk = self._outbox[0]
            if taken and max_bytes is not None and size + len(chunk) > max_bytes:
                break
            taken.append(self._outbox.popleft())
            size += len(chunk)
        return b"".join(taken)

    def receive_data(self, data: bytes) -> None:
        """Feed bytes received from the peer (any split: frames may span calls).

        Raises:
            RemoteProtocolError: the peer broke the protocol. The connection is now in ERROR and a
                GOAWAY (``protocol.error``) is queued in :meth:`data_to_send`; send it, then close
                the WebSocket with the exception's ``close_code``. Events parsed before the bad
                frame stay available in :meth:`events`.
            LocalProtocolError: called after an error or after :meth:`receive_eof`.
        """
        self._check_usable("receive data")
        self._reader.feed(data)
        while True:
            try:
                frame = self._reader.next_frame()
            except RemoteProtocolError as exc:
                self._fail(exc)
            if frame is None:
                return
            if self._goaway_received:
                self._fail(RemoteProtocolError(f"{frame.type.name} frame after GOAWAY"))
            self._route(frame, local=False)
            event = self._decode(frame)
            if self._apply(frame, event, local=False):
                self._events.append(event)

    def receive_eof(self) -> None:
        """The transport ended: end every open stream with a ``transport.lost`` :class:`Error`.

        Appends one synthesized :class:`events.Error` per open stream (lowest id first), then
        :class:`events.ConnectionLost`. Allowed in the ERROR state too (it is the clean-up path).

        Raises:
            LocalProtocolError: called twice.
        """
        if self._eof:
            raise LocalProtocolError("receive_eof() was already called")
        self._eof = True
        for stream_id in sorted(self._streams):
            record = error_record(
                ErrorCode.TRANSPORT_LOST, _LOST_MESSAGE, query_id=self._streams[stream_id].query_id
            )
            self._events.append(ev.Error(stream_id, record))
        self._streams.clear()
        clean = (
            self.state is not ConnectionState.ERROR
            and (self._goaway_sent or self._goaway_received)
            and not self._reader.buffered
        )
        self._events.append(ev.ConnectionLost(clean=clean))
        if self.state is not ConnectionState.ERROR:
            self.state = ConnectionState.CLOSED

    def send(self, event: ev.Event) -> None:
        """Queue ``event`` as a frame (collect it with :meth:`data_to_send`).

        Raises:
            LocalProtocolError: the event is not allowed for this role or in this state, or
                exceeds the send window: the connection is then in ERROR. Two exceptions, where
                nothing was queued and the connection stays usable: an event whose fields do not
                encode as the peer would accept them (a relay must not lose every stream of a
                connection to one request it failed to check), and a payload larger than
                :attr:`max_frame`, refused with ``error_code`` ``request.too_large`` (QUERY) or
                ``limits.result_too_large``.
        """
        self._check_usable("send")
        if self._goaway_sent:
            self._fail(LocalProtocolError("nothing may be sent after GOAWAY"))
        if type(event) not in EVENT_TYPES:
            self._fail(LocalProtocolError(f"{type(event).__name__} is not a sendable event"))
        try:
            frame = encode(event)
        except (ValueError, TypeError) as exc:
            # nothing was queued or routed: refused, and the connection stays as it was
            raise LocalProtocolError(f"invalid {type(event).__name__} event: {exc}") from None
        if len(frame.payload) > self._send_max_frame:
            # Not a protocol violation yet: nothing was queued and the connection stays usable,
            # so a relay can answer 413 for one oversized request without losing the others.
            too_large = (
                ErrorCode.REQUEST_TOO_LARGE
                if frame.type is FrameType.QUERY
                else ErrorCode.LIMITS_RESULT_TOO_LARGE
            )
            raise LocalProtocolError(
                f"{frame.type.name} payload of {len(frame.payload)} bytes exceeds the peer's "
                f"max frame payload {self._send_max_frame}",
                error_code=too_large,
            )
        self._route(frame, local=True)
        self._apply(frame, event, local=True)
        self._outbox.append(encode_frame(frame))

    def consumed(self, stream_id: int, nbytes: int) -> None:
        """Relay: ``nbytes`` of COLUMNS/ROWS payload received on ``stream_id`` were delivered
        (or discarded); re-grant them as CREDIT once half a window has accumulated.

        Call it for every flow-controlled byte, also after the stream ended or was cancelled,
        or the connection window runs dry.

        Raises:
            LocalProtocolError: called on the connector, for a stream never opened, or for more
                bytes than were received.
        """
        self._check_usable("report consumed bytes")
        if self.role is not Role.RELAY:
            self._fail(LocalProtocolError("only the relay grants credit"))
        if not 1 <= stream_id <= self._last_stream_id:
            self._fail(LocalProtocolError(f"stream {stream_id} was never opened"))
        stream = self._streams.get(stream_id)
        unconsumed = self._unconsumed if stream is None else stream.unconsumed
        if not 0 <= nbytes <= unconsumed:
            self._fail(
                LocalProtocolError(f"consumed {nbytes} bytes but only {unconsumed} are unconsumed")
            )
        self._unconsumed -= nbytes
        self._window.pending += nbytes
        if stream is not None:
            stream.unconsumed -= nbytes
            stream.window.pending += nbytes
            self._grant(stream_id, stream.window.take_grant())
        self._grant(0, self._window.take_grant())

    # -- internals ----------------------------------------------------------------------------

    def _check_usable(self, action: str) -> None:
        if self.state is ConnectionState.ERROR:
            raise LocalProtocolError(
                f"cannot {action}: the connection failed earlier ({self._error})"
            )
        if self._eof:
            raise LocalProtocolError(f"cannot {action}: the transport already ended")

    def _fail(self, exc: ProtocolError) -> NoReturn:
        self.state = ConnectionState.ERROR
        self._error = exc
        if isinstance(exc, RemoteProtocolError) and not self._goaway_sent:
            goaway = ev.GoAway(str(exc.error_code), str(exc), self._last_stream_id)
            self._outbox.append(encode_frame(encode(goaway)))
            self._goaway_sent = True
        raise exc

    def _error_for(
        self, local: bool, message: str, error_code: ErrorCode = ErrorCode.PROTOCOL_ERROR
    ) -> ProtocolError:
        # A specific code is a hint for our caller; a peer that broke a rule is protocol.error.
        if local:
            return LocalProtocolError(message, error_code=error_code)
        return RemoteProtocolError(message)

    def _decode(self, frame: Frame) -> ev.AnyEvent:
        try:
            return decode(frame)
        except ValueError as exc:
            self._fail(RemoteProtocolError(f"invalid {frame.type.name} payload: {exc}"))

    def _grant(self, stream_id: int, increment: int) -> None:
        if increment and not self._goaway_sent:
            self._outbox.append(encode_frame(encode(ev.Credit(stream_id, increment))))

    def _route(self, frame: Frame, *, local: bool) -> None:
        """Rule 1, from the header alone (before any payload is parsed): role and stream scope."""
        sender = self.role if local else self._peer
        roles, scope = FRAME_RULES[frame.type]
        kind, sid = frame.type, frame.stream_id
        if sender not in roles:
            self._fail(self._error_for(local, f"{kind.name} may not be sent by the {sender.value}"))
        if scope is Scope.CONNECTION and sid != 0:
            self._fail(self._error_for(local, f"{kind.name} must be sent on stream 0, not {sid}"))
        if scope is Scope.STREAM and sid == 0:
            self._fail(self._error_for(local, f"{kind.name} must be sent on a stream, not 0"))

    def _apply(self, frame: Frame, event: ev.Event, *, local: bool) -> bool:
        """Rules 2-4: update the state from a routed frame; False = drop it silently."""
        kind, sid = frame.type, frame.stream_id

        def fail(message: str) -> NoReturn:
            self._fail(self._error_for(local, message))

        if kind is FrameType.GOAWAY:
            if local:
                self._goaway_sent = True
            else:
                self._goaway_received = True
            return True
        next_state = CONNECTION_TRANSITIONS.get((self.state, kind))
        if next_state is not None:
            self._handshake(event, local)
            self.state = next_state
            return True
        if self.state is not ConnectionState.OPEN or kind in (FrameType.HELLO, FrameType.READY):
            fail(f"{kind.name} is not allowed in state {self.state.value}")
        cap = FRAME_CAPS.get(kind)
        if cap is not None and cap not in self.caps:
            fail(f"{kind.name} needs the {cap!r} capability, which was not negotiated")
        if kind is FrameType.CHECKPOINT:
            return True
        if kind is FrameType.PING:
            if not local and not self._goaway_sent:
                self._outbox.append(encode_frame(Frame(FrameType.PONG, 0, frame.payload)))
            return True
        if kind is FrameType.DRAIN:
            if local:
                self._drain_sent = True
            else:
                self._drain_received = True
            return True
        if kind is FrameType.PONG:
            return True
        if kind is FrameType.CREDIT and sid == 0:
            self._credit(self._window, frame, event, local)
            return True
        if kind is FrameType.QUERY:
            self._open(sid, event, local)
            return True
        stream = self._streams.get(sid)
        if stream is None:
            if sid <= self._last_stream_id and kind in LATE_FRAMES and not local:
                return False
            fail(f"{kind.name} on stream {sid}, which is not open")
        new_state = STREAM_TRANSITIONS.get((stream.state, kind))
        if new_state is None:
            fail(f"{kind.name} is not allowed on stream {sid} in state {stream.state.value}")
        if kind in _FLOW_CONTROLLED:
            self._flow(stream, len(frame.payload), local)
        elif kind is FrameType.CREDIT:
            self._credit(stream.window, frame, event, local)
        elif not local and stream.state is StreamState.OPEN and _refused_draining(event):
            # The connector refused the query unexecuted because it drains: that is its DRAIN.
            self._drain_received = True
        stream.state = new_state
        if new_state is StreamState.CLOSED:
            del self._streams[sid]
        return True

    def _handshake(self, event: ev.Event, local: bool) -> None:
        if isinstance(event, ev.Hello):
            limits = event.limits
            if local and limits != self.limits:
                self._fail(LocalProtocolError("HELLO limits must equal this connection's limits"))
            if not local:
                self._window = Window(limits.connection_window)
                self._stream_window = limits.stream_window
                self._send_max_frame = limits.max_frame
                self._max_streams = min(self._max_streams, limits.max_streams)
            self.session_id = event.session_id
            self._hello_caps = frozenset(event.caps)
            return
        assert isinstance(event, ev.Ready)
        if local and event.max_frame > self.limits.max_frame:
            self._fail(LocalProtocolError("READY max_frame may not exceed this side's max_frame"))
        if not local:
            self._send_max_frame = event.max_frame
        self._max_streams = min(self._max_streams, event.max_streams)
        self.max_statement_bytes = event.max_statement_bytes
        self.caps = self._hello_caps & frozenset(event.caps)

    def _open(self, sid: int, event: ev.Event, local: bool) -> None:
        assert isinstance(event, ev.Query)
        if event.session is not None and SESSION_CAP not in self.caps:
            self._fail(
                self._error_for(
                    local, f"QUERY member 'session' needs the {SESSION_CAP!r} capability"
                )
            )
        if sid <= self._last_stream_id:
            self._fail(
                self._error_for(
                    local,
                    f"QUERY stream id {sid} is not above the last one ({self._last_stream_id})",
                )
            )
        if self._drain_sent and local or self._drain_received:
            self._fail(
                self._error_for(local, "QUERY after DRAIN", error_code=ErrorCode.CONNECTOR_DRAINING)
            )
        if len(self._streams) >= self._max_streams:
            self._fail(
                self._error_for(
                    local,
                    f"QUERY would exceed the {self._max_streams} concurrent streams allowed",
                    error_code=ErrorCode.LIMITS_TOO_MANY_QUERIES,
                )
            )
        self._last_stream_id = sid
        self._streams[sid] = _Stream(event.query_id, self._stream_window)

    def _flow(self, stream: _Stream, nbytes: int, local: bool) -> None:
        if nbytes > stream.window.size or nbytes > self._window.size:
            window = min(stream.window.size, self._window.size)
            self._fail(
                self._error_for(
                    local, f"{nbytes} payload bytes exceed the send window of {window} bytes"
                )
            )
        stream.window.size -= nbytes
        self._window.size -= nbytes
        if not local:
            stream.unconsumed += nbytes
            self._unconsumed += nbytes

    def _credit(self, window: Window, frame: Frame, event: ev.Event, local: bool) -> None:
        assert isinstance(event, ev.Credit)
        if not window.grow(event.increment):
            self._fail(
                self._error_for(local, f"CREDIT on stream {frame.stream_id} overflows 2^31-1")
            )


def _refused_draining(event: ev.Event) -> bool:
    """An ERROR ``connector.draining``: the connector refused the query without running it."""
    if not isinstance(event, ev.Error):
        return False
    error = loads_object(event.data)["error"]  # the codec checked the record's shape
    return bool(error["code"] == ErrorCode.CONNECTOR_DRAINING)
