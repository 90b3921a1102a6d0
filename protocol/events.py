"""The events of edgetds/1: what :meth:`Connection.events` yields and :meth:`Connection.send` takes.

One frozen dataclass per frame type, plus :class:`ConnectionLost`. Every stream event carries its
``stream_id``. Result events (:class:`Columns`, :class:`Rows`, :class:`Done`, :class:`Error`) carry
``data``, the frame payload exactly as sent: NDJSON lines the relay forwards to the HTTP client
without parsing them. Tokens, parameter values and row bytes are left out of ``repr()`` so that
logging an event cannot leak them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ._flow import DEFAULT_STATEMENT_BYTES, Limits

__all__ = [
    "AnyEvent",
    "Cancel",
    "Checkpoint",
    "Columns",
    "ConnectionLost",
    "Credit",
    "Done",
    "Drain",
    "Error",
    "Event",
    "GoAway",
    "Hello",
    "Ping",
    "Pong",
    "Query",
    "Ready",
    "Rows",
]


@dataclass(frozen=True)
class Event:
    """Base class of every edgetds/1 event."""


@dataclass(frozen=True)
class Hello(Event):
    """HELLO: the relay's signed hello (stream 0, relay -> connector).

    ``fields`` is the whole JSON object including ``"sig"`` (build it with :func:`sign_hello`,
    check it with :func:`verify_hello`); the properties are its validated members.
    """

    fields: Mapping[str, Any]

    @property
    def session_id(self) -> str:
        return str(self.fields["session_id"])

    @property
    def tunnel(self) -> str:
        return str(self.fields["tunnel"])

    @property
    def connector_id(self) -> str:
        return str(self.fields["connector_id"])

    @property
    def nonce(self) -> str:
        return str(self.fields["nonce"])

    @property
    def relay_key_id(self) -> str:
        return str(self.fields["relay_key_id"])

    @property
    def caps(self) -> tuple[str, ...]:
        return tuple(self.fields["caps"])

    @property
    def limits(self) -> Limits:
        return Limits.from_json(self.fields["limits"])


@dataclass(frozen=True)
class Ready(Event):
    """READY: the connector verified HELLO and serves queries (stream 0, connector -> relay)."""

    connector_id: str
    max_streams: int
    caps: tuple[str, ...] = ()
    #: The largest frame payload the connector accepts (the relay's QUERY frames must fit).
    max_frame: int = 1024 * 1024
    #: The largest ad-hoc statement (UTF-8 bytes of ``sql``) any of the connector's roles accepts;
    #: the relay refuses a longer one with ``request.too_large`` before sending it.
    max_statement_bytes: int = DEFAULT_STATEMENT_BYTES


@dataclass(frozen=True)
class Query(Event):
    """QUERY: opens stream ``stream_id`` (relay -> connector).

    Exactly one of ``sql`` and ``query`` (a named query) is set, except in a session operation
    other than ``run`` (both None). ``options`` holds ``max_rows`` and ``timeout_ms`` (int or
    None). ``session`` is the session operation (``{"id", "op", ...}``, SPEC.md 7.4) or None for
    a one-shot query. ``attestation`` is the relay-signed binding of all of it
    (:func:`make_attestation`, :func:`verify_attestation`).
    """

    stream_id: int
    query_id: str
    token: str = field(repr=False)
    sql: str | None
    query: str | None
    params: Mapping[str, Any] = field(repr=False)
    options: Mapping[str, Any]
    attestation: Mapping[str, Any]
    session: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Cancel(Event):
    """CANCEL: the relay asks the connector to stop stream ``stream_id``."""

    stream_id: int
    reason: str = ""


@dataclass(frozen=True)
class Columns(Event):
    """COLUMNS: one NDJSON ``{"columns": [...]}`` line; starts a result set."""

    stream_id: int
    data: bytes


@dataclass(frozen=True)
class Rows(Event):
    """ROWS: one or more NDJSON row lines (JSON arrays), each ending in ``\\n``."""

    stream_id: int
    data: bytes = field(repr=False)


@dataclass(frozen=True)
class Done(Event):
    """DONE: the terminal ``{"done": {...}}`` line; the stream is over."""

    stream_id: int
    data: bytes


@dataclass(frozen=True)
class Error(Event):
    """ERROR: the terminal ``{"error": {...}}`` line; the stream is over.

    Also synthesized by :meth:`Connection.receive_eof` (code ``transport.lost``) for every stream
    still open when the transport ends.
    """

    stream_id: int
    data: bytes


@dataclass(frozen=True)
class Credit(Event):
    """CREDIT: grow the connector's send window of ``stream_id`` (0 = connection)."""

    stream_id: int
    increment: int


@dataclass(frozen=True)
class Ping(Event):
    """PING: 8 opaque bytes. A received PING is answered with PONG automatically."""

    data: bytes


@dataclass(frozen=True)
class Pong(Event):
    """PONG: the 8 bytes of the PING it answers."""

    data: bytes


@dataclass(frozen=True)
class Drain(Event):
    """DRAIN: the sender opens/accepts no new streams (open ones finish)."""

    reason: str = ""


@dataclass(frozen=True)
class GoAway(Event):
    """GOAWAY: the sender closes the connection after this frame.

    ``last_stream`` is the highest stream id the sender opened or accepted
    (:attr:`Connection.last_stream_id`).
    """

    code: str
    message: str = ""
    last_stream: int = 0


@dataclass(frozen=True)
class Checkpoint(Event):
    """CHECKPOINT: the connector's signed audit-chain head (stream 0, connector -> relay).

    ``fields`` is the whole JSON object including ``"sig"`` (build it with
    :func:`sign_checkpoint`, check it with :func:`verify_checkpoint`); the properties are its
    validated members. Sent only when both sides announced the ``audit.checkpoint`` capability.
    """

    fields: Mapping[str, Any]

    @property
    def connector_id(self) -> str:
        return str(self.fields["connector_id"])

    @property
    def seq(self) -> int:
        return int(self.fields["seq"])

    @property
    def head(self) -> str:
        return str(self.fields["head"])


@dataclass(frozen=True)
class ConnectionLost(Event):
    """The transport ended (:meth:`Connection.receive_eof`); always the last event.

    ``clean`` is True when a GOAWAY was sent or received before and no partial frame was left.
    """

    clean: bool


#: Every event, as a closed union: dispatch with ``match`` and end with ``assert_never`` so a
#: type checker flags an event a side forgot to handle.
AnyEvent = (
    Hello
    | Ready
    | Query
    | Cancel
    | Columns
    | Rows
    | Done
    | Error
    | Credit
    | Ping
    | Pong
    | Drain
    | GoAway
    | Checkpoint
    | ConnectionLost
)
