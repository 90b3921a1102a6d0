"""The enrolment vectors (protocol/vectors/enroll.json, SPEC.md 8.7), written by gen_vectors.

Every outcome is computed by protocol/_enroll.py and then pinned by the committed file, which the
Worker's tests run too. The keys are the FIXED TEST KEYS of helpers.py: test-only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protocol import (
    AuthError,
    canonical_json,
    check_enroll_request,
    check_enroll_time,
    key_id,
    make_enroll_request,
    make_enroll_token,
    parse_enroll_token,
    public_key_text,
    sign_enrolled,
    verify_enrolled,
)
from protocol._auth import b64url
from protocol._enroll import ENROLL_CONTEXT, ENROLL_PROOF_CONTEXT, ENROLLED_CONTEXT
from tests.protocol.helpers import (
    CONNECTOR_ID,
    CONNECTOR_KEY,
    CONNECTOR_SEED,
    NOW,
    OTHER_KEY,
    OTHER_SEED,
    RELAY_KEY,
    RELAY_SEED,
    TUNNEL,
)

RELAY_URL = "https://relay.example.com"
JTI = b64url(b"enroll-jti-0001!")
LIFETIME = 900
KEYS = {"relay": RELAY_KEY, "connector": CONNECTOR_KEY, "other": OTHER_KEY}
SEEDS = {"relay": RELAY_SEED, "connector": CONNECTOR_SEED, "other": OTHER_SEED}
TEST_ONLY = "TEST-ONLY KEYS: these private seeds are public. Never use them outside tests."


def claims(**changes: Any) -> dict[str, Any]:
    """The good token's claims with ``changes``."""
    base = {
        "v": 1,
        "relay_url": RELAY_URL,
        "tunnel": TUNNEL,
        "connector_id": CONNECTOR_ID,
        "relay_key": public_key_text(RELAY_KEY),
        "relay_key_id": key_id(RELAY_KEY),
        "iat": NOW,
        "exp": NOW + LIFETIME,
        "jti": JTI,
    }
    return {**base, **changes}


def signed_token(obj: Mapping[str, Any], key: Ed25519PrivateKey = RELAY_KEY) -> str:
    """A token over ``obj`` signed by ``key``, whatever ``obj`` holds (for invalid vectors)."""
    body = canonical_json(obj)
    return f"edgetds-enroll-1.{b64url(body)}.{b64url(key.sign(ENROLL_CONTEXT + body))}"


def altered(token: str, **changes: Any) -> str:
    """``token`` with its claims changed and its signature kept."""
    parts = token.split(".")
    body = canonical_json(claims(**changes))
    return f"{parts[0]}.{b64url(body)}.{parts[2]}"


GOOD = make_enroll_token(
    RELAY_KEY, relay_url=RELAY_URL, tunnel=TUNNEL, connector_id=CONNECTOR_ID, now=NOW,
    lifetime=LIFETIME, jti=JTI,
)  # fmt: skip
OTHER_RELAY = make_enroll_token(
    OTHER_KEY, relay_url=RELAY_URL, tunnel=TUNNEL, connector_id=CONNECTOR_ID, now=NOW,
    lifetime=LIFETIME, jti=JTI,
)  # fmt: skip
OTHER_TUNNEL = "tunnel-other"


def outcome(fn: Callable[[], Any]) -> dict[str, Any]:
    try:
        fn()
    except AuthError as exc:
        return {"valid": False, "error": str(exc.error_code)}
    return {"valid": True}


def token_vectors() -> list[dict[str, Any]]:
    spaced = b64url(canonical_json(claims()).replace(b",", b", "))
    cases: list[tuple[str, str, str, int]] = [
        ("enroll-token-good", "a fresh token", GOOD, NOW + 1),
        ("enroll-token-leeway", "4 s past exp is inside the 5 s leeway", GOOD, NOW + LIFETIME + 4),
        ("enroll-token-expired", "6 s past exp", GOOD, NOW + LIFETIME + 6),
        ("enroll-token-not-yet-valid", "6 s before iat", GOOD, NOW - 6),
        ("enroll-token-altered-tunnel", "tunnel changed, signature kept",
         altered(GOOD, tunnel="tunnel-other"), NOW + 1),
        ("enroll-token-altered-connector", "connector_id changed, signature kept",
         altered(GOOD, connector_id="conn-evil"), NOW + 1),
        ("enroll-token-altered-exp", "exp moved later, signature kept",
         altered(GOOD, exp=NOW + 3600), NOW + 1),
        ("enroll-token-swapped-key", "relay_key and relay_key_id replaced by another key's, "
         "signature kept", altered(GOOD, relay_key=public_key_text(OTHER_KEY),
                                   relay_key_id=key_id(OTHER_KEY)), NOW + 1),
        ("enroll-token-truncated", "the last 10 characters cut off", GOOD[:-10], NOW + 1),
        ("enroll-token-one-part", "the signature part missing", GOOD.rsplit(".", 1)[0], NOW + 1),
        ("enroll-token-no-prefix", "without the edgetds-enroll-1. prefix",
         GOOD.removeprefix("edgetds-enroll-1."), NOW + 1),
        ("enroll-token-not-canonical", "claims with spaces (signature over those bytes)",
         signed_raw(spaced), NOW + 1),
        ("enroll-token-key-id-mismatch", "relay_key_id is not its relay_key's id (signed)",
         signed_token(claims(relay_key_id=key_id(OTHER_KEY))), NOW + 1),
        ("enroll-token-bad-relay-key", "relay_key is not an ed25519 key string (signed)",
         signed_token(claims(relay_key="ed25519:AAAA")), NOW + 1),
        ("enroll-token-too-long", "lifetime of 7 days + 1 s (signed)",
         signed_token(claims(exp=NOW + 7 * 86400 + 1)), NOW + 1),
        ("enroll-token-exp-before-iat", "exp == iat (signed)", signed_token(claims(exp=NOW)),
         NOW),
        ("enroll-token-url-path", "relay_url with a path (signed)",
         signed_token(claims(relay_url=RELAY_URL + "/relay")), NOW + 1),
        ("enroll-token-url-wss", "relay_url with wss:// (signed)",
         signed_token(claims(relay_url="wss://relay.example.com")), NOW + 1),
        ("enroll-token-extra-claim", "an extra claim (signed)",
         signed_token(claims(role="admin")), NOW + 1),
        ("enroll-token-v2", "v = 2 (signed)", signed_token(claims(v=2)), NOW + 1),
        ("enroll-token-v-true", "v = true (signed)", signed_token(claims(v=True)), NOW + 1),
        ("enroll-token-short-jti", "jti of 8 bytes (signed)",
         signed_token(claims(jti=b64url(b"12345678"))), NOW + 1),
        ("enroll-token-jti-not-base64", "jti with characters outside base64url (signed)",
         signed_token(claims(jti="not base64url, at all!")), NOW + 1),
        ("enroll-token-connector-space", "connector_id \"conn 1\" (signed)",
         signed_token(claims(connector_id="conn 1")), NOW + 1),
        ("enroll-token-tunnel-slash", "tunnel \"a/b\" (signed)",
         signed_token(claims(tunnel="a/b")), NOW + 1),
        ("enroll-token-empty-tunnel", "tunnel \"\" (signed)", signed_token(claims(tunnel="")),
         NOW + 1),
    ]  # fmt: skip
    vectors = []
    for name, description, token, now in cases:

        def check(token: str = token, now: int = now) -> None:
            check_enroll_time(parse_enroll_token(token), now=now)

        vector = {"name": name, "description": description, "token": token, "now": now,
                  **outcome(check)}  # fmt: skip
        if vector["valid"]:
            vector["claims"] = parse_enroll_token(token).as_json()
            body = token.split(".")[1]
            vector["signing_input_hex"] = (ENROLL_CONTEXT + _unb64(body)).hex()
        vectors.append(vector)
    return vectors


def signed_raw(body_b64: str, key: Ed25519PrivateKey = RELAY_KEY) -> str:
    body = _unb64(body_b64)
    return f"edgetds-enroll-1.{body_b64}.{b64url(key.sign(ENROLL_CONTEXT + body))}"


def _unb64(text: str) -> bytes:
    import base64

    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def request_body(for_token: str = GOOD, **changes: Any) -> bytes:
    """The body the connector posts for ``for_token``, with members changed afterwards."""
    return canonical_json({**make_enroll_request(for_token, CONNECTOR_KEY), **changes})


def proof(key: Ed25519PrivateKey, **changes: Any) -> str:
    signed = {"jti": JTI, "tunnel": TUNNEL, "connector_id": CONNECTOR_ID,
              "public_key": public_key_text(CONNECTOR_KEY), **changes}  # fmt: skip
    return b64url(key.sign(ENROLL_PROOF_CONTEXT + canonical_json(signed)))


def request_vectors() -> list[dict[str, Any]]:
    good = request_body()
    expired = make_enroll_token(
        RELAY_KEY, relay_url=RELAY_URL, tunnel=TUNNEL, connector_id=CONNECTOR_ID, now=NOW - 3600,
        lifetime=LIFETIME, jti=JTI,
    )  # fmt: skip
    gone = make_enroll_token(
        RELAY_KEY, relay_url=RELAY_URL, tunnel="tunnel-gone", connector_id=CONNECTOR_ID, now=NOW,
        lifetime=LIFETIME, jti=JTI,
    )  # fmt: skip
    # the proof is made for this token, then the token's claims are altered
    tampered = request_body(GOOD, token=altered(GOOD, connector_id="conn-evil"))
    base = {"tunnel": TUNNEL, "tunnels": [TUNNEL, OTHER_TUNNEL], "relay_keys": ["relay"],
            "now": NOW + 1, "consumed": []}  # fmt: skip
    cases: list[tuple[str, str, bytes, dict[str, Any]]] = [
        ("enroll-request-good", "a fresh token, its proof, the relay's key", good, {}),
        ("enroll-request-rotated-relay", "the relay has two current keys, the token's second",
         good, {"relay_keys": ["other", "relay"]}),
        ("enroll-request-not-json", "body is not JSON", b"token=x", {}),
        ("enroll-request-array", "body is a JSON array", b"[]", {}),
        ("enroll-request-missing", "no proof member", canonical_json(
            {"token": GOOD, "public_key": public_key_text(CONNECTOR_KEY)}), {}),
        ("enroll-request-extra", "an extra member", request_body(role="admin"), {}),
        ("enroll-request-duplicate", "the token member twice",
         good[:-1] + b',"token":"x"}', {}),
        ("enroll-request-number", "public_key is a number", request_body(public_key=7), {}),
        ("enroll-request-bad-key", "public_key is not ed25519:<32 bytes>",
         request_body(public_key="ed25519:AAAA"), {}),
        ("enroll-request-key-prefix", "public_key without the ed25519: prefix",
         request_body(public_key=public_key_text(CONNECTOR_KEY).removeprefix("ed25519:")), {}),
        ("enroll-request-bad-proof-text", "proof is not base64url",
         request_body(proof="not base64!"), {}),
        ("enroll-request-altered-token", "the token's connector_id changed, signature kept",
         tampered, {}),
        ("enroll-request-other-relay", "a token signed by another relay's key", request_body(
            OTHER_RELAY), {}),
        ("enroll-request-long-token", "a token of over 4096 characters",
         request_body(token=GOOD + "A" * 4096), {}),
        ("enroll-request-wrong-tunnel", "a token for tunnel-test posted to tunnel-other's URL",
         good, {"tunnel": OTHER_TUNNEL}),
        ("enroll-request-unknown-tunnel", "a token for a tunnel this relay does not serve",
         request_body(gone), {"tunnel": "tunnel-gone"}),
        ("enroll-request-expired", "posted an hour after the token expired",
         request_body(expired), {}),
        ("enroll-request-expired-bad-proof", "expired AND a bad proof: expiry is checked first",
         request_body(expired, proof=proof(OTHER_KEY)), {}),
        ("enroll-request-bad-proof", "the proof is signed by another key",
         request_body(proof=proof(OTHER_KEY)), {}),
        ("enroll-request-proof-other-jti", "the proof signs another jti",
         request_body(proof=proof(CONNECTOR_KEY, jti=b64url(b"another-jti-0002"))), {}),
        ("enroll-request-key-swapped", "public_key replaced by another key, proof kept",
         request_body(public_key=public_key_text(OTHER_KEY)), {}),
        ("enroll-request-used", "the token's jti was consumed (a replay)", good,
         {"consumed": [JTI]}),
        ("enroll-request-used-bad-proof", "consumed AND a bad proof: the proof is checked first",
         request_body(proof=proof(OTHER_KEY)), {"consumed": [JTI]}),
    ]  # fmt: skip
    vectors = []
    for name, description, body, changes in cases:
        verify = {**base, **changes}

        def check(body: bytes = body, verify: dict[str, Any] = verify) -> Any:
            return check_enroll_request(
                body, tunnel=verify["tunnel"], tunnels=verify["tunnels"],
                relay_keys=[KEYS[k].public_key() for k in verify["relay_keys"]],
                now=verify["now"], consumed=verify["consumed"],
            )  # fmt: skip

        vector = {"name": name, "description": description, "body_text": body.decode(),
                  "verify": verify, **outcome(check)}  # fmt: skip
        if vector["valid"]:
            vector["answer"] = sign_enrolled(RELAY_KEY, check())
        vectors.append(vector)
    return vectors


def answer_vectors() -> list[dict[str, Any]]:
    request = check_enroll_request(
        request_body(), tunnel=TUNNEL, tunnels=[TUNNEL], relay_keys=[RELAY_KEY.public_key()],
        now=NOW,
    )  # fmt: skip
    good = sign_enrolled(RELAY_KEY, request)
    by_other = sign_enrolled(OTHER_KEY, request)
    forged_id = {**by_other, "relay_key_id": good["relay_key_id"]}
    enrolled = good["enrolled"]
    other_jti = {**enrolled, "jti": b64url(b"another-jti-0002")}
    cases: list[tuple[str, str, Any]] = [
        ("enroll-answer-good", "signed by the token's relay key", good),
        ("enroll-answer-other-key", "signed by another key, with its key id", by_other),
        ("enroll-answer-forged-key-id", "signed by another key, naming the token's key id",
         forged_id),
        ("enroll-answer-altered", "public_key changed after signing",
         {**good, "enrolled": {**enrolled, "public_key": public_key_text(OTHER_KEY)}}),
        ("enroll-answer-other-enrolment", "correctly signed, about another jti",
         {**good, "enrolled": other_jti,
          "sig": b64url(RELAY_KEY.sign(ENROLLED_CONTEXT + canonical_json(other_jti)))}),
        ("enroll-answer-no-enrolled", "no enrolled object",
         {"relay_key_id": good["relay_key_id"], "sig": good["sig"]}),
        ("enroll-answer-not-object", "a JSON array", []),
        ("enroll-answer-sig-number", "sig is a number", {**good, "sig": 7}),
    ]  # fmt: skip
    verify = {"token": GOOD, "public_key": public_key_text(CONNECTOR_KEY)}
    vectors = []
    for name, description, answer in cases:

        def check(answer: Any = answer) -> None:
            verify_enrolled(answer, **verify)

        vector = {"name": name, "description": description, "answer": answer, "verify": verify,
                  **outcome(check)}  # fmt: skip
        if vector["valid"]:
            vector["signing_input_hex"] = (ENROLLED_CONTEXT + canonical_json(enrolled)).hex()
        vectors.append(vector)
    return vectors


def enroll_document() -> dict[str, Any]:
    keys = {
        name: {
            "key_id": key_id(key),
            "public_key": public_key_text(key),
            "seed_hex": SEEDS[name].hex(),
        }
        for name, key in KEYS.items()
    }
    return {
        "comment": TEST_ONLY + " Enrolment vectors (SPEC.md 8.7); see README.md.",
        "keys": keys,
        "tokens": token_vectors(),
        "requests": request_vectors(),
        "answers": answer_vectors(),
    }
