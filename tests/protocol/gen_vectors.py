"""Generate protocol/vectors/*.json, the shared edgetds/1 test vectors (format: vectors/README.md).

Run from the repository root: ``.venv/bin/python -m tests.protocol.gen_vectors``. Output is
deterministic (Ed25519 signatures are, and every nonce/time is fixed), so a re-run that changes a
file means the protocol changed. The keys are the FIXED TEST KEYS of helpers.py: test-only.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from protocol import (
    CHECKPOINT_CAP,
    GENESIS,
    SESSION_CAP,
    AuthError,
    Connection,
    FrameReader,
    FrameType,
    Limits,
    ProtocolError,
    ReplayCache,
    Role,
    canonical_json,
    done_record,
    encode_frame,
    events,
    make_connector_token,
    sign_checkpoint,
    verify_attestation,
    verify_checkpoint,
    verify_connector_token,
    verify_hello,
    wire_registry,
)
from protocol._auth import HELLO_CONTEXT, QUERY_CONTEXT, b64url
from protocol._checkpoint import CHECKPOINT_CONTEXT
from protocol._codec import encode
from tests.protocol.gen_enroll import enroll_document
from tests.protocol.gen_id_tokens import id_token_document
from tests.protocol.helpers import (
    CONNECTOR_ID,
    CONNECTOR_KEY,
    CONNECTOR_SEED,
    NONCE,
    NOW,
    OTHER_KEY,
    OTHER_SEED,
    RELAY_KEY,
    RELAY_KEY_ID,
    RELAY_SEED,
    SESSION_ID,
    TUNNEL,
    hello_fields,
    make_query,
)

OUT = Path(__file__).resolve().parents[2] / "protocol" / "vectors"
MAX = 1024 * 1024
TEST_ONLY = "TEST-ONLY KEYS: these private seeds are public. Never use them outside tests."


def event_json(event: events.Event) -> dict[str, Any]:
    """An event as JSON: its class name plus its fields (bytes as text or hex)."""
    out: dict[str, Any] = {"event": type(event).__name__}
    for f in dataclasses.fields(event):
        value = getattr(event, f.name)
        if isinstance(value, bytes):
            if isinstance(event, events.Ping | events.Pong):
                out["data_hex"] = value.hex()
            else:
                out["data_text"] = value.decode("utf-8")
        elif isinstance(value, tuple):
            out[f.name] = list(value)
        else:
            out[f.name] = dict(value) if isinstance(value, dict) else value
    return out


def frame_json(data: bytes) -> dict[str, Any]:
    return {
        "version": data[0],
        "type": FrameType(data[1]).name if data[1] in set(FrameType) else None,
        "type_code": data[1],
        "flags": data[2],
        "reserved": data[3],
        "stream_id": int.from_bytes(data[4:8], "big"),
        "length": int.from_bytes(data[8:12], "big"),
    }


def wire(event: events.Event) -> bytes:
    return encode_frame(encode(event))


def raw(ftype: int, stream_id: int, payload: bytes, *, version: int = 1, flags: int = 0,
        reserved: int = 0, length: int | None = None) -> bytes:  # fmt: skip
    n = len(payload) if length is None else length
    header = bytes([version, ftype, flags, reserved]) + stream_id.to_bytes(4, "big")
    return header + n.to_bytes(4, "big") + payload


# -- frames.json ---------------------------------------------------------------------------------

COLUMNS = events.Columns(
    1,
    b'{"columns":[{"name":"id","type":"int","nullable":false,"precision":10,"scale":0,'
    b'"length":4},{"name":"total","type":"decimal(18,4)","nullable":true,"precision":18,'
    b'"scale":4,"length":17}]}\n',
)
ROWS = events.Rows(1, b'[1,"12.3400"]\n[2,null]\n')
DONE = events.Done(1, b'{"done":{"rows":2,"result_sets":1,"elapsed_ms":3,"query_id":"q-1"}}\n')
ERROR = events.Error(
    1,
    b'{"error":{"code":"sql.error","message":"Invalid object name \'nope\'.","query_id":"q-1",'
    b'"sql":{"number":208,"state":1,"class":16}}}\n',
)

SID = "c2Vzc2lvbi1pZC0xMjM0NQ"  # 22 base64url characters
SESSION_BEGIN = {"id": SID, "op": "begin", "isolation": "serializable", "idle_timeout_ms": 30000}


def session_raw(session: Any, *, sql: str | None = None, query: str | None = None) -> bytes:
    """A QUERY frame on stream 1 with this ``session`` member (attestation not checked here)."""
    return raw(0x10, 1, canonical_json({
        "query_id": "q", "token": "t", "sql": sql, "query": query, "params": {}, "options": {},
        "attestation": {}, "session": session}))  # fmt: skip


HEAD = "9f" * 32
CHECKPOINT_FIELDS = sign_checkpoint(
    CONNECTOR_KEY, connector_id=CONNECTOR_ID, tunnel=TUNNEL, seq=42, head=HEAD,
    file="audit.jsonl", now=NOW,
)  # fmt: skip
CHECKPOINT = events.Checkpoint(CHECKPOINT_FIELDS)

VALID_FRAMES: list[tuple[str, str, events.Event]] = [
    ("hello", "the relay's signed HELLO with default limits", events.Hello(hello_fields())),
    ("ready", "the connector's READY", events.Ready(CONNECTOR_ID, 64, ("x-example",))),
    (
        "ready-statement-limit",
        "READY announcing a 1 MiB statement limit",
        events.Ready(CONNECTOR_ID, 8, max_statement_bytes=1024 * 1024),
    ),
    (
        "query-sql",
        "QUERY with SQL, a bare and a typed parameter",
        make_query(
            1,
            params={"id": 7, "since": {"type": "datetime2(3)", "value": "2026-01-02T03:04:05.678"}},
            nonce=b64url(b"a" * 16),
        ),
    ),
    (
        "query-named",
        "QUERY of a named query with options",
        events.Query(
            3,
            "q-3",
            "user-token",
            None,
            "orders_by_customer",
            {"customer": "ALFKI"},
            {"max_rows": 100, "timeout_ms": 5000},
            {"note": "attestation omitted in this vector"},
        ),
    ),
    (
        "query-session-begin",
        "QUERY opening a session (both statements null, isolation and idle timeout)",
        make_query(5, sql=None, params={}, nonce=b64url(b"b" * 16), session=SESSION_BEGIN),
    ),
    (
        "query-session-run",
        "QUERY running a statement in a session",
        make_query(6, nonce=b64url(b"r" * 16), session={"id": SID, "op": "run"}),
    ),
    (
        "query-session-savepoint",
        "QUERY setting a savepoint in a session",
        make_query(7, sql=None, params={}, nonce=b64url(b"s" * 16),
                   session={"id": SID, "op": "savepoint", "name": "before_debit"}),
    ),
    ("cancel-empty", "CANCEL with an empty payload", events.Cancel(1)),
    ("cancel-reason", "CANCEL with a reason", events.Cancel(2, "client disconnected")),
    ("columns", "COLUMNS: one columns line", COLUMNS),
    ("rows", "ROWS: two row lines", ROWS),
    ("rows-unicode", "ROWS: non-ASCII text stays UTF-8", events.Rows(1, '["Zürich ✓"]\n'.encode())),
    ("done", "DONE: the terminal done line", DONE),
    ("error", "ERROR: a SQL Server error line", ERROR),
    ("credit-connection", "CREDIT for the connection window", events.Credit(0, 4 * MAX)),
    ("credit-stream", "CREDIT for stream 1", events.Credit(1, 65536)),
    ("credit-max", "CREDIT with the largest u32 increment", events.Credit(9, 2**32 - 1)),
    ("ping", "PING with 8 opaque bytes", events.Ping(bytes.fromhex("0001020304050607"))),
    ("pong", "PONG echoing them", events.Pong(bytes.fromhex("0001020304050607"))),
    ("drain", "DRAIN", events.Drain("deploy in progress")),
    ("goaway", "GOAWAY", events.GoAway("protocol.error", "unknown frame type 0x03", 12)),
    ("checkpoint", "CHECKPOINT: the connector's signed audit head", CHECKPOINT),
    ("checkpoint-empty-chain", "CHECKPOINT of an empty chain (seq 0, genesis head)",
     events.Checkpoint(sign_checkpoint(CONNECTOR_KEY, connector_id=CONNECTOR_ID, tunnel=TUNNEL,
                                       seq=0, head=GENESIS, file="", now=NOW))),
]  # fmt: skip


def checkpoint_raw(**changes: Any) -> bytes:
    return raw(0x35, 0, canonical_json({**CHECKPOINT_FIELDS, **changes}))


COLUMNS_LINE = b'{"columns":[]}\n'
PE = "protocol.error"
# fmt: off
INVALID_FRAMES: list[tuple[str, str, bytes, int, str, int]] = [
    # name, description, bytes, max_frame, error code, close code
    ("bad-version", "version byte 2", raw(0x31, 0, b"12345678", version=2), MAX, PE, 1002),
    ("bad-version-0", "version byte 0", raw(0x31, 0, b"12345678", version=0), MAX, PE, 1002),
    ("unknown-type", "type 0x03 is not defined", raw(0x03, 0, b""), MAX, PE, 1002),
    ("unknown-type-ff", "type 0xff is not defined", raw(0xFF, 1, b""), MAX, PE, 1002),
    ("flags-set", "flags must be 0", raw(0x31, 0, b"12345678", flags=1), MAX, PE, 1002),
    ("reserved-set", "reserved must be 0", raw(0x31, 0, b"12345678", reserved=0x80), MAX, PE, 1002),
    ("too-large", "declared length 1 MiB + 1 with max_frame 1 MiB (no payload needed)",
     raw(0x21, 1, b"", length=MAX + 1), MAX, PE, 1009),
    ("too-large-u32", "declared length 2^32-1", raw(0x21, 1, b"", length=2**32 - 1), MAX, PE, 1009),
    ("too-large-small-limit", "17 KiB payload with max_frame 16 KiB",
     raw(0x21, 1, b"[1]\n" * 4352), 16384, PE, 1009),
    ("truncated-header", "11 bytes", raw(0x31, 0, b"12345678")[:11], MAX, PE, 1002),
    ("truncated-payload", "payload shorter than declared", raw(0x31, 0, b"1234567", length=8),
     MAX, PE, 1002),
    ("trailing-bytes", "a byte after the frame", raw(0x31, 0, b"123456789", length=8), MAX, PE,
     1002),
    ("ping-short", "PING payload of 7 bytes", raw(0x31, 0, b"1234567"), MAX, PE, 1002),
    ("pong-long", "PONG payload of 9 bytes", raw(0x32, 0, b"123456789"), MAX, PE, 1002),
    ("credit-zero", "CREDIT increment 0", raw(0x30, 1, b"\0\0\0\0"), MAX, PE, 1002),
    ("credit-short", "CREDIT payload of 3 bytes", raw(0x30, 1, b"\0\0\1"), MAX, PE, 1002),
    ("hello-not-json", "HELLO payload is not JSON", raw(0x01, 0, b"hello"), MAX, PE, 1002),
    ("hello-version-2", "HELLO version 2",
     raw(0x01, 0, canonical_json({**hello_fields(), "version": 2})), MAX, PE, 1002),
    ("hello-bad-limits", "HELLO stream_window below max_frame", raw(0x01, 0, canonical_json(
        {**hello_fields(), "limits": {**Limits().to_json(), "stream_window": 1000}})), MAX, PE,
     1002),
    ("ready-max-streams-0", "READY max_streams 0",
     raw(0x02, 0, b'{"connector_id":"c","max_streams":0,"caps":[]}'), MAX, PE, 1002),
    ("ready-statement-0", "READY max_statement_bytes 0", raw(0x02, 0,
        b'{"connector_id":"c","max_streams":1,"caps":[],"max_statement_bytes":0}'), MAX, PE, 1002),
    ("query-both", "QUERY with both sql and query", raw(0x10, 1, canonical_json({
        "query_id": "q", "token": "t", "sql": "select 1", "query": "n", "params": {},
        "options": {}, "attestation": {}})), MAX, PE, 1002),
    ("query-duplicate-key", "QUERY JSON with a duplicate key", raw(0x10, 1,
        b'{"query_id":"a","query_id":"b","token":"t","sql":"s","query":null,"params":{},'
        b'"options":{},"attestation":{}}'), MAX, PE, 1002),
    ("query-nan", "QUERY params with NaN", raw(0x10, 1,
        b'{"query_id":"a","token":"t","sql":"s","query":null,"params":{"x":NaN},'
        b'"options":{},"attestation":{}}'), MAX, PE, 1002),
    ("query-number-beyond-double", "QUERY params with 1e400 (Infinity to a double)", raw(0x10, 1,
        b'{"query_id":"a","token":"t","sql":"s","query":null,"params":{"x":-1e400},'
        b'"options":{},"attestation":{}}'), MAX, PE, 1002),
    ("query-integer-beyond-double", "QUERY params with an integer of 309 digits over 2^1024",
     raw(0x10, 1, b'{"query_id":"a","token":"t","sql":"s","query":null,"params":{"x":2'
         + b"0" * 308 + b'},"options":{},"attestation":{}}'), MAX, PE, 1002),
    ("session-not-object", "QUERY session is a string", session_raw("abc"), MAX, PE, 1002),
    ("session-short-id", "QUERY session id of 21 characters",
     session_raw({"id": SID[:21], "op": "begin"}), MAX, PE, 1002),
    ("session-id-bad-char", "QUERY session id with a character outside base64url",
     session_raw({"id": SID[:21] + "=", "op": "begin"}), MAX, PE, 1002),
    ("session-unknown-op", "QUERY session op 'abort'", session_raw({"id": SID, "op": "abort"}),
     MAX, PE, 1002),
    ("session-op-array", "QUERY session op is an array",
     session_raw({"id": SID, "op": ["begin"]}), MAX, PE, 1002),
    ("session-begin-with-sql", "QUERY session begin carrying a statement",
     session_raw(SESSION_BEGIN, sql="select 1"), MAX, PE, 1002),
    ("session-run-without-sql", "QUERY session run with neither sql nor query",
     session_raw({"id": SID, "op": "run"}), MAX, PE, 1002),
    ("session-run-both", "QUERY session run with both sql and query",
     session_raw({"id": SID, "op": "run"}, sql="select 1", query="n"), MAX, PE, 1002),
    ("session-run-sql-not-string", "QUERY session run with sql a number",
     raw(0x10, 1, canonical_json({"query_id": "q", "token": "t", "sql": 1, "query": None,
         "params": {}, "options": {}, "attestation": {}, "session": {"id": SID, "op": "run"}})),
     MAX, PE, 1002),
    ("session-extra-member", "QUERY session commit with an isolation member",
     session_raw({"id": SID, "op": "commit", "isolation": "serializable"}), MAX, PE, 1002),
    ("session-savepoint-no-name", "QUERY session savepoint without a name",
     session_raw({"id": SID, "op": "savepoint"}), MAX, PE, 1002),
    ("session-savepoint-bad-name", "QUERY session savepoint name with a bracket",
     session_raw({"id": SID, "op": "savepoint", "name": "a]b"}), MAX, PE, 1002),
    ("session-savepoint-long-name", "QUERY session savepoint name of 33 characters",
     session_raw({"id": SID, "op": "rollback_to", "name": "s" * 33}), MAX, PE, 1002),
    ("session-bad-isolation", "QUERY session begin with isolation 'chaos'",
     session_raw({"id": SID, "op": "begin", "isolation": "chaos"}), MAX, PE, 1002),
    ("session-empty-role", "QUERY session begin with an empty role",
     session_raw({"id": SID, "op": "begin", "role": ""}), MAX, PE, 1002),
    ("session-idle-zero", "QUERY session begin with idle_timeout_ms 0",
     session_raw({"id": SID, "op": "begin", "idle_timeout_ms": 0}), MAX, PE, 1002),
    ("session-params-on-commit", "QUERY session commit with parameters",
     raw(0x10, 1, canonical_json({"query_id": "q", "token": "t", "sql": None, "query": None,
         "params": {"a": 1}, "options": {}, "attestation": {},
         "session": {"id": SID, "op": "commit"}})), MAX, PE, 1002),
    ("session-idle-bool", "QUERY session begin with idle_timeout_ms true",
     session_raw({"id": SID, "op": "begin", "idle_timeout_ms": True}), MAX, PE, 1002),
    ("columns-two-lines", "COLUMNS with two lines", raw(0x20, 1, COLUMNS_LINE * 2), MAX, PE, 1002),
    ("columns-no-newline", "COLUMNS without its newline", raw(0x20, 1, COLUMNS_LINE[:-1]), MAX,
     PE, 1002),
    ("rows-empty", "ROWS with an empty payload", raw(0x21, 1, b""), MAX, PE, 1002),
    ("rows-partial-line", "ROWS ending mid-line", raw(0x21, 1, b"[1]\n[2"), MAX, PE, 1002),
    ("rows-blank-line", "ROWS with an empty line", raw(0x21, 1, b"[1]\n\n"), MAX, PE, 1002),
    ("done-wrong-key", "DONE carrying an error record", raw(0x22, 1, ERROR.data), MAX, PE, 1002),
    ("error-no-code", "ERROR without a code", raw(0x23, 1, b'{"error":{"message":"x"}}\n'), MAX,
     PE, 1002),
    ("goaway-no-last-stream", "GOAWAY without last_stream", raw(0x34, 0, b'{"code":"internal"}'),
     MAX, PE, 1002),
    ("drain-not-object", "DRAIN payload is a JSON array", raw(0x33, 0, b"[]"), MAX, PE, 1002),
    ("bad-utf8", "CANCEL payload is not UTF-8", raw(0x11, 1, b'{"reason":"\xff"}'), MAX, PE, 1002),
    ("checkpoint-seq-negative", "CHECKPOINT seq -1", checkpoint_raw(seq=-1), MAX, PE, 1002),
    ("checkpoint-seq-string", "CHECKPOINT seq as a string", checkpoint_raw(seq="42"), MAX, PE,
     1002),
    ("checkpoint-head-upper", "CHECKPOINT head in upper case", checkpoint_raw(head="9F" * 32),
     MAX, PE, 1002),
    ("checkpoint-head-short", "CHECKPOINT head of 63 hex digits", checkpoint_raw(head="9" * 63),
     MAX, PE, 1002),
    ("checkpoint-no-sig", "CHECKPOINT without sig", raw(0x35, 0, canonical_json(
        {k: v for k, v in CHECKPOINT_FIELDS.items() if k != "sig"})), MAX, PE, 1002),
    ("checkpoint-empty-connector", "CHECKPOINT connector_id empty",
     checkpoint_raw(connector_id=""), MAX, PE, 1002),
    ("checkpoint-seq0-head", "CHECKPOINT seq 0 with a non-genesis head", checkpoint_raw(seq=0),
     MAX, PE, 1002),
    ("checkpoint-too-large", "CHECKPOINT payload over 4096 bytes",
     checkpoint_raw(pad="x" * 4096), MAX, PE, 1002),
]
# fmt: on


def parse_error(
    parse: Callable[[bytes, int], events.Event], data: bytes, max_frame: int
) -> tuple[str, int] | None:
    try:
        parse(data, max_frame)
    except ProtocolError as exc:
        return str(exc.error_code), int(exc.close_code)
    return None


def frame_vectors(parse: Callable[[bytes, int], events.Event]) -> list[dict[str, Any]]:
    vectors: list[dict[str, Any]] = []
    for name, description, event in VALID_FRAMES:
        data = wire(event)
        assert event_json(parse(data, MAX)) == event_json(event)
        vectors.append({
            "name": name, "description": description, "valid": True, "max_frame": MAX,
            "hex": data.hex(), "frame": frame_json(data), "decoded": event_json(event),
        })  # fmt: skip
    for name, description, data, max_frame, code, close in INVALID_FRAMES:
        error = parse_error(parse, data, max_frame)
        assert error == (code, close), name
        vectors.append({
            "name": name, "description": description, "valid": False, "max_frame": max_frame,
            "hex": data.hex(), "error": {"code": code, "close_code": close},
        })  # fmt: skip
    return vectors


# -- sequences.json ------------------------------------------------------------------------------

SMALL = Limits(max_frame=16384, stream_window=16384, connection_window=32768, max_streams=2)
READY = events.Ready(CONNECTOR_ID, 128)
Q1 = make_query(1, nonce=b64url(b"1" * 16))
Q2 = make_query(2, nonce=b64url(b"2" * 16))
Q3 = make_query(3, nonce=b64url(b"3" * 16))
HELLO = events.Hello(hello_fields())
HELLO_SMALL = events.Hello(hello_fields(SMALL))


DRAINING = b'{"error":{"code":"connector.draining","message":"draining","query_id":"q-1"}}\n'


def rows(n: int, stream_id: int = 1) -> events.Rows:
    return events.Rows(stream_id, b"[" + b"7" * (n - 3) + b"]\n")


def out(event: events.Event) -> dict[str, str]:
    return {"send": wire(event).hex()}


def inn(data: events.Event | bytes) -> dict[str, str]:
    return {"receive": (data if isinstance(data, bytes) else wire(data)).hex()}


RELAY_OPEN = [out(HELLO), inn(READY)]
HELLO_SESSION = events.Hello(hello_fields(caps=(SESSION_CAP,)))
READY_SESSION = events.Ready(CONNECTOR_ID, 128, (SESSION_CAP,))
Q_BEGIN = make_query(1, sql=None, params={}, nonce=b64url(b"1" * 16), session=SESSION_BEGIN)
Q_RUN = make_query(2, nonce=b64url(b"2" * 16), session={"id": SID, "op": "run"})
SESSION_DONE = events.Done(
    1,
    done_record(
        rows=0, result_sets=0, elapsed_ms=1, query_id="q-1", session={"id": SID, "state": "open"}
    ),
)
HELLO_CP = events.Hello(hello_fields(caps=(CHECKPOINT_CAP,)))
READY_CP = events.Ready(CONNECTOR_ID, 128, (CHECKPOINT_CAP,))
RELAY_OPEN_CP = [out(HELLO_CP), inn(READY_CP)]
CONNECTOR_OPEN = [inn(HELLO), out(READY)]
RELAY_SMALL = [
    out(HELLO_SMALL),
    inn(READY),
    out(Q1),
    inn(events.Columns(1, COLUMNS_LINE)),
]

# fmt: off
SEQUENCES: list[tuple[str, str, str, Limits, list[dict[str, Any]]]] = [
    ("relay-happy-path", "a query streamed to completion", "relay", Limits(),
     [*RELAY_OPEN, out(Q1), inn(COLUMNS), inn(ROWS), inn(DONE)]),
    ("connector-happy-path", "the connector's view of the same", "connector", Limits(),
     [*CONNECTOR_OPEN, inn(Q1), out(COLUMNS), out(ROWS), out(DONE)]),
    ("relay-two-result-sets", "COLUMNS may start a second result set", "relay", Limits(),
     [*RELAY_OPEN, out(Q1), inn(COLUMNS), inn(ROWS), inn(COLUMNS), inn(DONE)]),
    ("relay-interleaved", "two streams interleaved, ending out of order", "relay", Limits(),
     [*RELAY_OPEN, out(Q1), out(Q2), inn(COLUMNS), inn(events.Error(2, ERROR.data)), inn(ROWS),
      inn(DONE)]),
    ("connector-late-cancel", "CANCEL and CREDIT after DONE are dropped silently", "connector",
     Limits(), [*CONNECTOR_OPEN, inn(Q1), out(DONE), inn(events.Cancel(1)),
                inn(events.Credit(1, 10))]),
    ("connector-ping", "PING is answered (events show the PING)", "connector", Limits(),
     [*CONNECTOR_OPEN, inn(events.Ping(b"pingpong"))]),
    ("relay-eof", "EOF ends the open stream with transport.lost", "relay", Limits(),
     [*RELAY_OPEN, out(Q1), out(Q2), inn(events.Done(2, DONE.data)), {"eof": True}]),
    ("connector-eof-clean", "EOF after GOAWAY with no open stream is clean", "connector", Limits(),
     [*CONNECTOR_OPEN, inn(events.GoAway("internal", "restarting", 0)), {"eof": True}]),
    ("relay-checkpoint", "CHECKPOINT once both sides announced audit.checkpoint", "relay",
     Limits(), [*RELAY_OPEN_CP, out(Q1), inn(CHECKPOINT), inn(DONE), inn(CHECKPOINT)]),
    ("connector-checkpoint", "the connector sends CHECKPOINT after the capability crossed",
     "connector", Limits(), [inn(HELLO_CP), out(READY_CP), out(CHECKPOINT)]),
    ("relay-session", "a session's begin and run, once both sides announced session", "relay",
     Limits(), [out(HELLO_SESSION), inn(READY_SESSION), out(Q_BEGIN), inn(SESSION_DONE),
                out(Q_RUN), inn(events.Columns(2, COLUMNS_LINE)), inn(events.Done(2, DONE.data))]),
    # invalid
    ("connector-session-without-cap", "a session QUERY when the connector did not announce "
     "session", "connector", Limits(), [inn(HELLO_SESSION), out(READY), inn(Q_BEGIN)]),
    ("relay-session-without-cap", "the relay sending a session QUERY the connector did not "
     "announce", "relay", Limits(), [out(HELLO_SESSION), inn(READY), out(Q_BEGIN)]),
    ("relay-checkpoint-without-cap", "CHECKPOINT when the connector did not announce the "
     "capability", "relay", Limits(), [out(HELLO_CP), inn(READY), inn(CHECKPOINT)]),
    ("relay-checkpoint-relay-without-cap", "CHECKPOINT when the relay did not announce the "
     "capability", "relay", Limits(), [out(HELLO), inn(READY_CP), inn(CHECKPOINT)]),
    ("relay-checkpoint-before-ready", "CHECKPOINT before READY", "relay", Limits(),
     [out(HELLO_CP), inn(CHECKPOINT)]),
    ("relay-checkpoint-on-stream", "CHECKPOINT on stream 1", "relay", Limits(),
     [*RELAY_OPEN_CP, out(Q1), inn(raw(0x35, 1, canonical_json(CHECKPOINT_FIELDS)))]),
    ("connector-checkpoint-from-relay", "a CHECKPOINT sent by the relay", "connector", Limits(),
     [inn(HELLO_CP), out(READY_CP), inn(CHECKPOINT)]),
    ("relay-ready-before-hello", "READY before the relay sent HELLO", "relay", Limits(),
     [inn(READY)]),
    ("connector-query-before-hello", "QUERY as the relay's first frame", "connector", Limits(),
     [inn(Q1)]),
    ("connector-query-before-ready", "QUERY before the connector sent READY", "connector",
     Limits(), [inn(HELLO), inn(Q1)]),
    ("connector-second-hello", "HELLO twice", "connector", Limits(),
     [*CONNECTOR_OPEN, inn(HELLO)]),
    ("relay-columns-on-idle-stream", "COLUMNS on a stream never opened", "relay", Limits(),
     [*RELAY_OPEN, out(Q1), inn(events.Columns(2, COLUMNS_LINE))]),
    ("relay-rows-before-columns", "ROWS before COLUMNS", "relay", Limits(),
     [*RELAY_OPEN, out(Q1), inn(ROWS)]),
    ("relay-rows-after-done", "ROWS after DONE", "relay", Limits(),
     [*RELAY_OPEN, out(Q1), inn(COLUMNS), inn(DONE), inn(ROWS)]),
    ("connector-stream-id-reused", "QUERY reusing stream id 1", "connector", Limits(),
     [*CONNECTOR_OPEN, inn(Q1), out(DONE), inn(make_query(1, nonce=b64url(b"9" * 16)))]),
    ("connector-stream-id-decreasing", "QUERY 3 then QUERY 2", "connector", Limits(),
     [*CONNECTOR_OPEN, inn(Q3), inn(Q2)]),
    ("connector-query-on-stream-0", "QUERY on stream 0", "connector", Limits(),
     [*CONNECTOR_OPEN, inn(raw(0x10, 0, wire(Q1)[12:]))]),
    ("connector-ping-on-stream", "PING on stream 1", "connector", Limits(),
     [*CONNECTOR_OPEN, inn(raw(0x31, 1, b"pingpong"))]),
    ("relay-query-from-connector", "a QUERY sent by the connector", "relay", Limits(),
     [*RELAY_OPEN, inn(Q1)]),
    ("connector-rows-from-relay", "ROWS sent by the relay", "connector", Limits(),
     [*CONNECTOR_OPEN, inn(Q1), inn(raw(0x21, 1, b"[1]\n"))]),
    ("relay-window-overrun", "16 KiB window: 16384 bytes of ROWS after COLUMNS overrun it",
     "relay", SMALL, [*RELAY_SMALL, inn(raw(0x21, 1, b"[" + b"7" * 16381 + b"]\n"))]),
    ("connector-credit-overflow", "CREDIT taking the connection window past 2^31-1", "connector",
     Limits(), [*CONNECTOR_OPEN, inn(events.Credit(0, 2**31 - 8 * MAX))]),
    ("connector-too-many-streams", "a third QUERY with max_streams 2", "connector", SMALL,
     [inn(HELLO_SMALL), out(events.Ready(CONNECTOR_ID, 2, max_frame=16384)), inn(Q1), inn(Q2),
      inn(Q3)]),
    ("connector-query-after-drain", "QUERY after the relay's DRAIN", "connector", Limits(),
     [*CONNECTOR_OPEN, inn(events.Drain("deploy")), inn(Q1)]),
    ("relay-frame-after-goaway", "PING after the connector's GOAWAY", "relay", Limits(),
     [*RELAY_OPEN, inn(events.GoAway("connector.draining", "", 0)),
      inn(events.Ping(b"pingpong"))]),
    # the credit policy: re-granted once half a window was consumed (16 KiB / 32 KiB windows)
    ("relay-credit-half-window", "stream credit at half its window, connection credit at half "
     "of its own; bytes consumed after the stream ended go to the connection only", "relay",
     SMALL, [*RELAY_SMALL, {"consumed": [1, len(COLUMNS_LINE)]},
             inn(rows(8192 - len(COLUMNS_LINE))), {"consumed": [1, 8192 - len(COLUMNS_LINE)]},
             out(Q2), inn(events.Columns(2, COLUMNS_LINE)), inn(rows(8000, 2)),
             inn(events.Done(2, DONE.data)), {"consumed": [2, 8000]},
             {"consumed": [2, len(COLUMNS_LINE)]}, inn(rows(8192)), inn(DONE),
             {"consumed": [1, 8192]}]),
    ("relay-consumed-too-much", "reporting more bytes consumed than were received", "relay",
     SMALL, [*RELAY_SMALL, {"consumed": [1, len(COLUMNS_LINE) + 1]}]),
    # the draining policy (SPEC 6.4)
    ("relay-draining-refusal", "an ERROR connector.draining before any result is the "
     "connector's DRAIN: no QUERY may follow", "relay", Limits(),
     [*RELAY_OPEN, out(Q1), inn(events.Error(1, DRAINING)), out(Q2)]),
    ("relay-draining-error-after-result", "ERROR connector.draining after COLUMNS ends that "
     "query only", "relay", Limits(),
     [*RELAY_OPEN, out(Q1), inn(COLUMNS), inn(events.Error(1, DRAINING)), out(Q2)]),
    ("relay-query-after-drain", "QUERY after the connector's DRAIN", "relay", Limits(),
     [*RELAY_OPEN, inn(events.Drain("maintenance")), out(Q1)]),
]
# fmt: on


def run_sequence(role: str, limits: Limits, steps: list[dict[str, Any]]) -> dict[str, Any]:
    """Run steps on a fresh Connection; return {"events": [...], "error": ... | None}."""
    from protocol import parse_frame
    from protocol._codec import decode

    conn = Connection(Role(role), limits=limits)
    seen: list[dict[str, Any]] = []
    credit: list[dict[str, Any]] = []
    try:
        for step in steps:
            if "send" in step:
                data = bytes.fromhex(step["send"])
                conn.send(decode(parse_frame(data, max_payload=2**24)))
                sent = conn.data_to_send()
                assert sent == data, "send must reproduce the vector's bytes"
            elif "receive" in step:
                conn.receive_data(bytes.fromhex(step["receive"]))
            elif "consumed" in step:
                conn.consumed(*step["consumed"])
            else:
                conn.receive_eof()
            seen += [event_json(e) for e in conn.events()]
            reader = FrameReader(max_payload=2**24)
            reader.feed(conn.data_to_send())
            while (frame := reader.next_frame()) is not None:
                if frame.type is FrameType.CREDIT:
                    credit.append(event_json(decode(frame)))
    except ProtocolError as exc:
        seen += [event_json(e) for e in conn.events()]
        return {
            "events": seen,
            "credit": credit,
            "error": {"code": str(exc.error_code), "close_code": int(exc.close_code)},
        }
    return {"events": seen, "credit": credit, "error": None}


def sequence_vectors() -> list[dict[str, Any]]:
    vectors = []
    for name, description, role, limits, steps in SEQUENCES:
        result = run_sequence(role, limits, steps)
        vectors.append({
            "name": name, "description": description, "valid": result["error"] is None,
            "role": role, "limits": limits.to_json(), "steps": steps, **result,
        })  # fmt: skip
    return vectors


# -- auth.json -----------------------------------------------------------------------------------


def key_json(seed: bytes, key: Any, key_id: str) -> dict[str, str]:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return {"key_id": key_id, "seed_hex": seed.hex(), "public_hex": public.hex()}


def outcome(fn: Callable[[], Any], uses: int = 1) -> dict[str, Any]:
    for _ in range(uses - 1):
        fn()
    try:
        result = fn()
    except AuthError as exc:
        return {"valid": False, "error": str(exc.error_code)}
    out: dict[str, Any] = {"valid": True}
    if result is not None:
        out["claims"] = dataclasses.asdict(result)
    return out


JTI = b64url(b"jti-jti-jti-jti!")


def token_vectors() -> list[dict[str, Any]]:
    good = make_connector_token(
        CONNECTOR_KEY, connector_id=CONNECTOR_ID, tunnel=TUNNEL, now=NOW, jti=JTI, nonce=NONCE
    )
    other = make_connector_token(
        OTHER_KEY, connector_id=CONNECTOR_ID, tunnel=TUNNEL, now=NOW, jti=JTI, nonce=NONCE
    )
    head, body, sig = good.split(".")
    tampered_claims = json.loads(__import__("base64").urlsafe_b64decode(body + "=="))
    tampered_claims["aud"] = "edgetds:relay:other"
    tampered = f"{head}.{b64url(canonical_json(tampered_claims))}.{sig}"

    def signed(payload_text: bytes) -> str:
        signing_input = f"{head}.{b64url(payload_text)}"
        return f"{signing_input}.{b64url(CONNECTOR_KEY.sign(signing_input.encode()))}"

    claims_text = canonical_json(tampered_claims)[:-1]  # ...,"aud":"edgetds:relay:other",...
    twice = signed(claims_text + b',"aud":"edgetds:relay:' + TUNNEL.encode() + b'"}')
    bom = signed(b"\xef\xbb\xbf" + __import__("base64").urlsafe_b64decode(body + "=="))
    cases = [
        ("token-good", "a fresh token", good, NOW + 1, TUNNEL, 1),
        ("token-good-leeway", "4 s past exp is inside the 5 s leeway", good, NOW + 64, TUNNEL, 1),
        ("token-expired", "6 s past exp", good, NOW + 66, TUNNEL, 1),
        ("token-not-yet-valid", "6 s before iat", good, NOW - 6, TUNNEL, 1),
        (
            "token-wrong-key",
            "signed by a key other than the registered one",
            other,
            NOW + 1,
            TUNNEL,
            1,
        ),
        ("token-tampered", "aud changed after signing", tampered, NOW + 1, TUNNEL, 1),
        (
            "token-duplicate-aud",
            "signed claims with aud twice, the last one right (fools a parser keeping the last)",
            twice,
            NOW + 1,
            TUNNEL,
            1,
        ),
        ("token-bom", "signed claims after a UTF-8 BOM", bom, NOW + 1, TUNNEL, 1),
        ("token-wrong-audience", "verified for another tunnel", good, NOW + 1, "other", 1),
        (
            "token-replayed",
            "the same token presented twice (the second use)",
            good,
            NOW + 1,
            TUNNEL,
            2,
        ),
    ]
    # a key rotation: the connector id has two registered keys, the new one listed first
    rotation = [
        ("token-rotation-old-key", "signed by the second of two registered keys", good,
         ["other", "connector"]),
        ("token-rotation-new-key", "signed by the first of two registered keys", other,
         ["other", "connector"]),
        ("token-rotation-neither", "two keys registered, signed by neither", good,
         ["other", "relay"]),
    ]  # fmt: skip
    all_cases = [(*case, ["connector"]) for case in cases]
    all_cases += [(n, d, tok, NOW + 1, TUNNEL, 1, names) for n, d, tok, names in rotation]
    by_name = {"connector": CONNECTOR_KEY, "other": OTHER_KEY, "relay": RELAY_KEY}
    vectors = []
    for name, description, tok, now, tunnel, uses, names in all_cases:
        keys = {CONNECTOR_ID: [by_name[n].public_key() for n in names]}
        cache = ReplayCache(60)
        verify = partial(verify_connector_token, tok, keys, tunnel=tunnel, now=now, replay=cache)
        vectors.append({
            "name": name, "description": description, "token": tok,
            "verify": {"tunnel": tunnel, "now": now, "uses": uses, "connector_keys": names},
            **outcome(verify, uses),
        })  # fmt: skip
    return vectors


def hello_vectors() -> list[dict[str, Any]]:
    good = hello_fields()
    unsigned = {k: v for k, v in good.items() if k != "sig"}
    cases = [
        ("hello-good", "signed by the pinned relay key", good, "relay", {}),
        ("hello-wrong-key", "the pinned key is another one", good, "other", {}),
        (
            "hello-tampered",
            "nonce changed after signing",
            {**good, "nonce": b64url(b"x" * 16)},
            "relay",
            {"nonce": b64url(b"x" * 16)},
        ),
        (
            "hello-wrong-nonce",
            "a valid HELLO for another token's nonce",
            good,
            "relay",
            {"nonce": b64url(b"y" * 16)},
        ),
        (
            "hello-wrong-tunnel",
            "a valid HELLO for another tunnel",
            good,
            "relay",
            {"tunnel": "other"},
        ),
    ]
    vectors = []
    for name, description, fields, key_name, expect_changes in cases:
        expect = {"nonce": NONCE, "tunnel": TUNNEL, "connector_id": CONNECTOR_ID, **expect_changes}
        key = RELAY_KEY if key_name == "relay" else OTHER_KEY
        vectors.append({
            "name": name, "description": description, "fields": fields,
            "signing_input_hex": (HELLO_CONTEXT + canonical_json(unsigned)).hex(),
            "verify": {**expect, "relay_key": key_name},
            **outcome(partial(verify_hello, fields, {RELAY_KEY_ID: key.public_key()}, **expect)),
        })  # fmt: skip
    return vectors


def attestation_vectors() -> list[dict[str, Any]]:
    q = make_query(1, nonce=b64url(b"n" * 16), params={"id": 7, "name": "Zürich"})
    cases = [
        ("attestation-good", "matches the QUERY, in session, on time", q, NOW + 1, SESSION_ID, 1),
        (
            "attestation-altered-sql",
            "sql changed after signing",
            dataclasses.replace(q, sql="select 2"),
            NOW,
            SESSION_ID,
            1,
        ),
        (
            "attestation-altered-params",
            "params changed after signing",
            dataclasses.replace(q, params={"id": 8, "name": "Zürich"}),
            NOW,
            SESSION_ID,
            1,
        ),
        (
            "attestation-altered-token",
            "token swapped after signing",
            dataclasses.replace(q, token="another-user"),
            NOW,
            SESSION_ID,
            1,
        ),
        ("attestation-other-session", "replayed into another session", q, NOW, "other-session", 1),
        ("attestation-stale", "61 s old", q, NOW + 61, SESSION_ID, 1),
        ("attestation-replayed", "the same QUERY twice (the second use)", q, NOW, SESSION_ID, 2),
    ]
    s = make_query(1, nonce=b64url(b"m" * 16), session={"id": SID, "op": "run"})
    plain = dataclasses.replace(s, session=None)
    cases += [
        ("attestation-session-good", "a session run, attested with its session member", s,
         NOW, SESSION_ID, 1),
        ("attestation-session-altered", "session op changed after signing",
         dataclasses.replace(s, session={"id": SID, "op": "commit"}, sql=None, params={}), NOW,
         SESSION_ID, 1),
        ("attestation-session-stripped", "session member removed after signing", plain, NOW,
         SESSION_ID, 1),
        ("attestation-session-commit", "a statement-less session op (the empty statement)",
         make_query(1, sql=None, params={}, nonce=b64url(b"c" * 16),
                    session={"id": SID, "op": "commit"}), NOW, SESSION_ID, 1),
        ("attestation-session-added", "a session member added to a one-shot query's QUERY",
         dataclasses.replace(q, session={"id": SID, "op": "run"}), NOW, SESSION_ID, 1),
    ]  # fmt: skip
    vectors = []
    for name, description, query, now, session, uses in cases:
        keys = {RELAY_KEY_ID: RELAY_KEY.public_key()}
        cache = ReplayCache(120)
        verify = partial(verify_attestation, query, keys, session_id=session, now=now, replay=cache)
        payload = json.loads(encode(query).payload)
        vectors.append({
            "name": name, "description": description, "query": payload,
            "signing_input_hex": (QUERY_CONTEXT + canonical_json(
                {k: v for k, v in query.attestation.items() if k != "sig"})).hex(),
            "verify": {"session_id": session, "now": now, "uses": uses, "relay_key": "relay"},
            **outcome(verify, uses),
        })  # fmt: skip
    return vectors


def checkpoint_vectors() -> list[dict[str, Any]]:
    good = CHECKPOINT_FIELDS
    unsigned = {k: v for k, v in good.items() if k != "sig"}
    cases = [
        ("checkpoint-good", "signed by the connector's key", good, ["connector"]),
        ("checkpoint-rotation", "two keys registered, signed by the second", good,
         ["other", "connector"]),
        ("checkpoint-wrong-key", "signed by another key", good, ["other"]),
        ("checkpoint-moved-forward", "seq raised after signing", {**good, "seq": 43},
         ["connector"]),
        ("checkpoint-other-head", "head changed after signing", {**good, "head": "00" * 32},
         ["connector"]),
        ("checkpoint-other-connector", "valid, but for another connector id",
         {**good, "connector_id": "someone-else"}, ["connector"]),
    ]  # fmt: skip
    by_name = {"connector": CONNECTOR_KEY, "other": OTHER_KEY}
    vectors = []
    for name, description, fields, names in cases:
        keys = [by_name[n].public_key() for n in names]
        verify = partial(verify_checkpoint, fields, keys, connector_id=CONNECTOR_ID, tunnel=TUNNEL)
        vectors.append({
            "name": name, "description": description, "fields": fields,
            "signing_input_hex": (CHECKPOINT_CONTEXT + canonical_json(unsigned)).hex(),
            "verify": {"connector_id": CONNECTOR_ID, "tunnel": TUNNEL, "connector_keys": names},
            **outcome(verify),
        })  # fmt: skip
    return vectors


CANONICAL = [
    {"b": 1, "a": [True, None, "é"]},
    {"params": {"z": 'x"y\\', "a": {"type": "decimal(18,4)", "value": "1.5000"}}},
    {"emoji": "\U0001f600", "tab": "\t"},
]


def auth_document() -> dict[str, Any]:
    return {
        "comment": TEST_ONLY,
        "keys": {
            "relay": key_json(RELAY_SEED, RELAY_KEY, RELAY_KEY_ID),
            "connector": key_json(CONNECTOR_SEED, CONNECTOR_KEY, CONNECTOR_ID),
            "other": key_json(OTHER_SEED, OTHER_KEY, "other"),
        },
        "canonical_json": [
            {"value": v, "canonical_hex": canonical_json(v).hex()} for v in CANONICAL
        ],
        "connector_tokens": token_vectors(),
        "hellos": hello_vectors(),
        "attestations": attestation_vectors(),
        "checkpoints": checkpoint_vectors(),
    }


def parse(data: bytes, max_frame: int) -> events.Event:
    from protocol import RemoteProtocolError, parse_frame
    from protocol._codec import decode

    frame = parse_frame(data, max_payload=max_frame)
    try:
        return decode(frame)
    except ValueError as exc:
        raise RemoteProtocolError(str(exc)) from None


def dump(name: str, document: Any) -> None:
    text = json.dumps(document, indent=1, ensure_ascii=False) + "\n"
    (OUT / name).write_text(text, encoding="utf-8")


def main() -> None:
    frames = frame_vectors(parse)
    sequences = sequence_vectors()
    auth = auth_document()
    dump("frames.json", {"comment": "edgetds/1 frame vectors; see README.md", "vectors": frames})
    dump(
        "sequences.json",
        {"comment": "edgetds/1 connection sequences; see README.md", "vectors": sequences},
    )
    dump("auth.json", auth)
    id_tokens = id_token_document()["vectors"]
    dump("id_tokens.json", id_token_document())
    dump("registry.json", wire_registry())
    enroll = enroll_document()
    dump("enroll.json", enroll)
    count = (
        len(frames)
        + len(sequences)
        + sum(
            len(auth[k])
            for k in ("connector_tokens", "hellos", "attestations", "checkpoints", "canonical_json")
        )
    )
    invalid = sum(not v["valid"] for v in frames + sequences) + sum(
        not v["valid"]
        for k in ("connector_tokens", "hellos", "attestations", "checkpoints")
        for v in auth[k]
    )
    count += len(id_tokens)
    invalid += sum(not v["valid"] for v in id_tokens)
    enroll_vectors = [v for k in ("tokens", "requests", "answers") for v in enroll[k]]
    count += len(enroll_vectors)
    invalid += sum(not v["valid"] for v in enroll_vectors)
    print(f"{count} vectors, {invalid} invalid, written to {OUT}")


if __name__ == "__main__":
    main()
