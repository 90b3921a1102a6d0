"""Build protocol/vectors/id_tokens.json: end users' IdP tokens and the verdict every verifier owes.

``gen_vectors.py`` writes it with the other vector files. The outcomes are stated here by hand
(they are the specification, SPEC.md section 8.6), not computed by the Python verifier: both
identity/oidc.py (tests/identity/test_id_token_vectors.py) and the Worker's oidc.js
(relay/worker/test/idtokens.test.js) must reach them. Tokens are signed with Ed25519 (deterministic
signatures) by FIXED TEST KEYS whose seeds are sha256 of a label: test-only.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

NOW = 1_800_000_000
LEEWAY = 30
ISSUER = "https://idp.test"
SHORT_ISSUER = "https://short.idp.test"  # max_token_lifetime_s = 600, one key
AUDIENCE = "edgetds"
DAY = 86_400


def _seed(label: str) -> bytes:
    return hashlib.sha256(f"edgetds id-token test key {label}".encode()).digest()


KEYS = {kid: Ed25519PrivateKey.from_private_bytes(_seed(kid)) for kid in ("a1", "a2", "s1", "x1")}
# a1, a2: ISSUER's JWKS; s1: SHORT_ISSUER's; x1: nobody's (the attacker's).


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def public_jwk(kid: str) -> dict[str, str]:
    raw = KEYS[kid].public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return {"kty": "OKP", "crv": "Ed25519", "x": b64(raw), "kid": kid, "use": "sig", "alg": "EdDSA"}


def text(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def sign(header: str | dict[str, Any], payload: str | dict[str, Any], key: str = "a1") -> str:
    """A compact JWS over the EXACT header/payload text given (dicts are dumped compactly)."""
    head = b64((header if isinstance(header, str) else text(header)).encode())
    body = b64((payload if isinstance(payload, str) else text(payload)).encode())
    signing_input = f"{head}.{body}".encode()
    return f"{head}.{body}.{b64(KEYS[key].sign(signing_input))}"


HEADER = {"alg": "EdDSA", "typ": "JWT", "kid": "a1"}
CLAIMS: dict[str, Any] = {
    "iss": ISSUER,
    "sub": "alice",
    "aud": AUDIENCE,
    "iat": NOW - 60,
    "nbf": NOW - 60,
    "exp": NOW + 240,
    "jti": "jti-1",
    "groups": ["analysts", "finance admins"],
}


def claims(**changes: Any) -> dict[str, Any]:
    """CLAIMS with changes; a value of ``...`` removes the claim."""
    out = {**CLAIMS, **changes}
    return {k: v for k, v in out.items() if v is not ...}


def header(**changes: Any) -> dict[str, Any]:
    out = {**HEADER, **changes}
    return {k: v for k, v in out.items() if v is not ...}


def nested(lists: int) -> Any:
    """A string inside ``lists`` nested lists (in a claim: the payload object is level 1)."""
    value: Any = "deep"
    for _ in range(lists):
        value = [value]
    return value


def _valid() -> list[tuple[str, str, str]]:
    attacker_jwk = {k: v for k, v in public_jwk("x1").items() if k != "kid"}
    return [
        ("good", "a fresh token", sign(HEADER, CLAIMS)),
        ("good-aud-list", "aud is a list holding ours", sign(HEADER, claims(aud=["x", AUDIENCE]))),
        ("good-typ-at-jwt", "RFC 9068 access token type", sign(header(typ="at+jwt"), CLAIMS)),
        (
            "good-typ-media-type",
            "typ compares case-insensitively, application/ prefix optional",
            sign(header(typ="application/AT+JWT"), CLAIMS),
        ),
        ("good-no-typ", "typ is optional", sign(header(typ=...), CLAIMS)),
        (
            "good-ignored-key-headers",
            "jku, x5u, jwk and x5c are ignored: the key still comes from the issuer's JWKS",
            sign(
                header(
                    jku="https://evil.test/jwks",
                    x5u="https://evil.test/cert",
                    jwk=attacker_jwk,
                    x5c=["AAAA"],
                ),
                CLAIMS,
            ),
        ),
        (
            "good-leeway",
            "expired 10 s ago: inside the 30 s leeway",
            sign(HEADER, claims(exp=NOW - 10)),
        ),
        (
            "good-fractional-exp",
            "NumericDate may be fractional",
            sign(HEADER, claims(exp=NOW + 240.5)),
        ),
        ("good-no-iat-nbf", "iat and nbf are optional", sign(HEADER, claims(iat=..., nbf=...))),
        (
            "good-lifetime-max",
            "exp - iat is exactly max_token_lifetime_s",
            sign(HEADER, claims(iat=NOW - 60, exp=NOW - 60 + DAY)),
        ),
        (
            "good-no-kid-one-key",
            "no kid, and the issuer has exactly one key",
            sign(header(kid=...), claims(iss=SHORT_ISSUER), key="s1"),
        ),
        (
            "good-unicode-claims",
            "group names arrive exactly as sent: no case folding, no normalization, no trimming",
            sign(HEADER, claims(groups=["Zu\u0308rich", "Z\u00fcrich", " admins ", "ADMINS"])),
        ),
        ("good-nesting-16", "16 levels of nesting", sign(HEADER, claims(deep=nested(15)))),
        (
            "good-number-64-chars",
            "a 64-character number literal",
            sign(HEADER, text(CLAIMS)[:-1] + ',"big":1' + "0" * 63 + "}"),
        ),
    ]


def _invalid() -> list[tuple[str, str, str, str]]:
    body = text(CLAIMS)
    bad = "auth.invalid_token"
    aud = "auth.wrong_audience"
    unsigned = f"{b64(text(header(alg='none')).encode())}.{b64(body.encode())}."
    head, _, sig = sign(HEADER, CLAIMS).split(".")
    tampered = f"{head}.{sign(HEADER, claims(sub='admin')).split('.')[1]}.{sig}"
    cases: list[tuple[str, str, str, str]] = [
        # -- numeric dates
        ("exp-string", "exp as a JSON string", sign(HEADER, claims(exp=str(NOW + 240))), bad),
        ("exp-boolean", "exp true", sign(HEADER, claims(exp=True)), bad),
        ("exp-null", "exp null", sign(HEADER, claims(exp=None)), bad),
        ("exp-missing", "no exp", sign(HEADER, claims(exp=...)), bad),
        ("exp-negative", "exp -1", sign(HEADER, claims(exp=-1, iat=..., nbf=...)), bad),
        ("exp-2-53", "exp 2^53 (over 2^53-1)", sign(HEADER, claims(exp=2**53)), bad),
        ("exp-1e300", "exp 1e300", sign(HEADER, body.replace(str(NOW + 240), "1e300")), bad),
        (
            "exp-1e400",
            "exp 1e400 (parses as infinity)",
            sign(HEADER, body.replace(str(NOW + 240), "1e400")),
            bad,
        ),
        ("exp-nan", "exp NaN (not JSON)", sign(HEADER, body.replace(str(NOW + 240), "NaN")), bad),
        ("exp-object", "exp an object", sign(HEADER, claims(exp={"t": NOW + 240})), bad),
        ("nbf-string", "nbf as a string", sign(HEADER, claims(nbf=str(NOW - 60))), bad),
        ("iat-string", "iat as a string", sign(HEADER, claims(iat=str(NOW - 60))), bad),
        # -- times and lifetime
        (
            "expired",
            "expired 31 s ago (leeway 30 s)",
            sign(HEADER, claims(exp=NOW - 31)),
            "auth.expired",
        ),
        (
            "iat-future",
            "iat 120 s ahead",
            sign(HEADER, claims(iat=NOW + 120, nbf=..., exp=NOW + 600)),
            bad,
        ),
        ("nbf-future", "nbf 120 s ahead", sign(HEADER, claims(nbf=NOW + 120, exp=NOW + 600)), bad),
        (
            "nbf-after-exp",
            "nbf later than exp (both inside the leeway: only the order is wrong)",
            sign(HEADER, claims(nbf=NOW + 20, exp=NOW + 10)),
            bad,
        ),
        (
            "iat-after-exp",
            "iat later than exp (both inside the leeway: only the order is wrong)",
            sign(HEADER, claims(iat=NOW + 20, nbf=..., exp=NOW + 10)),
            bad,
        ),
        (
            "lifetime-10-years",
            "exp - iat is ten years",
            sign(HEADER, claims(exp=NOW - 60 + 3650 * DAY)),
            bad,
        ),
        (
            "lifetime-over-max",
            "exp - iat is max_token_lifetime_s + 1",
            sign(HEADER, claims(exp=NOW - 60 + DAY + 1)),
            bad,
        ),
        (
            "lifetime-no-iat",
            "no iat, exp two days ahead",
            sign(HEADER, claims(iat=..., nbf=..., exp=NOW + 2 * DAY)),
            bad,
        ),
        (
            "lifetime-issuer-max",
            "one hour is over this issuer's max_token_lifetime_s of 600",
            sign(header(kid="s1"), claims(iss=SHORT_ISSUER, exp=NOW - 60 + 3600), key="s1"),
            bad,
        ),
        # -- duplicate member names
        (
            "dup-sub",
            "payload with sub twice (last would win)",
            sign(HEADER, body[:-1] + ',"sub":"admin"}'),
            bad,
        ),
        (
            "dup-groups",
            "payload with groups twice",
            sign(HEADER, body[:-1] + ',"groups":["admins"]}'),
            bad,
        ),
        (
            "dup-escaped",
            "the second sub is spelled with an escape",
            sign(HEADER, body[:-1] + ',"s\\u0075b":"admin"}'),
            bad,
        ),
        (
            "dup-nested",
            "a duplicate inside a nested object",
            sign(HEADER, body[:-1] + ',"realm_access":{"roles":["a"],"roles":["admin"]}}'),
            bad,
        ),
        (
            "dup-header-alg",
            "header with alg twice",
            sign('{"alg":"none","alg":"EdDSA","kid":"a1"}', CLAIMS),
            bad,
        ),
        (
            "dup-header-kid",
            "header with kid twice",
            sign('{"alg":"EdDSA","kid":"x1","kid":"a1"}', CLAIMS),
            bad,
        ),
        # -- header members
        ("cty-jwt", "cty JWT (a nested token)", sign(header(cty="JWT"), CLAIMS), bad),
        ("cty-other", "any cty", sign(header(cty="json"), CLAIMS), bad),
        ("crit", "crit naming an extension", sign(header(crit=["exp"], exp=NOW), CLAIMS), bad),
        ("crit-empty", "crit empty", sign(header(crit=[]), CLAIMS), bad),
        ("b64-false", "b64 false (unencoded payload)", sign(header(b64=False), CLAIMS), bad),
        ("typ-logout", "a logout token", sign(header(typ="logout+jwt"), CLAIMS), bad),
        ("typ-dpop", "a DPoP proof", sign(header(typ="dpop+jwt"), CLAIMS), bad),
        ("typ-number", "typ 1", sign(header(typ=1), CLAIMS), bad),
        ("typ-null", "typ null", sign(header(typ=None), CLAIMS), bad),
        ("kid-number", "kid 1", sign(header(kid=1), CLAIMS), bad),
        ("kid-null", "kid null", sign(header(kid=None), CLAIMS), bad),
        ("kid-unknown", "kid not in the JWKS", sign(header(kid="nope"), CLAIMS), bad),
        (
            "kid-missing-two-keys",
            "no kid, and the issuer has two keys",
            sign(header(kid=...), CLAIMS),
            bad,
        ),
        # -- algorithms and keys
        ("alg-none", "alg none, empty signature", unsigned, bad),
        ("alg-none-sig", "alg none with a signature", sign(header(alg="none"), CLAIMS), bad),
        ("alg-hs256", "alg HS256", sign(header(alg="HS256"), CLAIMS), bad),
        (
            "alg-rs256-ed-key",
            "alg RS256 over an Ed25519 key",
            sign(header(alg="RS256"), CLAIMS),
            bad,
        ),
        ("alg-lowercase", "alg eddsa", sign(header(alg="eddsa"), CLAIMS), bad),
        ("alg-missing", "no alg", sign(header(alg=...), CLAIMS), bad),
        (
            "wrong-key",
            "signed by a key not in the JWKS, kid of one that is",
            sign(HEADER, CLAIMS, key="x1"),
            bad,
        ),
        (
            "embedded-jwk",
            "the attacker's key carried in the jwk header",
            sign(header(jwk=public_jwk("x1")), CLAIMS, key="x1"),
            bad,
        ),
        # -- other claim types
        ("sub-number", "sub 42", sign(HEADER, claims(sub=42)), bad),
        ("sub-empty", "sub empty", sign(HEADER, claims(sub="")), bad),
        ("sub-missing", "no sub", sign(HEADER, claims(sub=...)), bad),
        ("sub-list", "sub a list", sign(HEADER, claims(sub=["alice"])), bad),
        ("iss-number", "iss 1", sign(HEADER, claims(iss=1)), bad),
        ("iss-list", "iss a list", sign(HEADER, claims(iss=[ISSUER])), bad),
        (
            "iss-unknown",
            "an issuer not configured",
            sign(HEADER, claims(iss="https://evil.test")),
            "auth.unknown_issuer",
        ),
        ("jti-number", "jti 7", sign(HEADER, claims(jti=7)), bad),
        ("aud-number", "aud 7", sign(HEADER, claims(aud=7)), bad),
        ("aud-mixed-list", "aud list with a number", sign(HEADER, claims(aud=[AUDIENCE, 7])), bad),
        ("aud-nested-list", "aud list with a list", sign(HEADER, claims(aud=[[AUDIENCE]])), bad),
        ("aud-empty-list", "aud []", sign(HEADER, claims(aud=[])), bad),
        ("aud-empty-string", "aud ''", sign(HEADER, claims(aud="")), bad),
        ("aud-object", "aud an object", sign(HEADER, claims(aud={"a": AUDIENCE})), bad),
        ("aud-missing", "no aud", sign(HEADER, claims(aud=...)), aud),
        ("aud-other", "someone else's audience", sign(HEADER, claims(aud="other")), aud),
        ("aud-case", "audience compared exactly", sign(HEADER, claims(aud="EdgeTDS")), aud),
        # -- encoding
        ("bom", "payload starts with a UTF-8 BOM", sign(HEADER, "\ufeff" + body), bad),
        ("not-object", "payload is an array", sign(HEADER, "[" + body + "]"), bad),
        ("nesting-17", "17 levels of nesting", sign(HEADER, claims(deep=nested(16))), bad),
        (
            "number-65-chars",
            "a 65-character number literal",
            sign(HEADER, body[:-1] + ',"big":1' + "0" * 64 + "}"),
            bad,
        ),
        ("padded", "a padded segment", sign(HEADER, CLAIMS).replace(".", "=.", 1), bad),
        ("two-segments", "no signature segment", sign(HEADER, CLAIMS).rsplit(".", 1)[0], bad),
        ("empty-signature", "empty signature", sign(HEADER, CLAIMS).rsplit(".", 1)[0] + ".", bad),
        ("tampered", "payload swapped after signing", tampered, bad),
    ]
    invalid_utf8 = b64(b'{"iss":"' + ISSUER.encode() + b'","sub":"\xff"}')
    cases.append(
        (
            "invalid-utf8",
            "payload is not UTF-8",
            f"{b64(text(HEADER).encode())}.{invalid_utf8}.AAAA",
            bad,
        )
    )
    return cases


def id_token_document() -> dict[str, Any]:
    """The whole id_tokens.json document (format: protocol/vectors/README.md)."""
    vectors: list[dict[str, Any]] = []
    for name, description, token in _valid():
        payload = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
        vectors.append({
            "name": name, "description": description, "token": token, "valid": True,
            "subject": payload["sub"], "claims": payload,
        })  # fmt: skip
    for name, description, token, code in _invalid():
        vectors.append({
            "name": name, "description": description, "token": token, "valid": False,
            "error": code,
        })  # fmt: skip
    return {
        "comment": "TEST-ONLY KEYS: end users' IdP tokens; see README.md (id_tokens.json)",
        "now": NOW,
        "leeway_s": LEEWAY,
        "issuers": [
            {
                "issuer": ISSUER,
                "audience": [AUDIENCE, "api://edgetds"],
                "jwks": {"keys": [public_jwk("a1"), public_jwk("a2")]},
            },
            {
                "issuer": SHORT_ISSUER,
                "audience": AUDIENCE,
                "max_token_lifetime_s": 600,
                "jwks": {"keys": [public_jwk("s1")]},
            },
        ],
        "vectors": vectors,
    }
