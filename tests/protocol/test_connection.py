"""The Connection state machine, two-ended: handshake, streams, flow control, errors, EOF."""

from __future__ import annotations

import json

import pytest

from protocol import (
    CloseCode,
    Connection,
    ConnectionState,
    ErrorCode,
    Frame,
    FrameType,
    Limits,
    LocalProtocolError,
    RemoteProtocolError,
    Role,
    encode_frame,
    error_record,
    events,
)
from tests.protocol.helpers import CONNECTOR_ID, SESSION_ID, ProtocolPair, hello_fields, make_query

COLUMNS = b'{"columns":[{"name":"x","type":"int"}]}\n'
DONE = b'{"done":{"rows":2,"result_sets":1,"elapsed_ms":1,"query_id":"q-1"}}\n'
ERROR = b'{"error":{"code":"sql.error","message":"boom","query_id":"q-1"}}\n'


@pytest.fixture(params=[False, True], ids=["whole", "byte-by-byte"])
def pair(request: pytest.FixtureRequest) -> ProtocolPair:
    p = ProtocolPair(byte_by_byte=request.param)
    p.handshake()
    return p


def raw(conn: Connection, ftype: FrameType, stream_id: int, payload: bytes) -> None:
    conn.receive_data(encode_frame(Frame(ftype, stream_id, payload)))


def goaway_sent_by(conn: Connection) -> dict[str, object]:
    data = conn.data_to_send()
    assert data[1] == FrameType.GOAWAY
    return json.loads(data[12:])  # type: ignore[no-any-return]


# -- happy paths ---------------------------------------------------------------------------------


def test_handshake_state(pair: ProtocolPair) -> None:
    for side in (pair.relay, pair.connector):
        assert side.state is ConnectionState.OPEN
        assert side.session_id == SESSION_ID
        assert side.max_streams == 128
    assert pair.relay.max_frame == pair.connector.limits.max_frame
    assert pair.connector.max_frame == pair.relay.limits.max_frame


def test_buffered_counts_the_bytes_of_a_partial_frame() -> None:
    p = ProtocolPair()
    p.handshake()
    frame = encode_frame(Frame(FrameType.PING, 0, b"12345678"))
    p.relay.receive_data(frame[:5])
    assert p.relay.buffered == 5
    p.relay.receive_data(frame[5:])
    assert p.relay.buffered == 0
    assert [type(e) for e in p.relay.events()] == [events.Ping]


def test_has_data_to_send_tells_whether_data_to_send_has_bytes() -> None:
    p = ProtocolPair()
    p.handshake()
    assert not p.relay.has_data_to_send
    p.relay.send(events.Ping(b"12345678"))
    assert p.relay.has_data_to_send
    assert p.relay.data_to_send()
    assert not p.relay.has_data_to_send
    assert p.relay.data_to_send() == b""


def test_negotiated_limits_and_caps() -> None:
    p = ProtocolPair(relay_limits=Limits(max_streams=10))
    [hello] = p.send(p.relay, events.Hello(hello_fields(p.relay.limits, ("a", "b"))))
    assert isinstance(hello, events.Hello)
    assert (hello.tunnel, hello.connector_id, hello.relay_key_id) == (
        "tunnel-test",
        CONNECTOR_ID,
        "relay-test-1",
    )
    assert hello.caps == ("a", "b")
    assert hello.limits == Limits(max_streams=10)
    assert p.relay.max_statement_bytes == 256 * 1024  # the default until READY says otherwise
    ready = events.Ready(CONNECTOR_ID, 4, ("b", "c"), max_frame=65536, max_statement_bytes=70_000)
    p.send(p.connector, ready)
    assert p.relay.caps == p.connector.caps == frozenset({"b"})
    assert p.relay.max_streams == p.connector.max_streams == 4
    assert p.relay.max_frame == 65536
    assert p.relay.max_statement_bytes == 70_000


def test_query_result_stream(pair: ProtocolPair) -> None:
    relay, conn = pair.relay, pair.connector
    assert relay.can_open_stream()
    assert not conn.can_open_stream()
    pair.query(1)
    assert relay.open_streams() == conn.open_streams() == {1}
    assert relay.open_stream_count == conn.open_stream_count == 1
    assert relay.is_open(1)
    assert conn.is_open(1)
    assert not conn.is_open(2)
    assert conn.send_window(1) == 1024 * 1024
    got = pair.send(
        conn,
        events.Columns(1, COLUMNS),
        events.Rows(1, b"[1]\n[2]\n"),
        events.Columns(1, COLUMNS),
        events.Done(1, DONE),
    )
    assert got == [
        events.Columns(1, COLUMNS),
        events.Rows(1, b"[1]\n[2]\n"),
        events.Columns(1, COLUMNS),
        events.Done(1, DONE),
    ]
    # KEY INVARIANT: the payloads concatenate to the HTTP NDJSON body.
    body = b"".join(
        e.data for e in got if isinstance(e, events.Columns | events.Rows | events.Done)
    )
    assert [json.loads(line) for line in body.splitlines()][-1]["done"]["rows"] == 2
    assert relay.open_streams() == conn.open_streams() == frozenset()
    assert relay.open_stream_count == conn.open_stream_count == 0
    assert not relay.is_open(1)
    assert not conn.is_open(1)
    assert conn.send_window(1) == 0


def test_error_ends_stream_from_open(pair: ProtocolPair) -> None:
    pair.query(1)
    assert pair.send(pair.connector, events.Error(1, ERROR)) == [events.Error(1, ERROR)]
    assert not pair.relay.open_streams()


def test_cancel_then_late_cancel_and_credit_are_dropped(pair: ProtocolPair) -> None:
    pair.query(1)
    assert pair.send(pair.relay, events.Cancel(1, "client gone")) == [
        events.Cancel(1, "client gone")
    ]
    assert pair.send(pair.relay, events.Cancel(1)) == [events.Cancel(1)]
    pair.relay.send(events.Cancel(1))  # in flight while the connector ends the stream
    pair.relay.send(events.Credit(1, 100))
    pair.send(pair.connector, events.Error(1, ERROR))
    assert pair.pipe(pair.relay) == []  # late CANCEL and CREDIT: dropped without an event


def test_ping_is_answered_automatically(pair: ProtocolPair) -> None:
    assert pair.send(pair.relay, events.Ping(b"12345678")) == [events.Ping(b"12345678")]
    assert pair.pipe(pair.connector) == [events.Pong(b"12345678")]
    assert pair.send(pair.connector, events.Ping(b"abcdefgh")) == [events.Ping(b"abcdefgh")]
    assert pair.pipe(pair.relay) == [events.Pong(b"abcdefgh")]


def test_data_to_send_max_bytes() -> None:
    conn = Connection(Role.RELAY)
    conn.send(events.GoAway("internal", "x", 0))
    one = len(encode_frame(Frame(FrameType.GOAWAY, 0, b"{}")))
    assert len(conn.data_to_send(max_bytes=1)) > one  # at least one frame, even if larger
    p = ProtocolPair()
    p.handshake()
    for i in range(3):
        p.relay.send(events.Ping(b"%08d" % i))
    first = p.relay.data_to_send(max_bytes=40)
    assert len(first) == 40  # two 20-byte frames
    assert len(p.relay.data_to_send(max_bytes=40)) == 20
    assert p.relay.data_to_send() == b""


def test_stream_ids_may_skip(pair: ProtocolPair) -> None:
    pair.query(5)
    assert pair.relay.last_stream_id == 5
    assert pair.relay.next_stream_id == 6


# -- flow control --------------------------------------------------------------------------------

SMALL = Limits(max_frame=16384, stream_window=32768, connection_window=49152, max_streams=4)


def flow_pair() -> ProtocolPair:
    p = ProtocolPair(relay_limits=SMALL)
    p.handshake()
    p.query(1)
    p.send(p.connector, events.Columns(1, COLUMNS))
    p.relay.consumed(1, len(COLUMNS))
    return p


def rows(n: int) -> bytes:
    return b"[" + b"1" * (n - 3) + b"]\n"


def test_windows_shrink_and_credit_restores() -> None:
    p = flow_pair()
    conn, relay = p.connector, p.relay
    assert conn.send_window(1) == 32768 - len(COLUMNS)
    p.send(conn, events.Rows(1, rows(16384)))
    assert relay.data_to_send() == b""  # below half a window consumed: no CREDIT yet
    relay.consumed(1, 16384)
    got = p.pipe(relay)
    assert got == [events.Credit(1, 16384 + len(COLUMNS))]
    assert conn.send_window(1) == 49152 - 16384 - len(COLUMNS)  # now the connection window binds


def test_connection_window_limits_all_streams() -> None:
    p = flow_pair()
    p.query(2)
    conn, relay = p.connector, p.relay
    p.send(conn, events.Rows(1, rows(16384)), events.Rows(1, rows(16384 - len(COLUMNS))))
    assert conn.send_window(1) == 0
    assert conn.send_window(2) == 49152 - 32768  # the connection window binds
    p.send(conn, events.Columns(2, COLUMNS))
    relay.consumed(1, 32768 - len(COLUMNS))
    relay.consumed(2, 0)
    credits = p.pipe(relay)
    assert events.Credit(0, 32768) in credits
    assert events.Credit(1, 32768) in credits


def test_sending_beyond_the_window_is_a_local_error() -> None:
    p = flow_pair()
    p.send(p.connector, events.Rows(1, rows(16384)), events.Rows(1, rows(16000)))
    with pytest.raises(LocalProtocolError, match="exceed the send window"):
        p.connector.send(events.Rows(1, rows(1000)))
    assert p.connector.state is ConnectionState.ERROR
    with pytest.raises(LocalProtocolError, match="failed earlier"):
        p.connector.send(events.Rows(1, b"[1]\n"))


def test_peer_overrunning_the_window_is_a_remote_error() -> None:
    p = flow_pair()
    relay = p.relay
    raw(relay, FrameType.ROWS, 1, rows(16384))
    raw(relay, FrameType.ROWS, 1, rows(16000))
    with pytest.raises(RemoteProtocolError, match="exceed the send window"):
        raw(relay, FrameType.ROWS, 1, rows(1000))
    assert goaway_sent_by(relay)["code"] == "protocol.error"


def test_explicit_credit_and_overflow() -> None:
    p = flow_pair()
    assert p.send(p.relay, events.Credit(0, 1000)) == [events.Credit(0, 1000)]
    with pytest.raises(LocalProtocolError, match="overflows"):
        p.relay.send(events.Credit(1, 2**31 - 1))
    for stream_id in (0, 1):
        q = flow_pair()
        with pytest.raises(RemoteProtocolError, match=f"CREDIT on stream {stream_id} overflows"):
            raw(q.connector, FrameType.CREDIT, stream_id, (2**31 - 1).to_bytes(4, "big"))


def test_consumed_misuse() -> None:
    p = flow_pair()
    with pytest.raises(LocalProtocolError, match="never opened"):
        p.relay.consumed(9, 1)
    p = flow_pair()
    with pytest.raises(LocalProtocolError, match="only 0 are unconsumed"):
        p.relay.consumed(1, 1)
    p = flow_pair()
    with pytest.raises(LocalProtocolError, match="only the relay"):
        p.connector.consumed(1, 1)
    with pytest.raises(LocalProtocolError, match="flow-controlled"):
        p.relay.send_window(1)


def test_consumed_after_stream_end_credits_the_connection() -> None:
    p = flow_pair()
    p.send(p.connector, events.Rows(1, rows(16384)), events.Rows(1, rows(10000)))
    p.send(p.connector, events.Done(1, DONE))
    with pytest.raises(LocalProtocolError):
        p.relay.consumed(1, 26385)
    p = flow_pair()
    p.send(p.connector, events.Rows(1, rows(16384)), events.Rows(1, rows(10000)))
    p.send(p.connector, events.Done(1, DONE))
    p.relay.consumed(1, 26384)
    assert p.pipe(p.relay) == [events.Credit(0, 26384 + len(COLUMNS))]


def test_max_frame_on_send() -> None:
    p = ProtocolPair(relay_limits=SMALL)
    p.handshake()
    p.query(1)
    p.send(p.connector, events.Columns(1, COLUMNS))
    with pytest.raises(LocalProtocolError, match="max frame payload 16384") as info:
        p.connector.send(events.Rows(1, rows(16385)))
    assert info.value.error_code is ErrorCode.LIMITS_RESULT_TOO_LARGE
    assert p.connector.state is ConnectionState.OPEN  # still usable: nothing was queued
    assert p.send(p.connector, events.Rows(1, rows(16384))) == [events.Rows(1, rows(16384))]


def test_oversized_query_is_refused_without_breaking_the_connection() -> None:
    p = ProtocolPair(connector_limits=SMALL)
    p.handshake()
    with pytest.raises(LocalProtocolError) as info:
        p.relay.send(make_query(1, params={"blob": "x" * 20000}))
    assert info.value.error_code is ErrorCode.REQUEST_TOO_LARGE
    assert p.relay.can_open_stream()
    p.query(1)


def test_max_frame_on_receive() -> None:
    conn = Connection(Role.CONNECTOR, limits=SMALL)
    with pytest.raises(RemoteProtocolError) as info:
        conn.receive_data(bytes([1, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0x40, 0x01]))
    assert info.value.close_code is CloseCode.MESSAGE_TOO_BIG


# -- stream rules --------------------------------------------------------------------------------


def test_max_concurrent_streams() -> None:
    p = ProtocolPair()
    p.handshake(max_streams=2)
    p.query(1)
    p.query(2)
    assert not p.relay.can_open_stream()
    with pytest.raises(LocalProtocolError, match="2 concurrent streams") as info:
        p.relay.send(make_query(3))
    assert info.value.error_code is ErrorCode.LIMITS_TOO_MANY_QUERIES
    p = ProtocolPair()
    p.handshake(max_streams=1)
    p.query(1)
    with pytest.raises(RemoteProtocolError, match="1 concurrent streams"):
        p.connector.receive_data(encode_frame(Frame(FrameType.QUERY, 2, query_payload(2))))


def query_payload(stream_id: int) -> bytes:
    conn = Connection(Role.RELAY)
    conn.send(events.Hello(hello_fields()))
    conn.receive_data(
        encode_frame(Frame(FrameType.READY, 0, b'{"connector_id":"c","max_streams":9,"caps":[]}'))
    )
    conn.data_to_send()
    conn.send(make_query(stream_id))
    return conn.data_to_send()[12:]


def test_stream_ids_strictly_increase(pair: ProtocolPair) -> None:
    pair.query(3)
    with pytest.raises(LocalProtocolError, match="not above the last one"):
        pair.relay.send(make_query(3))
    with pytest.raises(RemoteProtocolError, match="not above the last one"):
        pair.connector.receive_data(encode_frame(Frame(FrameType.QUERY, 2, query_payload(2))))


@pytest.mark.parametrize(
    ("sender", "frame", "message"),
    [
        ("connector", Frame(FrameType.QUERY, 1, b"{}"), "may not be sent by the connector"),
        ("relay", Frame(FrameType.ROWS, 1, b"[1]\n"), "may not be sent by the relay"),
        ("relay", Frame(FrameType.PING, 1, b"12345678"), "must be sent on stream 0"),
        ("connector", Frame(FrameType.DONE, 0, DONE), "must be sent on a stream, not 0"),
        ("connector", Frame(FrameType.ROWS, 1, b"[1]\n"), "stream 1, which is not open"),
        ("relay", Frame(FrameType.CANCEL, 4, b""), "stream 4, which is not open"),
        ("relay", Frame(FrameType.HELLO, 0, b""), "not allowed in state open"),
    ],
)
def test_frame_rules(pair: ProtocolPair, sender: str, frame: Frame, message: str) -> None:
    receiver = pair.connector if sender == "relay" else pair.relay
    payload = frame.payload
    if frame.type is FrameType.HELLO:
        payload = json.dumps(hello_fields()).encode()
    with pytest.raises(RemoteProtocolError, match=message):
        receiver.receive_data(encode_frame(Frame(frame.type, frame.stream_id, payload)))
    assert receiver.state is ConnectionState.ERROR


def test_rows_before_columns_and_after_done(pair: ProtocolPair) -> None:
    pair.query(1)
    with pytest.raises(LocalProtocolError, match="ROWS is not allowed on stream 1 in state open"):
        pair.connector.send(events.Rows(1, b"[1]\n"))
    p = ProtocolPair()
    p.handshake()
    p.query(1)
    p.send(p.connector, events.Done(1, DONE))
    with pytest.raises(RemoteProtocolError, match="not open"):
        raw(p.relay, FrameType.ERROR, 1, ERROR)


def test_local_cancel_on_closed_stream_is_an_error(pair: ProtocolPair) -> None:
    pair.query(1)
    pair.send(pair.connector, events.Done(1, DONE))
    with pytest.raises(LocalProtocolError, match="not open"):
        pair.relay.send(events.Cancel(1))


# -- handshake rules -----------------------------------------------------------------------------


def test_handshake_order() -> None:
    conn = Connection(Role.CONNECTOR)
    with pytest.raises(LocalProtocolError, match="READY is not allowed in state await_hello"):
        conn.send(events.Ready(CONNECTOR_ID, 1))
    relay = Connection(Role.RELAY)
    with pytest.raises(LocalProtocolError, match="QUERY is not allowed in state await_hello"):
        relay.send(make_query(1))
    relay = Connection(Role.RELAY)
    with pytest.raises(RemoteProtocolError, match="READY is not allowed in state await_hello"):
        raw(relay, FrameType.READY, 0, b'{"connector_id":"c","max_streams":1,"caps":[]}')
    conn = Connection(Role.CONNECTOR)
    with pytest.raises(RemoteProtocolError, match="PING is not allowed in state await_hello"):
        raw(conn, FrameType.PING, 0, b"12345678")


def test_hello_limits_must_match_the_relay() -> None:
    relay = Connection(Role.RELAY)
    with pytest.raises(LocalProtocolError, match="HELLO limits"):
        relay.send(events.Hello(hello_fields(Limits(max_streams=3))))


def test_ready_max_frame_may_not_exceed_own_limit() -> None:
    p = ProtocolPair()
    p.send(p.relay, events.Hello(hello_fields()))
    with pytest.raises(LocalProtocolError, match="READY max_frame"):
        p.connector.send(events.Ready(CONNECTOR_ID, 1, max_frame=2 * 1024 * 1024))


def test_goaway_first_is_allowed_and_ends_sending() -> None:
    p = ProtocolPair()
    p.send(p.relay, events.Hello(hello_fields()))
    rejected = events.GoAway("auth.relay_rejected", "HELLO signature does not verify", 0)
    assert p.send(p.connector, rejected) == [rejected]
    with pytest.raises(LocalProtocolError, match="after GOAWAY"):
        p.connector.send(events.Ping(b"12345678"))
    with pytest.raises(RemoteProtocolError, match="PING frame after GOAWAY"):
        raw(p.relay, FrameType.PING, 0, b"12345678")
    p.relay.receive_eof()
    assert p.relay.events() == [events.ConnectionLost(clean=False)]  # it failed


def test_no_pong_after_own_goaway(pair: ProtocolPair) -> None:
    pair.connector.send(events.GoAway("connector.draining", "bye", 0))
    pair.connector.data_to_send()
    raw(pair.connector, FrameType.PING, 0, b"12345678")
    assert pair.connector.data_to_send() == b""


def test_drain(pair: ProtocolPair) -> None:
    relay, conn = pair.relay, pair.connector
    assert pair.send(conn, events.Drain("maintenance")) == [events.Drain("maintenance")]
    assert not relay.can_open_stream()
    with pytest.raises(LocalProtocolError, match="after DRAIN") as info:
        relay.send(make_query(1))
    assert info.value.error_code is ErrorCode.CONNECTOR_DRAINING


def test_relay_drain(pair: ProtocolPair) -> None:
    pair.relay.send(events.Drain("deploy"))
    with pytest.raises(LocalProtocolError, match="after DRAIN"):
        pair.relay.send(make_query(1))
    p = ProtocolPair()
    p.handshake()
    p.send(p.relay, events.Drain("deploy"))
    with pytest.raises(RemoteProtocolError, match="after DRAIN"):
        p.connector.receive_data(encode_frame(Frame(FrameType.QUERY, 1, query_payload(1))))


def test_connector_drain_does_not_refuse_queries_in_flight(pair: ProtocolPair) -> None:
    pair.relay.send(make_query(1))  # crosses the connector's DRAIN
    pair.connector.send(events.Drain(""))
    assert [type(e) for e in pair.pipe(pair.connector)] == [events.Drain]
    assert [type(e) for e in pair.pipe(pair.relay)] == [events.Query]


def test_goaway_blocks_new_streams(pair: ProtocolPair) -> None:
    pair.send(pair.connector, events.GoAway("internal", "", 0))
    assert not pair.relay.can_open_stream()
    p = ProtocolPair()
    p.handshake()
    p.relay.send(events.GoAway("internal", "", 0))
    assert not p.relay.can_open_stream()


# -- errors and EOF ------------------------------------------------------------------------------


def test_remote_error_queues_goaway_once_and_fails_fast(pair: ProtocolPair) -> None:
    pair.query(1)
    with pytest.raises(RemoteProtocolError, match="invalid ROWS payload"):
        raw(pair.relay, FrameType.ROWS, 1, b"no newline")
    assert goaway_sent_by(pair.relay) == {
        "code": "protocol.error",
        "message": "invalid ROWS payload: ROWS must be one or more non-empty lines, "
        'each ending in "\\n"',
        "last_stream": 1,
    }
    with pytest.raises(LocalProtocolError, match="failed earlier"):
        pair.relay.receive_data(b"")
    with pytest.raises(LocalProtocolError, match="failed earlier"):
        pair.relay.consumed(1, 0)
    pair.relay.receive_eof()  # the clean-up path still works
    lost, end = pair.relay.events()
    assert isinstance(lost, events.Error)
    assert b'"transport.lost"' in lost.data
    assert end == events.ConnectionLost(clean=False)
    assert pair.relay.state is ConnectionState.ERROR


def test_no_second_goaway_after_own_goaway(pair: ProtocolPair) -> None:
    pair.relay.send(events.GoAway("internal", "", 0))
    pair.relay.data_to_send()
    with pytest.raises(RemoteProtocolError):
        raw(pair.relay, FrameType.PONG, 0, b"short")
    assert pair.relay.data_to_send() == b""


def test_events_before_the_bad_frame_are_kept(pair: ProtocolPair) -> None:
    good = encode_frame(Frame(FrameType.PING, 0, b"12345678"))
    with pytest.raises(RemoteProtocolError):
        pair.relay.receive_data(good + b"\x02" + b"\0" * 11)
    assert pair.relay.events() == [events.Ping(b"12345678")]


def test_eof_ends_open_streams_with_transport_lost(pair: ProtocolPair) -> None:
    pair.query(1)
    pair.query(2)
    pair.send(pair.connector, events.Done(1, DONE))
    pair.query(3)
    for side in (pair.relay, pair.connector):
        side.receive_eof()
        got = side.events()
        assert [type(e) for e in got] == [events.Error, events.Error, events.ConnectionLost]
        assert [e.stream_id for e in got[:2]] == [2, 3]  # type: ignore[attr-defined]
        record = json.loads(got[0].data)  # type: ignore[attr-defined]
        assert record["error"]["code"] == "transport.lost"
        assert record["error"]["query_id"] == "q-2"
        assert got[2] == events.ConnectionLost(clean=False)
        assert side.state is ConnectionState.CLOSED
        assert not side.open_streams()
        with pytest.raises(LocalProtocolError, match="already ended"):
            side.receive_data(b"x")
        with pytest.raises(LocalProtocolError, match="already called"):
            side.receive_eof()


def test_eof_with_partial_frame_is_not_clean(pair: ProtocolPair) -> None:
    pair.send(pair.relay, events.GoAway("internal", "", 0))
    pair.connector.receive_eof()
    assert pair.connector.events() == [events.ConnectionLost(clean=True)]
    p = ProtocolPair()
    p.handshake()
    p.relay.send(events.GoAway("internal", "", 0))
    p.relay.receive_data(b"\x01")
    p.relay.receive_eof()
    assert p.relay.events() == [events.ConnectionLost(clean=False)]


def test_unsendable_and_invalid_events(pair: ProtocolPair) -> None:
    with pytest.raises(LocalProtocolError, match="not a sendable event"):
        pair.relay.send(events.ConnectionLost(clean=True))
    assert pair.relay.state is ConnectionState.ERROR
    # an event whose fields do not encode is refused with nothing queued, and the connection
    # carries on (one bad request must not end every stream of it)
    p = ProtocolPair()
    p.handshake()
    with pytest.raises(LocalProtocolError, match="invalid Ping event"):
        p.relay.send(events.Ping(b"short"))
    for params in ({"x": object()}, {"x": float("inf")}, {"x": "\ud800"}):
        with pytest.raises(LocalProtocolError, match="invalid Query event"):
            p.relay.send(events.Query(1, "q", "t", "select 1", None, params, {}, {}))
        assert p.relay.state is ConnectionState.OPEN
        assert not p.relay.has_data_to_send
    p.query(1)
    p.connector.send(events.Columns(1, b'{"columns":[]}\n'))
    p.relay.receive_data(p.connector.data_to_send())
    assert [type(e) for e in p.relay.events()] == [events.Columns]


def test_query_event_repr_hides_token_and_params() -> None:
    query = make_query(1, token="SECRET-TOKEN", params={"ssn": "123-45-6789"})
    assert "SECRET-TOKEN" not in repr(query)
    assert "123-45-6789" not in repr(query)
    assert "SECRET" not in repr(events.Rows(1, b'["SECRET"]\n'))


def test_a_draining_refusal_is_the_connectors_drain() -> None:
    p = ProtocolPair()
    p.handshake()
    p.query(1)
    assert not p.relay.peer_draining
    record = error_record(ErrorCode.CONNECTOR_DRAINING, "draining", query_id="q-1")
    p.connector.send(events.Error(1, record))
    p.pipe(p.connector)
    assert p.relay.peer_draining
    assert not p.relay.can_open_stream()
    with pytest.raises(LocalProtocolError) as info:
        p.relay.send(make_query(2))
    assert info.value.error_code is ErrorCode.CONNECTOR_DRAINING
