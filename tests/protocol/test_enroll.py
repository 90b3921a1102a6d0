"""One-token enrolment (protocol/_enroll.py, SPEC.md 8.7): the round trip both ends run, and the
arguments a token cannot carry. The shared cases are in protocol/vectors/enroll.json."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from protocol import (
    ENROLL_TOKEN_PREFIX,
    AuthError,
    ErrorCode,
    canonical_json,
    check_enroll_request,
    key_id,
    make_enroll_request,
    make_enroll_token,
    parse_enroll_token,
    public_key_text,
    sign_enrolled,
    verify_enrolled,
)
from tests.protocol.helpers import CONNECTOR_ID, NOW, RELAY_KEY, TUNNEL


def test_round_trip() -> None:
    token = make_enroll_token(
        RELAY_KEY, relay_url="http://127.0.0.1:8787", tunnel=TUNNEL, connector_id=CONNECTOR_ID,
        now=NOW,
    )  # fmt: skip
    claims = parse_enroll_token(token)
    assert (claims.exp - claims.iat, claims.relay_key_id) == (900, key_id(RELAY_KEY))
    connector = Ed25519PrivateKey.generate()
    body = make_enroll_request(token + "\n", connector)
    assert body["token"] == token
    request = check_enroll_request(
        canonical_json(body), tunnel=TUNNEL, tunnels={TUNNEL}, relay_keys=[RELAY_KEY.public_key()],
        now=NOW + 10,
    )  # fmt: skip
    assert (request.public_key, request.key_id) == (public_key_text(connector), key_id(connector))
    verify_enrolled(sign_enrolled(RELAY_KEY, request), token=token, public_key=request.public_key)
    # a fresh jti each time
    again = make_enroll_token(
        RELAY_KEY, relay_url="http://127.0.0.1:8787", tunnel=TUNNEL, connector_id=CONNECTOR_ID,
        now=NOW,
    )  # fmt: skip
    assert parse_enroll_token(again).jti != claims.jti


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"lifetime": 0}, '"iat" < "exp"'),
        ({"lifetime": 8 * 86400}, "over 7 days"),
        ({"relay_url": "https://relay.example.com/"}, "no path"),
        ({"tunnel": "t" * 129}, '"tunnel"'),
        ({"connector_id": "conn\u00e9"}, '"connector_id"'),
    ],
)
def test_make_refuses_what_a_token_cannot_carry(changes: dict[str, object], problem: str) -> None:
    args: dict[str, object] = {
        "relay_url": "https://relay.example.com", "tunnel": TUNNEL, "connector_id": CONNECTOR_ID,
        "now": NOW, **changes,
    }  # fmt: skip
    with pytest.raises(ValueError, match=problem):
        make_enroll_token(RELAY_KEY, **args)  # type: ignore[arg-type]


def test_messages_never_carry_the_token() -> None:
    token = make_enroll_token(
        RELAY_KEY, relay_url="https://r.example", tunnel=TUNNEL, connector_id=CONNECTOR_ID, now=NOW
    )
    for bad in (token[:-3], token[: len(ENROLL_TOKEN_PREFIX) + 40], token + "x"):
        with pytest.raises(AuthError) as info:
            parse_enroll_token(bad)
        assert info.value.error_code is ErrorCode.ENROLL_INVALID_TOKEN
        assert token.split(".")[1][:20] not in str(info.value)


@given(st.text(max_size=200))
def test_parse_raises_only_auth_errors(text: str) -> None:
    for candidate in (text, ENROLL_TOKEN_PREFIX + text):
        with pytest.raises(AuthError) as info:
            parse_enroll_token(candidate)
        assert info.value.error_code is ErrorCode.ENROLL_INVALID_TOKEN
