"""Both relays read a /query body the same way: `relay.request.parse_query_request` (Python) and
`parseQueryRequest` (relay/worker/src/request.js, under Node) accept the same bodies and make the
same statement, parameters (canonical JSON, what the QUERY carries and the attestation signs) and
options of them, or both refuse with request.invalid.

The bodies: JSON members and pieces glued at random (a fixed seed: the same bodies every run),
and cases at the edges (nesting depth, parameter count and size, names and ids at their length
limits, numbers at 2^53 and beyond a double, blank statements, a byte order mark, invalid UTF-8,
duplicate members). A body one relay sends on and the other refuses would be a query that runs
through one and not the other; a QUERY nested deeper than the connector reads ends its connection.
"""

from __future__ import annotations

import base64
import json
import random
import subprocess
from collections.abc import Callable
from typing import Any

from protocol import canonical_json
from relay.http import HttpError
from relay.request import parse_query_request
from relay.sessions import _begin_member, parse_object
from tests.support.node import NODE
from tests.support.worker_relay import ROOT

SCRIPT = ROOT / "relay" / "worker" / "scripts" / "parity.mjs"
MAX_TIMEOUT_MS = 30_000

PIECES = [
    "{", "}", "[", "]", ",", ":", '"sql"', '"query"', '"params"', '"max_rows"', '"timeout_ms"',
    '"query_id"', '"SELECT 1"', '"x"', "1", "1.0", "1e2", "-0", "-0.0", "0", "9007199254740993",
    "9007199254740991", "1e400", "true", "false", "null", "NaN", "Infinity", '"\\ud800"',
    '"\\udc00\\ud800"', '"\\u0000"', '" "', '"\\u0085"', '"\\ufeff"', '"@a"', '"a"', " ", "\n",
    '"\u00e9"', '"\\/"', "-1", "2147483648", '"q1"', '"abc-123"', '"\u2028"', "{}", "[]",
    '{"type": "bigint", "value": "1"}', '{"@a": 1}', '{"a": 1.0}', '{"a": -0}', '{"a": [1, 2]}',
    '{"a": 9007199254740993}', '{"a": 1, "a": 2}', '{"a": {"type": "int", "value": 1}}',
    '{"a": {"type": "INT", "value": [1]}}', '{"a": {"b": 1}}', '{"a": "\\ud83d\\ude00"}',
    '{"a": {"type": "decimal(18,4)", "value": "1.5", "x": 1}}', '{"a": 5e-324}',
]  # fmt: skip
MEMBERS = ['"sql"', '"query"', '"params"', '"max_rows"', '"timeout_ms"', '"query_id"', '"sql"']


def random_bodies(count: int, seed: int) -> list[bytes]:
    rnd = random.Random(seed)
    bodies = []
    for _ in range(count):
        if rnd.random() < 0.6:
            members = [f"{k}:{rnd.choice(PIECES)}" for k in rnd.sample(MEMBERS, rnd.randint(0, 4))]
            text = "{" + ",".join(members) + "}"
        else:
            text = "".join(rnd.choice(PIECES) for _ in range(rnd.randint(1, 10)))
        raw = text.encode("utf-8", "surrogatepass")
        if rnd.random() < 0.05:
            raw += rnd.choice([b"\xff", b"\xc0\x80", b"\xed\xa0\x80", b" ", b"\x00"])
        bodies.append(raw)
    return bodies


def edge_bodies() -> list[bytes]:
    def body(**members: Any) -> bytes:
        return json.dumps(members, ensure_ascii=False).encode("utf-8", "surrogatepass")

    cases = []
    for depth in (10, 300, 900, 1000, 2000, 20000):
        cases.append(b'{"sql":"SELECT 1","params":{"a":' + b"[" * depth + b"]" * depth + b"}}")
        deep = b'{"b":' * depth + b"1" + b"}" * depth
        cases.append(b'{"sql":"SELECT 1","params":{"a":' + deep + b"}}")
    cases += [body(sql="SELECT 1", params={f"p{i}": i for i in range(n)}) for n in (2100, 2101)]
    for size in (262_130, 262_134, 262_135, 262_144):
        cases.append(body(sql="SELECT 1", params={"a": "x" * size}))
        cases.append(body(sql="SELECT 1", params={"a": "\u00e9" * (size // 2)}))
    ids = ["a" * 128, "a" * 129, "-a", "a\n", "a b", "\u00e9", "A.b:c-d_e"]
    cases += [body(sql="SELECT 1", query_id=qid) for qid in ids]
    names = ["", "@", "@@a", "a" * 128, "a" * 129, "\u00e9", "1a", "_a", "a\n", "@a.b:c-d", "a$"]
    cases += [body(sql="SELECT 1", params={name: 1}) for name in names]
    cases += [body(query=q) for q in ["a" * 128, "a" * 129, "q\n", "q.x", "1q", ""]]
    numbers = ["1.0", "-0", "-0.0", "0e0", "1E400", "1e-400", "9007199254740991",
               "9007199254740992", "-9007199254740992", "1.5e15", "4.9e-324"]  # fmt: skip
    for v in numbers:
        cases.append(
            b'{"sql":"x","params":{"a":' + v.encode() + b'},"max_rows":' + v.encode() + b"}"
        )
        cases.append(b'{"sql":"x","timeout_ms":' + v.encode() + b"}")
        typed = b'{"type": "bigint", "value": ' + v.encode() + b"}"
        cases.append(b'{"sql":"x","params":{"a":' + typed + b"}}")
    blanks = [
        " ",
        "\u3000",
        "\u00a0",
        "\ufeff",
        "\u0085",
        "\u2028",
        "\t\n",
        "\x0b",
        "\x1c",
        "\u200b",
    ]
    cases += [body(sql=blank) for blank in blanks]
    cases += [
        b'\xef\xbb\xbf{"sql":"SELECT 1"}',
        b' {"sql":"SELECT 1"} ',
        b'{"sql":"SELECT 1"}\x00',
        b'{"sql":"SELECT 1",}',
        b'{"sql":"SELECT 1"} {}',
        b'{"sql":"SELECT 1","params":{"a":1,"\\u0061":1}}',
        b'{"sql":"SELECT 1","\\u0073ql":"x"}',
        b'{"sql":"\\u0053ELECT 1"}',
        b'{"sql":"x","params":{"a":{"type":"int","value":1,"type":"x"}}}',
        b'{"sql":"x","params":{"a":{"type":"int"}}}',
        b'{"sql":"x","params":{"a":{"value":1}}}',
        b'{"sql":"x","params":{"a":{"type":"decimal(\\u0661\\u0668)","value":"1"}}}',
    ]
    return cases


def worker_reads(kind: str, bodies: list[bytes], **options: Any) -> list[dict[str, Any]]:
    """What the Worker's reader makes of each body (relay/worker/scripts/parity.mjs, ``kind``)."""
    job = {"values": [], kind: [base64.b64encode(b).decode() for b in bodies], **options}
    done = subprocess.run(
        [str(NODE), str(SCRIPT)], input=json.dumps(job), capture_output=True, text=True,
        timeout=120, check=True,
    )  # fmt: skip
    answers: list[dict[str, Any]] = json.loads(done.stdout)[kind]
    return answers


def assert_alike(
    bodies: list[bytes], worker: list[dict[str, Any]], python: Callable[[bytes], dict[str, Any]]
) -> None:
    differ = [
        (raw[:120], mine, js)
        for raw, js in zip(bodies, worker, strict=True)
        if (mine := python(raw)) != js
    ]
    assert not differ, f"{len(differ)} of {len(bodies)} bodies read differently: {differ[:5]}"


def python_reads(raw: bytes) -> dict[str, Any]:
    try:
        r = parse_query_request(raw, max_timeout_ms=MAX_TIMEOUT_MS)
    except HttpError as exc:
        return {"ok": False, "code": str(exc.code)}
    return {
        "ok": True,
        "sql": r.sql,
        "query": r.query,
        "params": canonical_json(r.params).decode(),
        "max_rows": r.max_rows,
        "timeout_ms": r.timeout_ms,
        "query_id": r.query_id if r.client_query_id else None,
    }


def test_both_relays_read_every_body_alike() -> None:
    bodies = random_bodies(3000, seed=2026) + edge_bodies()
    worker = worker_reads("requests", bodies, max_timeout_ms=MAX_TIMEOUT_MS)
    assert_alike(bodies, worker, python_reads)
    accepted = sum(1 for js in worker if js["ok"])
    assert accepted >= 50  # the bodies try both sides
    assert len(bodies) - accepted >= 50


BEGIN = frozenset({"isolation", "timeout_ms", "role"})


def begin_bodies() -> list[bytes]:
    values = [
        '"read committed"', '"serializable"', '"READ COMMITTED"', "1", "0", "2147483647",
        "2147483648", "1.0", "-0", "null", "true", '"r"', '""', '"a\\u0000b"', '"\\n"',
        '"' + "x" * 128 + '"', '"' + "x" * 129 + '"', '"' + "\\ud83d\\ude00" * 64 + '"',
        '"' + "\\ud83d\\ude00" * 65 + '"', '"\\ud800"', "[]", "{}",
    ]  # fmt: skip
    bodies = [b"", b" ", b"\n", b"{}", b"[]", b"null", b'{"x": 1}', b'{"role": "r", "role": "s"}']
    for key in sorted(BEGIN):
        bodies += [f'{{"{key}": {value}}}'.encode() for value in values]
    return bodies


def python_begins(raw: bytes) -> dict[str, Any]:
    try:
        member = _begin_member(parse_object(raw), "", BEGIN)
    except HttpError as exc:
        return {"ok": False, "code": str(exc.code)}
    return {"ok": True, "session": {k: v for k, v in member.items() if k not in ("id", "op")}}


def test_both_relays_read_every_session_begin_alike() -> None:
    bodies = begin_bodies()
    worker = worker_reads("begins", bodies)
    assert_alike(bodies, worker, python_begins)
    assert sum(1 for js in worker if js["ok"]) >= 10
