"""The edgetds/1 state machines, as tables.

Everything about *which frame may come when* lives here, and nothing else does: payload checks are
in ``_codec.py``, windows in ``_flow.py``, and ``_connection.py`` only looks these tables up.

Rule 1: a frame type has one legal sender role and one legal stream scope (:data:`FRAME_RULES`).
Rule 2: the connection starts with HELLO (relay) then READY (connector); before that only GOAWAY
        may cross (:data:`CONNECTION_TRANSITIONS`).
Rule 3: only the relay opens streams, with QUERY, on an id above every id used before on this
        connection; a stream then moves through :data:`STREAM_TRANSITIONS` and ends with the
        connector's DONE or ERROR. Ids are never reused.
Rule 4: CANCEL and CREDIT may race the connector's DONE/ERROR, so when *received* on a stream that
        is already closed they are dropped (:data:`LATE_FRAMES`); anything else is an error.
Rule 5: a frame type that belongs to an optional feature may cross only when both sides announced
        its capability (:data:`FRAME_CAPS`; ``Connection.caps`` is the intersection).

Both ends run the same tables: a frame is checked when this side sends it (violations are
``LocalProtocolError``) and when it arrives (``RemoteProtocolError``).
"""

from __future__ import annotations

import enum

from ._frames import FrameType

__all__ = [
    "CONNECTION_TRANSITIONS",
    "FRAME_CAPS",
    "FRAME_RULES",
    "LATE_FRAMES",
    "STREAM_TRANSITIONS",
    "ConnectionState",
    "Role",
    "Scope",
    "StreamState",
]


class Role(enum.Enum):
    """Which end of the connection this :class:`Connection` is."""

    #: a member is its only instance and equal only to itself (``Enum``'s ``__eq__`` is
    #: identity): hashed by identity in C, where ``Enum.__hash__`` is a Python call; the frame
    #: rules look these up several times per frame. Also in the three enums below.
    __hash__ = object.__hash__

    #: The edge side: sends HELLO, QUERY, CANCEL, CREDIT.
    RELAY = "relay"
    #: The on-prem side: sends READY, COLUMNS, ROWS, DONE, ERROR.
    CONNECTOR = "connector"


class Scope(enum.Enum):
    """Which stream ids a frame type may carry."""

    __hash__ = object.__hash__

    #: Stream 0 only.
    CONNECTION = "connection"
    #: Stream ids >= 1 only.
    STREAM = "stream"
    #: Stream 0 (the connection window) or a stream (CREDIT).
    EITHER = "either"


class ConnectionState(enum.Enum):
    """The handshake progress of a connection, plus its two terminal states."""

    __hash__ = object.__hash__

    #: Nothing sent yet: the relay's HELLO must come first.
    AWAIT_HELLO = "await_hello"
    #: HELLO crossed; the connector's READY must come next.
    AWAIT_READY = "await_ready"
    #: Both handshake frames crossed: streams may open.
    OPEN = "open"
    #: The transport ended (:meth:`Connection.receive_eof`).
    CLOSED = "closed"
    #: A protocol error happened; every later call fails fast.
    ERROR = "error"


class StreamState(enum.Enum):
    """The life of one stream (the relay's and the connector's views agree)."""

    __hash__ = object.__hash__

    #: QUERY crossed; no result set yet.
    OPEN = "open"
    #: Inside a result set (COLUMNS crossed): ROWS may follow.
    RESULT = "result"
    #: DONE or ERROR crossed: the stream is over.
    CLOSED = "closed"


R, C = Role.RELAY, Role.CONNECTOR

#: Rule 1: frame type -> (roles that may send it, stream scope).
FRAME_RULES: dict[FrameType, tuple[frozenset[Role], Scope]] = {
    FrameType.HELLO: (frozenset({R}), Scope.CONNECTION),
    FrameType.READY: (frozenset({C}), Scope.CONNECTION),
    FrameType.QUERY: (frozenset({R}), Scope.STREAM),
    FrameType.CANCEL: (frozenset({R}), Scope.STREAM),
    FrameType.COLUMNS: (frozenset({C}), Scope.STREAM),
    FrameType.ROWS: (frozenset({C}), Scope.STREAM),
    FrameType.DONE: (frozenset({C}), Scope.STREAM),
    FrameType.ERROR: (frozenset({C}), Scope.STREAM),
    FrameType.CREDIT: (frozenset({R}), Scope.EITHER),
    FrameType.PING: (frozenset({R, C}), Scope.CONNECTION),
    FrameType.PONG: (frozenset({R, C}), Scope.CONNECTION),
    FrameType.DRAIN: (frozenset({R, C}), Scope.CONNECTION),
    FrameType.GOAWAY: (frozenset({R, C}), Scope.CONNECTION),
    FrameType.CHECKPOINT: (frozenset({C}), Scope.CONNECTION),
}

#: Rule 2: (state, frame) -> next state during the handshake. In OPEN every frame type except
#: HELLO and READY is allowed; GOAWAY is allowed in every state and changes none.
CONNECTION_TRANSITIONS: dict[tuple[ConnectionState, FrameType], ConnectionState] = {
    (ConnectionState.AWAIT_HELLO, FrameType.HELLO): ConnectionState.AWAIT_READY,
    (ConnectionState.AWAIT_READY, FrameType.READY): ConnectionState.OPEN,
}

#: Rule 3: (stream state, frame) -> next stream state. QUERY creates a stream in OPEN; a pair
#: missing from this table is a protocol error.
STREAM_TRANSITIONS: dict[tuple[StreamState, FrameType], StreamState] = {
    (StreamState.OPEN, FrameType.COLUMNS): StreamState.RESULT,
    (StreamState.OPEN, FrameType.DONE): StreamState.CLOSED,
    (StreamState.OPEN, FrameType.ERROR): StreamState.CLOSED,
    (StreamState.OPEN, FrameType.CANCEL): StreamState.OPEN,
    (StreamState.OPEN, FrameType.CREDIT): StreamState.OPEN,
    (StreamState.RESULT, FrameType.COLUMNS): StreamState.RESULT,
    (StreamState.RESULT, FrameType.ROWS): StreamState.RESULT,
    (StreamState.RESULT, FrameType.DONE): StreamState.CLOSED,
    (StreamState.RESULT, FrameType.ERROR): StreamState.CLOSED,
    (StreamState.RESULT, FrameType.CANCEL): StreamState.RESULT,
    (StreamState.RESULT, FrameType.CREDIT): StreamState.RESULT,
}

#: Rule 4: frames dropped without an event when received on an already closed stream.
LATE_FRAMES = frozenset({FrameType.CANCEL, FrameType.CREDIT})

#: Rule 5: frame types of optional features -> the capability both sides must have announced.
FRAME_CAPS: dict[FrameType, str] = {FrameType.CHECKPOINT: "audit.checkpoint"}
