"""Connector tokens, relay HELLO and query attestations, with FIXED test keys (helpers.py)."""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import replace
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import (
    AuthError,
    CloseCode,
    ErrorCode,
    ReplayCache,
    b64url,
    canonical_json,
    events,
    key_id,
    make_attestation,
    make_connector_token,
    raw_public_key,
    verify_attestation,
    verify_connector_token,
    verify_hello,
)
from protocol._auth import _signature
from tests.protocol.helpers import (
    CONNECTOR_ID,
    CONNECTOR_KEY,
    NONCE,
    NOW,
    OPTIONS,
    OTHER_KEY,
    RELAY_KEY,
    RELAY_KEY_ID,
    SESSION_ID,
    TUNNEL,
    hello_fields,
    make_query,
)

CONNECTOR_KEYS = {CONNECTOR_ID: CONNECTOR_KEY.public_key()}
RELAY_KEYS = {RELAY_KEY_ID: RELAY_KEY.public_key()}
JTI = b64url(b"j" * 16)


def token(**kwargs: Any) -> str:
    args: dict[str, Any] = {"connector_id": CONNECTOR_ID, "tunnel": TUNNEL, "now": NOW, "jti": JTI}
    args.update(kwargs)
    key = args.pop("key", CONNECTOR_KEY)
    return make_connector_token(key, **args)


def forge(header: dict[str, Any], claims: dict[str, Any], key: Any = CONNECTOR_KEY) -> str:
    def part(obj: dict[str, Any]) -> str:
        return b64url(json.dumps(obj).encode())

    signing_input = f"{part(header)}.{part(claims)}"
    return f"{signing_input}.{b64url(key.sign(signing_input.encode()))}"


def claims(**changes: Any) -> dict[str, Any]:
    base = {
        "iss": CONNECTOR_ID,
        "sub": CONNECTOR_ID,
        "aud": f"edgetds:relay:{TUNNEL}",
        "iat": NOW,
        "exp": NOW + 60,
        "jti": JTI,
        "nonce": NONCE,
    }
    base.update(changes)
    return base


HEADER = {"alg": "EdDSA", "typ": "JWT", "kid": CONNECTOR_ID}


def check(tok: str, *, now: float = NOW + 1, replay: ReplayCache | None = None) -> Any:
    return verify_connector_token(tok, CONNECTOR_KEYS, tunnel=TUNNEL, now=now, replay=replay)


# -- connector token -----------------------------------------------------------------------------


def test_token_good_and_deterministic_fields() -> None:
    tok = token(nonce=NONCE)
    got = check(tok)
    assert (got.connector_id, got.tunnel, got.jti, got.nonce) == (CONNECTOR_ID, TUNNEL, JTI, NONCE)
    assert (got.iat, got.exp) == (NOW, NOW + 60)
    header = json.loads(base64.urlsafe_b64decode(tok.split(".")[0] + "=="))
    assert header == HEADER


def test_token_random_ids_are_128_bits_and_fresh() -> None:
    a, b = check(token(jti=None)), check(token(jti=None))
    assert a.jti != b.jti
    assert a.nonce != b.nonce
    assert len(base64.urlsafe_b64decode(a.jti + "==")) == 16


@pytest.mark.parametrize(
    ("tok", "code"),
    [
        ("a.b", ErrorCode.AUTH_INVALID_TOKEN),
        ("!!.b.c", ErrorCode.AUTH_INVALID_TOKEN),
        (forge({"alg": "none", "kid": CONNECTOR_ID}, claims()), ErrorCode.AUTH_INVALID_TOKEN),
        (forge({"alg": "EdDSA"}, claims()), ErrorCode.AUTH_INVALID_TOKEN),
        (forge({**HEADER, "kid": "someone"}, claims()), ErrorCode.AUTH_UNKNOWN_ISSUER),
        (forge(HEADER, claims(), key=OTHER_KEY), ErrorCode.AUTH_INVALID_TOKEN),
        (forge(HEADER, claims(iss="x")), ErrorCode.AUTH_INVALID_TOKEN),
        (forge(HEADER, claims(sub="x")), ErrorCode.AUTH_INVALID_TOKEN),
        (forge(HEADER, claims(aud="edgetds:relay:other")), ErrorCode.AUTH_WRONG_AUDIENCE),
        (forge(HEADER, claims(exp=NOW + 61)), ErrorCode.AUTH_INVALID_TOKEN),
        (forge(HEADER, claims(exp=NOW)), ErrorCode.AUTH_INVALID_TOKEN),
        (forge(HEADER, claims(iat="1")), ErrorCode.AUTH_INVALID_TOKEN),
        (forge(HEADER, claims(exp=1.5)), ErrorCode.AUTH_INVALID_TOKEN),
        (forge(HEADER, claims(jti=b64url(b"short"))), ErrorCode.AUTH_INVALID_TOKEN),
        (forge(HEADER, claims(jti=7)), ErrorCode.AUTH_INVALID_TOKEN),
        (forge(HEADER, claims(nonce="not base64url!")), ErrorCode.AUTH_INVALID_TOKEN),
    ],
)
def test_token_rejections(tok: str, code: ErrorCode) -> None:
    with pytest.raises(AuthError) as info:
        check(tok)
    assert info.value.error_code is code
    assert info.value.close_code is CloseCode.AUTH_FAILED


def test_token_tampered_claims_and_signature() -> None:
    header, body, sig = token().split(".")
    tampered = b64url(json.dumps(claims(aud="edgetds:relay:x")).encode())
    for bad in (
        f"{header}.{tampered}.{sig}",
        f"{header}.{body}.{sig[:-4]}AAAA",
        f"{header}.{body}.@",
    ):
        with pytest.raises(AuthError, match="signature does not verify"):
            check(bad)
    with pytest.raises(AuthError, match="signature does not verify"):
        check(f"{header}.{body}é.{sig}")


def test_token_expiry_with_leeway() -> None:
    tok = token()
    check(tok, now=NOW + 65)
    check(tok, now=NOW - 5)
    for now in (NOW + 65.5, NOW - 5.5):
        with pytest.raises(AuthError) as info:
            check(tok, now=now)
        assert info.value.error_code is ErrorCode.AUTH_EXPIRED


def test_token_replay() -> None:
    cache = ReplayCache(60)
    tok = token()
    check(tok, replay=cache)
    with pytest.raises(AuthError) as info:
        check(tok, replay=cache)
    assert info.value.error_code is ErrorCode.AUTH_REPLAY
    assert len(cache) == 1
    with pytest.raises(AuthError):  # still remembered until exp + leeway ...
        check(tok, now=NOW + 64, replay=cache)
    cache.remember("other", now=NOW + 65.5)  # ... and forgotten after it
    assert len(cache) == 1


def test_token_lifetime_argument() -> None:
    with pytest.raises(ValueError, match="lifetime"):
        token(lifetime=61)
    assert check(token(lifetime=10)).exp == NOW + 10


def test_replay_cache_ttl_and_capacity() -> None:
    cache = ReplayCache(10, max_entries=2)
    assert cache.remember("a", now=0)
    assert not cache.remember("a", now=9.9)
    assert cache.remember("b", now=1)
    assert not cache.remember("c", now=2)  # full: fail closed
    assert cache.remember("a", now=10)  # "a" expired
    assert cache.remember("c", now=11)  # "b" expired


# -- HELLO ---------------------------------------------------------------------------------------


def hello_check(fields: Any, **changes: str) -> None:
    expected = {"nonce": NONCE, "tunnel": TUNNEL, "connector_id": CONNECTOR_ID, **changes}
    verify_hello(fields, RELAY_KEYS, **expected)


def test_hello_good() -> None:
    fields = hello_fields()
    hello_check(fields)
    hello_check(events.Hello(fields))
    assert fields["version"] == 1
    assert fields["session_id"] == SESSION_ID


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda f: f.update(nonce="other"), "signature"),
        (lambda f: f.update(relay_key_id="other"), "not pinned"),
        (lambda f: f.update(sig=f["sig"][:-4] + "AAAA"), "signature"),
        (lambda f: f.update(sig="***"), "signature"),
        (lambda f: f.update(sig=5), "signature"),
        (lambda f: f.pop("sig"), "signature"),
    ],
)
def test_hello_tampered(mutate: Any, message: str) -> None:
    fields = hello_fields()
    mutate(fields)
    with pytest.raises(AuthError, match=message) as info:
        hello_check(fields)
    assert info.value.error_code is ErrorCode.AUTH_RELAY_REJECTED


def test_hello_wrong_key_and_wrong_binding() -> None:
    with pytest.raises(AuthError, match="signature"):
        verify_hello(
            hello_fields(),
            {RELAY_KEY_ID: OTHER_KEY.public_key()},
            nonce=NONCE,
            tunnel=TUNNEL,
            connector_id=CONNECTOR_ID,
        )
    for name in ("nonce", "tunnel", "connector_id"):
        with pytest.raises(AuthError, match=f'"{name}" is not'):
            hello_check(hello_fields(), **{name: "someone-else"})


# -- attestation ---------------------------------------------------------------------------------


def attest(query: events.Query, *, now: float = NOW, replay: ReplayCache | None = None) -> None:
    verify_attestation(query, RELAY_KEYS, session_id=SESSION_ID, now=now, replay=replay)


def test_attestation_good_named_query_and_skew() -> None:
    attest(make_query(1))
    attest(make_query(1, sql=None, query="orders_by_customer"))
    attest(make_query(1), now=NOW + 60)
    attest(make_query(1), now=NOW - 60)
    with pytest.raises(AuthError, match="more than 60 s"):
        attest(make_query(1), now=NOW + 60.001)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"sql": "select 2"}, "statement_sha256"),
        ({"sql": None, "query": "select 1"}, "statement_sha256"),
        ({"params": {"id": 8}}, "params_sha256"),
        ({"token": "someone-elses-token"}, "token_sha256"),
        ({"options": {"max_rows": 1, "timeout_ms": None}}, "options_sha256"),
        ({"query_id": "q-other"}, "query_id"),
    ],
)
def test_attestation_detects_altered_query(change: dict[str, Any], message: str) -> None:
    with pytest.raises(AuthError, match=message) as info:
        attest(replace(make_query(1), **change))
    assert info.value.error_code is ErrorCode.AUTH_ATTESTATION_INVALID


def test_attestation_from_hashes_the_caller_has_is_the_same() -> None:
    """``params_json`` and ``token_sha256`` given (a relay that encoded the params to check
    their size, and whose verifier hashed the token) attest what computing them here does."""
    params = {"b": [1, "\u00e9"], "a": None}
    members: dict[str, Any] = dict(
        relay_key_id=RELAY_KEY_ID,
        session_id=SESSION_ID,
        query_id="q-1",
        token="user-token",
        sql="select 1",
        query=None,
        params=params,
        options=OPTIONS,
        now=NOW,
        nonce="n" * 22,
    )
    computed = make_attestation(RELAY_KEY, **members)
    given = make_attestation(
        RELAY_KEY,
        **members,
        params_json=canonical_json(params),
        token_sha256=hashlib.sha256(b"user-token").hexdigest(),
    )
    assert given == computed
    query = events.Query(1, "q-1", "user-token", "select 1", None, params, OPTIONS, given, None)
    attest(query)


def with_attestation(**change: Any) -> events.Query:
    query = make_query(1)
    return replace(query, attestation={**query.attestation, **change})


@pytest.mark.parametrize(
    ("query", "message"),
    [
        (with_attestation(sig=None), "missing a member"),
        (with_attestation(ts="1"), '"ts" must be an integer'),
        (with_attestation(relay_key_id="old"), "not pinned"),
        (with_attestation(session_id="other-session"), "signature"),
        (with_attestation(sig=b64url(bytes(64))), "signature"),
        (replace(make_query(1), params={"x": "\ud800"}), "canonically"),
    ],
)
def test_attestation_rejections(query: events.Query, message: str) -> None:
    with pytest.raises(AuthError, match=message):
        attest(query)


@pytest.mark.parametrize("cut", [slice(0, 63), slice(1, None)])
def test_attestation_with_a_signature_of_another_length_is_refused(cut: slice) -> None:
    """A valid signature cut by a byte (the verifier takes exactly 64 bytes, never a prefix of
    signature + message)."""
    sig = base64.urlsafe_b64decode(make_query(1).attestation["sig"] + "==")
    with pytest.raises(AuthError, match="signature"):
        attest(with_attestation(sig=b64url(sig[cut])))


def test_attestation_other_session_and_wrong_key() -> None:
    with pytest.raises(AuthError, match="session_id"):
        verify_attestation(make_query(1), RELAY_KEYS, session_id="other", now=NOW)
    with pytest.raises(AuthError, match="signature"):
        verify_attestation(
            make_query(1), {RELAY_KEY_ID: OTHER_KEY.public_key()}, session_id=SESSION_ID, now=NOW
        )


def test_attestation_replay_and_duplicate_query_id() -> None:
    cache = ReplayCache(120)
    query = make_query(1, nonce=b64url(b"n" * 16))
    attest(query, replay=cache)
    with pytest.raises(AuthError) as info:
        attest(query, replay=cache)
    assert info.value.error_code is ErrorCode.AUTH_REPLAY
    retry = make_query(2, query_id=query.query_id, nonce=b64url(b"m" * 16))
    with pytest.raises(AuthError) as info:
        attest(retry, replay=cache)
    assert info.value.error_code is ErrorCode.QUERY_DUPLICATE


def test_key_id_is_16_chars_of_base64url_sha256_of_the_raw_public_key() -> None:
    key = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    raw = raw_public_key(key)
    assert raw == raw_public_key(key.public_key())
    assert len(raw) == 32
    digest = base64.urlsafe_b64encode(hashlib.sha256(raw).digest()).decode()
    assert key_id(key) == key_id(key.public_key()) == digest[:16] == "Vkdap1RjR0wChd9d"


@given(data=st.binary(max_size=2048), seed=st.binary(min_size=32, max_size=32))
@settings(max_examples=200, deadline=None)
def test_libsodium_signatures_are_byte_for_byte_openssls(data: bytes, seed: bytes) -> None:
    """Signing goes through libsodium with the key expanded once; Ed25519 is deterministic, so
    the signature must equal OpenSSL's for every key and message, and verify under the key."""
    key = Ed25519PrivateKey.from_private_bytes(seed)
    signature = _signature(key, data)
    assert signature == key.sign(data)
    key.public_key().verify(signature, data)  # raises InvalidSignature otherwise
    assert _signature(key, data) == signature  # the expanded key, now cached, signs the same


def test_a_cached_expansion_never_signs_for_another_key() -> None:
    """Two key objects with different seeds never share an expanded secret, even when the first
    is gone and the second might reuse its memory."""
    signatures = set()
    for i in range(40):
        key = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(bytes([i])).digest())
        signature = _signature(key, b"same message")
        assert signature == key.sign(b"same message")
        signatures.add(signature)
        del key
    assert len(signatures) == 40
