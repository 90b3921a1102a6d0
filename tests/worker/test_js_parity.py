"""The Worker's canonical JSON and signatures equal protocol/'s byte for byte (Ed25519 is
deterministic, so the same key over the same bytes gives the same signature)."""

from __future__ import annotations

import json
import subprocess
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol import Limits, canonical_json, make_attestation, sign_hello, verify_hello
from tests.support.node import NODE
from tests.support.protocol_peer import key_id
from tests.support.worker_relay import ROOT, public_key_text

SCRIPT = ROOT / "relay" / "worker" / "scripts" / "parity.mjs"


def run_js(job: dict[str, Any]) -> dict[str, Any]:
    result = subprocess.run(
        [str(NODE), str(SCRIPT)],
        input=json.dumps(job, ensure_ascii=False),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    out: dict[str, Any] = json.loads(result.stdout)
    return out


TRICKY: list[Any] = [
    {"b": 1, "a": 2, "A": 3, "é": 4, "\uffff": 5, "😀": 6, "": 7},
    ['x"\\\n\r\t\b\f\u0001\u001f\u007f\u2028é😀'],
    [0.1, 1.5, 1e15 + 0.5, 1e-5, 1e-4, 1.5e-7, -2.5, 5e-324, 2.5e-5, 123456.789, -1.7e-300],
    {"n": [0, -1, 9007199254740991, -9007199254740991], "t": True, "f": False, "z": None},
    {"nested": {"y": [{"b": [], "a": {}}], "x": "\u0000"}},
]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False).filter(lambda f: not f.is_integer())
    | st.text(st.characters(exclude_categories=("Cs",)), max_size=8),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(st.characters(exclude_categories=("Cs",)), max_size=4), children)
    ),
    max_leaves=12,
)


def test_canonical_json_tricky_values() -> None:
    out = run_js({"values": TRICKY})
    assert out["canonical"] == [canonical_json(v).decode("utf-8") for v in TRICKY]


def test_values_javascript_cannot_carry_exactly_are_refused() -> None:
    # JSON.parse makes 1e22 and 10000000000000000000000 the same number, and loses integers past
    # 2^53: the Worker refuses them (request.invalid) instead of signing a changed value.
    for value in (1e22, 2**53 + 1):
        result = subprocess.run(
            [str(NODE), str(SCRIPT)],
            input=json.dumps({"values": [value]}),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode != 0
        assert "2^53" in result.stderr


@settings(max_examples=1, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(json_values, min_size=200, max_size=200))
def test_canonical_json_random_values(values: list[Any]) -> None:
    # One node process checks 200 generated values (process start dominates the cost).
    out = run_js({"values": values})
    assert out["canonical"] == [canonical_json(v).decode("utf-8") for v in values]


def test_hello_and_attestation_signatures_match_protocol() -> None:
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    pub = public_key_text(key)
    kid = key_id(pub)
    limits = Limits()
    params = {"k": 3, "s": "é😀", "f": 2.5e-7, "typed": {"type": "decimal(18,4)", "value": "1.5"}}
    options = {"max_rows": None, "timeout_ms": 30000}
    out = run_js(
        {
            "values": [],
            "pem": pem,
            "hello": {
                "sessionId": "0b0c4b2e-5b7f-4a59-9a0d-6f0b3f1e2a11",
                "tunnel": "demo",
                "connectorId": "conn-1",
                "nonce": "bm9uY2Utbm9uY2Utbm9uY2U",
                "limits": limits.to_json(),
                "caps": [],
            },
            "attestation": {
                "sessionId": "s-1",
                "queryId": "q-1",
                "token": "header.payload.sig",
                "sql": "SELECT @k",
                "query": None,
                "params": params,
                "options": options,
                "now": 1_800_000_000.123,
                "nonce": "AAAAAAAAAAAAAAAAAAAAAA",
            },
        }
    )
    assert out["public_key"] == pub
    assert out["key_id"] == kid
    expected_hello = sign_hello(
        key,
        relay_key_id=kid,
        session_id="0b0c4b2e-5b7f-4a59-9a0d-6f0b3f1e2a11",
        tunnel="demo",
        connector_id="conn-1",
        nonce="bm9uY2Utbm9uY2Utbm9uY2U",
        limits=limits,
    )
    assert out["hello"] == expected_hello
    verify_hello(
        out["hello"],
        {kid: key.public_key()},
        nonce="bm9uY2Utbm9uY2Utbm9uY2U",
        tunnel="demo",
        connector_id="conn-1",
    )
    expected_att = make_attestation(
        key,
        relay_key_id=kid,
        session_id="s-1",
        query_id="q-1",
        token="header.payload.sig",
        sql="SELECT @k",
        query=None,
        params=params,
        options=options,
        now=1_800_000_000.123,
        nonce="AAAAAAAAAAAAAAAAAAAAAA",
    )
    assert out["attestation"] == expected_att


def test_session_attestations_match_protocol() -> None:
    """A session op: `run` (a statement) and the ops without one (both null), each with its
    session member attested as session_sha256."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    kid = key_id(public_key_text(key))
    sid = "AAAAAAAAAAAAAAAAAAAAAA"
    cases: list[tuple[str | None, dict[str, Any]]] = [
        (None, {"id": sid, "op": "begin", "isolation": "snapshot", "idle_timeout_ms": 5000}),
        ("SELECT 1", {"id": sid, "op": "run"}),
        (None, {"id": sid, "op": "savepoint", "name": "sp_1"}),
        (None, {"id": sid, "op": "commit"}),
    ]
    for sql, session in cases:
        job = {"sessionId": "s-1", "queryId": "q-1", "token": "h.p.s", "sql": sql, "query": None}
        job |= {"params": {}, "options": {"max_rows": None, "timeout_ms": 1000}}
        job |= {"now": 1_800_000_000.0, "nonce": "AAAAAAAAAAAAAAAAAAAAAA", "session": session}
        out = run_js({"values": [], "pem": pem, "attestation": job})
        expected = make_attestation(
            key,
            relay_key_id=kid,
            session_id="s-1",
            query_id="q-1",
            token="h.p.s",
            sql=sql,
            query=None,
            params={},
            options={"max_rows": None, "timeout_ms": 1000},
            now=1_800_000_000.0,
            nonce="AAAAAAAAAAAAAAAAAAAAAA",
            session=session,
        )
        assert out["attestation"] == expected, session["op"]
