"""Payload validation (the codec), records, limits, error codes, strict JSON, and the fuzz invariant
for whole connections: any bytes either parse or raise RemoteProtocolError, nothing else."""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import protocol
from protocol import (
    DEFAULT_STATEMENT_BYTES,
    Connection,
    ErrorCode,
    Frame,
    FrameType,
    Limits,
    RemoteProtocolError,
    Role,
    _json,
    canonical_json,
    done_record,
    encode_frame,
    error_record,
    events,
    http_status,
    ndjson_line,
    param_type,
    parse_error_record,
)
from protocol._codec import decode, encode
from protocol._json import loads_object
from tests.protocol.helpers import ProtocolPair, hello_fields, make_query

QUERY = json.loads(encode(make_query(1)).payload)


def query_with(**changes: Any) -> Frame:
    return Frame(FrameType.QUERY, 1, canonical_json({**QUERY, **changes}))


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (query_with(query_id=""), '"query_id" must not be empty'),
        (query_with(query_id=5), '"query_id" must be a string'),
        (query_with(token=None), '"token" must be a string'),
        (query_with(sql=None), "exactly one of"),
        (query_with(params=[]), '"params" must be an object'),
        (query_with(options=None), '"options" must be an object'),
        (query_with(options={"max_rows": -1}), '"max_rows" must be an integer'),
        (query_with(options={"timeout_ms": True}), '"timeout_ms" must be an integer'),
        (query_with(attestation="x"), '"attestation" must be an object'),
        (Frame(FrameType.HELLO, 0, canonical_json({**hello_fields(), "caps": "x"})), '"caps"'),
        (Frame(FrameType.HELLO, 0, canonical_json({**hello_fields(), "limits": 1})), '"limits"'),
        (Frame(FrameType.HELLO, 0, canonical_json({**hello_fields(), "version": True})), "be 1"),
        (Frame(FrameType.HELLO, 0, canonical_json({**hello_fields(), "sig": 1})), '"sig"'),
        (Frame(FrameType.READY, 0, b'{"connector_id":"c","max_streams":1,"caps":[1]}'), '"caps"'),
        (
            Frame(
                FrameType.READY,
                0,
                b'{"connector_id":"c","max_streams":1,"caps":[],"max_frame":1000}',
            ),
            '"max_frame"',
        ),  # fmt: skip
        (Frame(FrameType.CANCEL, 1, b'{"reason":5}'), '"reason" must be a string'),
        (Frame(FrameType.COLUMNS, 1, b'{"columns":{}}\n'), '"columns" member'),
        (Frame(FrameType.DONE, 1, b"[]\n"), "expected a JSON object"),
        (Frame(FrameType.GOAWAY, 0, b'{"code":1,"last_stream":0}'), '"code"'),
        (Frame(FrameType.GOAWAY, 0, b'{"code":"x","last_stream":4294967296}'), '"last_stream"'),
        (Frame(FrameType.DRAIN, 0, b'{"reason":"x"} x'), "Extra data"),
        (Frame(FrameType.DRAIN, 0, b"[" * 100000 + b"]" * 100000), "nested too deeply"),
    ],
)
def test_invalid_payloads(frame: Frame, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        decode(frame)


def test_encode_validates_like_decode() -> None:
    with pytest.raises(ValueError, match="does not fit in a u32"):
        encode(events.Credit(1, 2**32))
    assert encode(events.Drain()).payload == b'{"reason":""}'
    assert decode(Frame(FrameType.DRAIN, 0, b"{}")) == events.Drain("")
    assert decode(Frame(FrameType.GOAWAY, 0, b'{"code":"x","last_stream":3}')) == events.GoAway(
        "x", "", 3
    )
    hello = decode(Frame(FrameType.HELLO, 0, canonical_json(hello_fields())))
    assert isinstance(hello, events.Hello)
    assert hello.nonce == hello_fields()["nonce"]
    ready = decode(Frame(FrameType.READY, 0, b'{"connector_id":"c","max_streams":3,"caps":[]}'))
    assert ready == events.Ready("c", 3, (), 1024 * 1024)
    # a READY without max_statement_bytes (a connector that predates it): the 256 KiB default
    assert isinstance(ready, events.Ready)
    assert ready.max_statement_bytes == DEFAULT_STATEMENT_BYTES == 256 * 1024
    for bad in (0, 16 * 1024 * 1024 + 1, "1", True):
        payload = canonical_json(
            {"connector_id": "c", "max_streams": 3, "caps": [], "max_statement_bytes": bad}
        )
        with pytest.raises(ValueError, match="max_statement_bytes"):
            decode(Frame(FrameType.READY, 0, payload))


def test_loads_object_is_strict() -> None:
    assert loads_object(b' {"a": 1} ') == {"a": 1}
    for bad in (b'{"a":1,"a":2}', b'{"a":Infinity}', b"\xff", b"1", b""):
        with pytest.raises(ValueError, match="duplicate|constant|utf-8|object|Expecting"):
            loads_object(bad)


@pytest.mark.parametrize(
    "data",
    [
        b'{"a": [1, 2.5, "x", null, true, {"b": -0}]}',
        b"\xef\xbb\xbf{}",  # a UTF-8 BOM
        b'{"a":1,"a":2}',
        b'{"a":NaN}',
        b'{"a":-Infinity}',
        b'{"a":1e400}',
        b'{"a":1',
        b"[1]",
        b"\xff",
        b"",
        b"[" * 100_000,
    ],
)
def test_loads_object_answers_as_json_loads_with_its_hooks(data: bytes) -> None:
    """The shared decoder refuses and reads exactly as json.loads given the same hooks did."""

    def reference() -> Any:
        value = json.loads(
            data.decode("utf-8"),
            parse_constant=_json._refuse_constant,
            parse_float=_json._finite_float,
            parse_int=_json._double_range_int,
            object_pairs_hook=_json._unique_object,
        )
        if not isinstance(value, dict):
            raise ValueError("not an object")
        return value

    try:
        expected: Any = reference()
    except RecursionError:
        expected = ValueError
    except ValueError as exc:
        expected = (type(exc), str(exc))
    try:
        got: Any = loads_object(data)
    except ValueError as exc:
        got = ValueError if "nested too deeply" in str(exc) else (type(exc), str(exc))
        if "expected a JSON object" in str(exc):
            got = (ValueError, "not an object")
    assert got == expected


@pytest.mark.parametrize(
    "number",
    [b"1e400", b"-1E400", b"1.7976931348623159e308", b"2" + b"0" * 308, b"-2" + b"0" * 308],
)
def test_numbers_beyond_a_double_are_refused(number: bytes) -> None:
    """JavaScript reads each as Infinity (Python: inf, or the integer exactly)."""
    with pytest.raises(ValueError, match="beyond the range of a double"):
        loads_object(b'{"params": {"x": [' + number + b"]}}")


@pytest.mark.parametrize(
    ("number", "value"),
    [
        (b"1e308", 1e308),
        (b"1.7976931348623157e308", 1.7976931348623157e308),  # the largest double
        (b"-1.7976931348623157E308", -1.7976931348623157e308),
        (b"1" + b"0" * 308, 10**308),  # 309 digits, still a double to JavaScript
        (b"9" * 308, int("9" * 308)),
        (b"1e-400", 0.0),  # underflow is a double (0), in both languages
    ],
)
def test_numbers_a_double_holds_are_read(number: bytes, value: float) -> None:
    assert loads_object(b'{"x": ' + number + b"}") == {"x": value}


def test_canonical_json_never_writes_nan_or_infinity() -> None:
    for bad in (float("nan"), float("inf"), -float("inf")):
        with pytest.raises(ValueError, match="not JSON compliant"):
            protocol.canonical_json({"x": bad})


def test_records_round_trip() -> None:
    done = done_record(rows=3, result_sets=1, elapsed_ms=12, query_id="q")
    assert json.loads(done) == {
        "done": {"rows": 3, "result_sets": 1, "elapsed_ms": 12, "query_id": "q"}
    }
    assert done.endswith(b"\n")
    assert done.count(b"\n") == 1
    line = error_record(
        ErrorCode.SQL_ERROR,
        "Invalid object name",
        query_id="q",
        sql={"number": 208, "state": 1, "class": 16},
    )
    record = parse_error_record(line)
    assert (record.code, record.query_id, record.sql) == (
        "sql.error",
        "q",
        {"number": 208, "state": 1, "class": 16},
    )
    assert parse_error_record(error_record(ErrorCode.INTERNAL, "x")).sql is None


@pytest.mark.parametrize(
    "line",
    [
        b'{"done":{}}',
        b'{"error":{"code":"x"}}',
        b'{"error":{"code":"x","message":"m","query_id":5}}',
        b'{"error":{"code":"x","message":"m","sql":[]}}',
    ],
)
def test_parse_error_record_rejects(line: bytes) -> None:
    with pytest.raises(ValueError, match="record|string or null"):
        parse_error_record(line)


@pytest.mark.parametrize(
    ("value", "sql_type"),
    [
        (None, None),
        (True, "bit"),
        (7, "bigint"),
        (1.5, "float"),
        ("x", "nvarchar(max)"),
        ({"type": "Decimal(18, 4)", "value": "1.5000"}, "decimal(18,4)"),
        ({"type": "varbinary(max)", "value": "AAE="}, "varbinary(max)"),
        ({"type": "uniqueidentifier", "value": None}, "uniqueidentifier"),
        ({"type": "int"}, "int"),  # no value: a typed NULL
    ],
)
def test_param_type(value: Any, sql_type: str | None) -> None:
    assert param_type(value) == sql_type


@pytest.mark.parametrize(
    "value",
    [
        [1],
        {"value": 1},
        {"type": "sql_variant", "value": "x"},
        {"type": 5, "value": "x"},
        {"type": "int", "value": [1]},
        {"type": "decimal(18,4", "value": "1"},
        {
            "type": "decimal(\u0661\u0668)",
            "value": "1",
        },  # digits are ASCII, as the Worker reads them
    ],
)
def test_param_type_rejects(value: Any) -> None:
    with pytest.raises(ValueError, match="parameter"):
        param_type(value)


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("request.invalid", 400),
        ("request.too_large", 413),
        ("auth.expired", 401),
        ("auth.replay", 401),
        ("policy.denied", 403),
        ("policy.unknown_query", 404),
        ("policy.check_timeout", 413),
        ("tunnel.unknown", 404),
        ("tunnel.no_connector", 503),
        ("sql.error", 422),
        ("query.timeout", 504),
        ("limits.rate_limited", 429),
        ("transport.lost", 502),
        ("internal", 500),
        ("auth.some_future_code", 401),
        ("something.else", 500),
    ],
)
def test_http_status(code: str, status: int) -> None:
    assert http_status(code) == status


def test_every_error_code_has_a_status() -> None:
    assert all(400 <= http_status(code) <= 504 for code in ErrorCode)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_frame": 1.5}, "must be an integer"),
        ({"max_frame": 1000}, "max_frame must be in"),
        ({"max_frame": 32 * 1024 * 1024}, "max_frame must be in"),
        ({"stream_window": 1000}, "must satisfy"),
        ({"connection_window": 2**31}, "must satisfy"),
        ({"max_streams": 0}, "max_streams must be in"),
    ],
)
def test_limits_validation(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Limits(**kwargs)


def test_limits_json() -> None:
    assert Limits.from_json(Limits().to_json()) == Limits()
    with pytest.raises(ValueError, match="missing"):
        Limits.from_json({"max_frame": 16384})


# -- the fuzz invariant on whole connections -----------------------------------------------------


def opened(role: Role) -> Connection:
    """A connection of ``role`` past the handshake with stream 1 open."""
    pair = ProtocolPair()
    pair.handshake()
    pair.query(1)
    return pair.relay if role is Role.RELAY else pair.connector


FRAME_BYTES = [
    encode_frame(encode(e))
    for e in (
        events.Hello(hello_fields()),
        events.Ready("c", 4),
        make_query(1),
        make_query(2),
        events.Cancel(1),
        events.Columns(1, b'{"columns":[]}\n'),
        events.Rows(1, b"[1]\n"),
        events.Done(1, b'{"done":{}}\n'),
        events.Error(2, b'{"error":{"code":"x"}}\n'),
        events.Credit(0, 5),
        events.Credit(1, 5),
        events.Ping(b"12345678"),
        events.Pong(b"12345678"),
        events.Drain("x"),
        events.GoAway("x", "", 0),
    )
]
chunks = st.lists(st.one_of(st.sampled_from(FRAME_BYTES), st.binary(max_size=24)), max_size=8).map(
    b"".join
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    st.sampled_from([Role.RELAY, Role.CONNECTOR]),
    st.booleans(),
    chunks,
    st.booleans(),
)
def test_fuzz_connection(role: Role, fresh: bool, data: bytes, byte_by_byte: bool) -> None:
    conn = Connection(role) if fresh else opened(role)
    try:
        if byte_by_byte:
            for i in range(len(data)):
                conn.receive_data(data[i : i + 1])
        else:
            conn.receive_data(data)
    except RemoteProtocolError:
        assert conn.data_to_send()  # a GOAWAY is always queued for the peer
        return
    conn.events()
    conn.receive_eof()
    assert isinstance(conn.events()[-1], events.ConnectionLost)


# -- event round trips ---------------------------------------------------------------------------

sid = st.integers(1, 2**32 - 1)
text = st.text(max_size=20)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=8,
)
lines = st.lists(
    st.lists(st.integers(-9, 9), max_size=3).map(lambda r: json.dumps(r).encode() + b"\n"),
    min_size=1,
    max_size=4,
).map(b"".join)
any_event = st.one_of(
    st.builds(events.Ready, text, st.integers(1, 65535), st.lists(text, max_size=3).map(tuple)),
    st.builds(
        events.Query,
        sid,
        text.filter(bool),
        text,
        text,
        st.none(),
        st.dictionaries(text, json_values, max_size=3),
        st.fixed_dictionaries({"max_rows": st.none() | st.integers(0, 10**6)}),
        st.dictionaries(text, json_values, max_size=3),
    ),
    st.builds(events.Cancel, sid, text),
    st.builds(events.Rows, sid, lines),
    st.builds(events.Credit, st.integers(0, 2**32 - 1), st.integers(1, 2**32 - 1)),
    st.builds(events.Ping, st.binary(min_size=8, max_size=8)),
    st.builds(events.Pong, st.binary(min_size=8, max_size=8)),
    st.builds(events.Drain, text),
    st.builds(events.GoAway, text, text, st.integers(0, 2**32 - 1)),
)


@given(any_event)
def test_event_round_trip(event: events.Event) -> None:
    assert decode(encode(event)) == event


def test_new_session_ids_are_valid_and_distinct() -> None:
    ids = {protocol.new_session_id() for _ in range(100)}
    assert len(ids) == 100
    for sid in ids:
        assert protocol.check_session({"id": sid, "op": "commit"}, has_statement=False) == "commit"


def test_built_record_lines_know_their_shape() -> None:
    """`ndjson_line` marks a line with the frame record it is valid for; anything else (another
    shape, NaN) is a plain line that `encode` checks as before."""
    from protocol._records import RecordLine, ndjson_line

    cases: list[tuple[dict[str, Any], str | None]] = [
        ({"columns": [{"name": "n", "type": "int"}]}, "columns"),
        ({"done": {"rows": 1}}, "done"),
        ({"error": {"code": "sql.error", "message": "m"}}, "error"),
        ({"error": {"code": 7}}, None),
        ({"columns": {}}, None),
        ({"done": []}, None),
        ({"done": {}, "extra": 1}, None),
        ({"other": 1}, None),
        ({"done": {"elapsed_ms": float("nan")}}, None),
    ]
    for obj, key in cases:
        line = ndjson_line(obj)
        assert isinstance(line, RecordLine)
        assert line.key == key
        assert line.endswith(b"\n")
        assert line.count(b"\n") == 1
    assert ndjson_line({"done": {"x": float("nan")}}) == b'{"done":{"x":NaN}}\n'
    assert done_record(rows=1, result_sets=1, elapsed_ms=2, query_id="q").key == "done"  # type: ignore[attr-defined]
    assert error_record(ErrorCode.SQL_ERROR, "m").key == "error"  # type: ignore[attr-defined]


def test_encode_skips_reparsing_built_lines_only() -> None:
    """A COLUMNS/DONE/ERROR event carrying a line `ndjson_line` built for that record is not
    parsed again when encoded; the same bytes as plain bytes, or under another frame type, are."""
    from protocol._records import RecordLine, ndjson_line

    done = ndjson_line({"done": {"rows": 1}})
    assert encode(events.Done(1, done)).payload == done
    assert encode(events.Done(1, bytes(done))).payload == done
    forged = RecordLine(b"not json\n")
    forged.key = "done"
    assert encode(events.Done(1, forged)).payload == forged  # trusted: built by ndjson_line
    with pytest.raises(ValueError, match="columns"):
        encode(events.Columns(1, done))  # a DONE line is no COLUMNS record
    with pytest.raises(ValueError, match="NaN"):
        encode(events.Done(1, ndjson_line({"done": {"x": float("nan")}})))
    rows = RecordLine(b"[1]\n")
    assert encode(events.Rows(1, rows)).payload == rows
    for bad in (b"[1]", b"\n[1]\n", b"[1]\n\n[2]\n"):  # what decode refuses, encode does too
        with pytest.raises(ValueError, match="ROWS must be"):
            encode(events.Rows(1, bad))


@pytest.mark.parametrize(
    "changes",
    [
        {},  # flat: checked without a parse
        {"params": {"a": {"b": 1}, "c": [1, "x"], "d": None, "e": 1.5, "f": True}},
        {"params": {"a": {"b": {"c": 1}}}},  # two levels down: parsed
        {"params": {"big": 10**300}},  # read back, but parsed: as long as a double allows
        {"params": {"big": -(10**400)}},  # beyond a double: refused
        {"params": {5: "x"}},  # a key JSON writes as a string
        {"params": {"a": {5: "x"}}},
        {"params": {"a": ErrorCode.SQL_ERROR}},  # a str subclass reads back as a str
        {"options": {"max_rows": True, "timeout_ms": 1}},  # bool: no integer
        {"options": {"max_rows": protocol.CloseCode.NORMAL, "timeout_ms": 1}},  # an IntEnum
        {"query_id": ""},
        {"query_id": ErrorCode.SQL_ERROR},
        {"sql": None},
        {"attestation": {"ts": 1.5, "sig": "x"}},
        {"token": ""},
        {"session": {"id": "s", "op": "begin", "isolation": "read committed"}},
        {"session": {"id": "s", "op": "bogus"}},
        {"session": {"id": "s", "op": "run"}, "sql": None, "query": None},
    ],
)
def test_encode_refuses_a_query_as_decode_refuses_its_payload(changes: dict[str, Any]) -> None:
    """A QUERY whose members read back as they are is checked without parsing its payload
    again: encode accepts exactly what decode of the same payload accepts, also for members
    that do not read back as they are (parsed then)."""
    query = make_query(1)
    fields = {f.name: getattr(query, f.name) for f in dataclasses.fields(query)} | changes
    event = events.Query(**fields)
    payload = canonical_json(
        {k: v for k, v in fields.items() if k != "stream_id" and (k != "session" or v)}
    )
    try:
        decoded: events.AnyEvent | None = decode(Frame(FrameType.QUERY, 1, payload))
        why = ""
    except ValueError as exc:
        decoded, why = None, str(exc)
    if decoded is None:
        with pytest.raises(ValueError, match=f"^{re.escape(why)}$"):
            encode(event)
    else:
        frame = encode(event)
        assert frame.payload == payload
        assert decode(frame) == decoded


def test_canonical_json_refuses_a_cycle_and_reads_deep_nesting_as_before() -> None:
    """The shared C encoder keeps no cycle markers: a cycle (or nesting past the recursion
    limit) is encoded again by json's own encoder, which says what is wrong."""
    looped: list[Any] = []
    looped.append(looped)
    with pytest.raises(ValueError, match="Circular reference"):
        canonical_json(looped)
    deep: list[Any] = []
    for _ in range(100):
        deep = [deep]
    assert canonical_json(deep) == b"[" * 101 + b"]" * 101
    assert canonical_json("h\u00e9\u2028") == '"h\u00e9\u2028"'.encode()  # a str: json's own path


_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.text(), _JSON_VALUES, max_size=5))
def test_the_shared_encoders_write_what_json_dumps_writes(obj: dict[str, Any]) -> None:
    """canonical_json and ndjson_line keep one json encoder each (json.dumps builds one per
    call): the bytes are json.dumps's, byte for byte."""
    try:
        expected = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        canonical = expected.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: refused either way
        with pytest.raises(UnicodeEncodeError):
            canonical_json(obj)
        return
    assert canonical_json(obj) == canonical
    line = json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    assert ndjson_line(obj) == line.encode("utf-8") + b"\n"
