"""Payload codec: turn a :class:`Frame` into an :class:`Event` and back, validating each payload.

One validator per frame type, used in both directions: :func:`decode` checks what the peer sent,
and :func:`encode` builds a frame and runs the same check on it, so this side can never send what it
would refuse. Validation failures are ``ValueError``; the connection turns them into
:class:`RemoteProtocolError` (received) or :class:`LocalProtocolError` (sent).

Result payloads (COLUMNS, ROWS, DONE, ERROR) are checked for NDJSON framing only, plus a parse of
the single small line of COLUMNS/DONE/ERROR: ROWS bytes are never parsed (the relay forwards them).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from . import events as ev
from ._checkpoint import MAX_CHECKPOINT, check_checkpoint
from ._flow import (
    DEFAULT_FRAME,
    DEFAULT_STATEMENT_BYTES,
    MAX_FRAME_HARD,
    MAX_STREAMS_HARD,
    MIN_FRAME,
    Limits,
)
from ._frames import MAX_STREAM_ID, Frame, FrameType
from ._json import canonical_json, loads_object
from ._records import RecordLine
from ._sessions import check_session

__all__ = ["EVENT_TYPES", "decode", "encode"]

_U32 = struct.Struct(">I")
_HELLO_STRINGS = ("session_id", "tunnel", "connector_id", "nonce", "relay_key_id", "sig")


def _string(obj: dict[str, Any], key: str, *, optional: bool = False) -> str:
    value = obj.get(key, "" if optional else None)
    if not isinstance(value, str):
        raise ValueError(f'"{key}" must be a string')
    return value


def _int(value: Any, name: str, low: int, high: int) -> int:
    if type(value) is not int or not low <= value <= high:
        raise ValueError(f'"{name}" must be an integer in [{low}, {high}]')
    return value


def _caps(obj: dict[str, Any]) -> tuple[str, ...]:
    caps = obj.get("caps")
    if not isinstance(caps, list) or not all(isinstance(c, str) for c in caps):
        raise ValueError('"caps" must be a list of strings')
    return tuple(caps)


def _hello(frame: Frame) -> ev.Hello:
    obj = loads_object(frame.payload)
    if obj.get("version") != 1 or type(obj.get("version")) is not int:
        raise ValueError('HELLO "version" must be 1')
    for key in _HELLO_STRINGS:
        _string(obj, key)
    _caps(obj)
    limits = obj.get("limits")
    if not isinstance(limits, dict):
        raise ValueError('HELLO "limits" must be an object')
    Limits.from_json(limits)
    return ev.Hello(fields=obj)


def _ready(frame: Frame) -> ev.Ready:
    obj = loads_object(frame.payload)
    max_streams = _int(obj.get("max_streams"), "max_streams", 1, MAX_STREAMS_HARD)
    max_frame = _int(obj.get("max_frame", DEFAULT_FRAME), "max_frame", MIN_FRAME, MAX_FRAME_HARD)
    statement = obj.get("max_statement_bytes", DEFAULT_STATEMENT_BYTES)
    max_statement = _int(statement, "max_statement_bytes", 1, MAX_FRAME_HARD)
    return ev.Ready(_string(obj, "connector_id"), max_streams, _caps(obj), max_frame, max_statement)


def _query(frame: Frame) -> ev.Query:
    obj = loads_object(frame.payload)
    _check_query(obj)
    return ev.Query(
        stream_id=frame.stream_id,
        query_id=obj["query_id"],
        token=obj["token"],
        sql=obj.get("sql"),
        query=obj.get("query"),
        params=obj["params"],
        options=obj["options"],
        attestation=obj["attestation"],
        session=obj.get("session"),
    )


def _check_query(obj: dict[str, Any]) -> None:
    """What a QUERY payload must hold (`_query` reads it; `encode` checks what it sends)."""
    query_id = _string(obj, "query_id")
    if not query_id:
        raise ValueError('"query_id" must not be empty')
    sql, name = obj.get("sql"), obj.get("query")
    session = obj.get("session")
    if session is not None:
        if not (sql is None or isinstance(sql, str)) or not (name is None or isinstance(name, str)):
            raise ValueError('"sql" and "query" must be strings or null')
        check_session(session, has_statement=sql is not None or name is not None)
        if sql is not None and name is not None:
            raise ValueError('exactly one of "sql" and "query" must be a string, the other null')
    elif not (isinstance(sql, str) and name is None or isinstance(name, str) and sql is None):
        raise ValueError('exactly one of "sql" and "query" must be a string, the other null')
    params, options, attestation = obj.get("params"), obj.get("options"), obj.get("attestation")
    if not isinstance(params, dict):
        raise ValueError('"params" must be an object')
    if session is not None and params and sql is None and name is None:
        raise ValueError('"params" must be {} for a session op other than "run"')
    if not isinstance(options, dict):
        raise ValueError('"options" must be an object')
    for key in ("max_rows", "timeout_ms"):
        if options.get(key) is not None:
            _int(options[key], key, 0, 2**53 - 1)
    if not isinstance(attestation, dict):
        raise ValueError('"attestation" must be an object')
    _string(obj, "token")


def _cancel(frame: Frame) -> ev.Cancel:
    if not frame.payload:
        return ev.Cancel(frame.stream_id)
    return ev.Cancel(frame.stream_id, _string(loads_object(frame.payload), "reason", optional=True))


def _one_line(data: bytes, key: str) -> None:
    if not data.endswith(b"\n") or data.count(b"\n") != 1:
        raise ValueError(f'a "{key}" record must be exactly one line ending in "\\n"')
    if not isinstance(loads_object(data).get(key), list if key == "columns" else dict):
        raise ValueError(f'the record must be an object with a "{key}" member')


def _columns(frame: Frame) -> ev.Columns:
    _one_line(frame.payload, "columns")
    return ev.Columns(frame.stream_id, frame.payload)


_BAD_ROWS = 'ROWS must be one or more non-empty lines, each ending in "\\n"'


def _rows(frame: Frame) -> ev.Rows:
    data = frame.payload
    if not data.endswith(b"\n") or data.startswith(b"\n") or b"\n\n" in data:
        raise ValueError(_BAD_ROWS)
    return ev.Rows(frame.stream_id, data)


def _done(frame: Frame) -> ev.Done:
    _one_line(frame.payload, "done")
    return ev.Done(frame.stream_id, frame.payload)


def _error(frame: Frame) -> ev.Error:
    _one_line(frame.payload, "error")
    if not isinstance(loads_object(frame.payload)["error"].get("code"), str):
        raise ValueError('an "error" record must have a string "code"')
    return ev.Error(frame.stream_id, frame.payload)


def _credit(frame: Frame) -> ev.Credit:
    if len(frame.payload) != 4:
        raise ValueError(f"CREDIT payload must be 4 bytes, got {len(frame.payload)}")
    (increment,) = _U32.unpack(frame.payload)
    if increment == 0:
        raise ValueError("CREDIT increment must be at least 1")
    return ev.Credit(frame.stream_id, increment)


def _ping_data(frame: Frame) -> bytes:
    if len(frame.payload) != 8:
        raise ValueError(f"{frame.type.name} payload must be 8 bytes, got {len(frame.payload)}")
    return frame.payload


def _drain(frame: Frame) -> ev.Drain:
    return ev.Drain(_string(loads_object(frame.payload), "reason", optional=True))


def _goaway(frame: Frame) -> ev.GoAway:
    obj = loads_object(frame.payload)
    last_stream = _int(obj.get("last_stream"), "last_stream", 0, MAX_STREAM_ID)
    return ev.GoAway(_string(obj, "code"), _string(obj, "message", optional=True), last_stream)


def _checkpoint(frame: Frame) -> ev.Checkpoint:
    if len(frame.payload) > MAX_CHECKPOINT:
        raise ValueError(f"CHECKPOINT payload must be at most {MAX_CHECKPOINT} bytes")
    obj = loads_object(frame.payload)
    check_checkpoint(obj)
    return ev.Checkpoint(fields=obj)


_DECODERS: dict[FrameType, Callable[[Frame], ev.AnyEvent]] = {
    FrameType.HELLO: _hello,
    FrameType.READY: _ready,
    FrameType.QUERY: _query,
    FrameType.CANCEL: _cancel,
    FrameType.COLUMNS: _columns,
    FrameType.ROWS: _rows,
    FrameType.DONE: _done,
    FrameType.ERROR: _error,
    FrameType.CREDIT: _credit,
    FrameType.PING: lambda frame: ev.Ping(_ping_data(frame)),
    FrameType.PONG: lambda frame: ev.Pong(_ping_data(frame)),
    FrameType.DRAIN: _drain,
    FrameType.GOAWAY: _goaway,
    FrameType.CHECKPOINT: _checkpoint,
}

#: The frame type of each event class that maps to a frame.
EVENT_TYPES: dict[type[ev.Event], FrameType] = {
    ev.Hello: FrameType.HELLO,
    ev.Ready: FrameType.READY,
    ev.Query: FrameType.QUERY,
    ev.Cancel: FrameType.CANCEL,
    ev.Columns: FrameType.COLUMNS,
    ev.Rows: FrameType.ROWS,
    ev.Done: FrameType.DONE,
    ev.Error: FrameType.ERROR,
    ev.Credit: FrameType.CREDIT,
    ev.Ping: FrameType.PING,
    ev.Pong: FrameType.PONG,
    ev.Drain: FrameType.DRAIN,
    ev.GoAway: FrameType.GOAWAY,
    ev.Checkpoint: FrameType.CHECKPOINT,
}


def decode(frame: Frame) -> ev.AnyEvent:
    """The event a received frame carries.

    Raises:
        ValueError: the payload is invalid for the frame type.
    """
    return _DECODERS[frame.type](frame)


#: the events whose payload is their data as it is (every result frame of a query)
_DATA_EVENTS = (ev.Columns, ev.Rows, ev.Done, ev.Error, ev.Ping, ev.Pong)


def _payload(event: ev.Event) -> bytes:
    if isinstance(event, _DATA_EVENTS):  # first: most frames are these
        return event.data
    if isinstance(event, ev.Hello | ev.Checkpoint):
        return canonical_json(dict(event.fields))
    if isinstance(event, ev.Ready):
        obj: dict[str, Any] = {
            "connector_id": event.connector_id,
            "max_streams": event.max_streams,
            "caps": list(event.caps),
            "max_frame": event.max_frame,
            "max_statement_bytes": event.max_statement_bytes,
        }
        return canonical_json(obj)
    if isinstance(event, ev.Cancel):
        return canonical_json({"reason": event.reason}) if event.reason else b""
    if isinstance(event, ev.Credit):
        if not 0 <= event.increment <= MAX_STREAM_ID:
            raise ValueError(f"CREDIT increment {event.increment} does not fit in a u32")
        return _U32.pack(event.increment)
    if isinstance(event, ev.Drain):
        return canonical_json({"reason": event.reason})
    assert isinstance(event, ev.GoAway)
    obj = {"code": event.code, "message": event.message, "last_stream": event.last_stream}
    return canonical_json(obj)


def _query_object(event: ev.Query) -> dict[str, Any]:
    obj = {
        "query_id": event.query_id,
        "token": event.token,
        "sql": event.sql,
        "query": event.query,
        "params": dict(event.params),
        "options": dict(event.options),
        "attestation": dict(event.attestation),
    }
    if event.session is not None:
        obj["session"] = dict(event.session)
    return obj


#: the value types JSON reads back as the same type and value (a float is finite once encoded)
_SCALARS = frozenset({str, int, float, bool, type(None)})
#: an integer this small has fewer digits than `loads_object` refuses as beyond a double's range
_SMALL_INT = 10**300


def _reads_back(obj: dict[str, Any], *, nested: bool = True) -> bool:
    """Whether strict parsing of `obj`'s canonical JSON gives back `obj` itself: string keys,
    values of `_SCALARS` (integers small), and (`nested`) objects of such values. Then what
    decode would check of the parse can be checked of `obj`."""
    for key, value in obj.items():
        if type(key) is not str:
            return False
        if type(value) is dict:
            if not nested or not _reads_back(value, nested=False):
                return False
        elif type(value) not in _SCALARS or type(value) is int and abs(value) >= _SMALL_INT:
            return False
    return True


def stream_of(event: ev.Event) -> int:
    """The stream id an event belongs to (0 for connection events)."""
    stream_id = getattr(event, "stream_id", 0)
    assert isinstance(stream_id, int)
    return stream_id


def encode(event: ev.Event) -> Frame:
    """The frame that carries ``event``, validated exactly as the peer will validate it.

    Raises:
        ValueError: the event's fields are invalid.
        TypeError: a JSON member is not serializable.
    """
    if type(event) is ev.Query:
        # The QUERY's members as they will read back: checked as decode checks them, without
        # parsing the payload again (else the payload is parsed, as for other frames).
        obj = _query_object(event)
        frame = Frame(FrameType.QUERY, event.stream_id, canonical_json(obj))
        if _reads_back(obj):
            _check_query(obj)
        else:
            decode(frame)
        return frame
    frame = Frame(EVENT_TYPES[type(event)], stream_of(event), _payload(event))
    if type(event) is ev.Rows:  # what decode(frame) checks of ROWS, without a second event
        data = frame.payload
        if not data.endswith(b"\n") or data.startswith(b"\n") or b"\n\n" in data:
            raise ValueError(_BAD_ROWS)
    elif not _built_valid(event):
        decode(frame)
    return frame


#: The record each result frame carries (see `RecordLine`).
_RECORD_KEYS: dict[type[ev.Event], str] = {
    ev.Columns: "columns",
    ev.Done: "done",
    ev.Error: "error",
}


def _built_valid(event: ev.Event) -> bool:
    """A COLUMNS/DONE/ERROR payload that `ndjson_line` built with that record's shape: valid as
    the receiver checks it, no need to parse it again."""
    data = getattr(event, "data", None)
    return isinstance(data, RecordLine) and data.key == _RECORD_KEYS.get(type(event))
