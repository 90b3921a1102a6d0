"""One-token enrolment (SPEC.md 8.7): the token, the connector's proof, the relay's signed answer.

- The relay operator makes a one-time token OFFLINE with the relay's signing key
  (:func:`make_enroll_token`); it carries the relay's URL and public key, the tunnel, the connector
  id, a lifetime and a random ``jti``.
- The connector checks it locally (:func:`parse_enroll_token`, :func:`check_enroll_time`),
  generates its key and POSTs :func:`make_enroll_request` to ``/v1/tunnels/{tunnel}/enroll``.
- The relay runs the checks in SPEC.md's order (:func:`check_enroll_request`), records the key
  and consumes the ``jti`` (its own storage), and answers :func:`sign_enrolled`.
- The connector verifies that answer with the token's relay key (:func:`verify_enrolled`) before
  it writes anything.

Every signature is Ed25519 over a context string plus :func:`canonical_json`. Time is passed in
(``now``, unix seconds). Every failure is an :class:`AuthError` whose ``error_code`` is what the
relay answers (SPEC.md 10); messages never contain a token, a proof or a private key.
"""

from __future__ import annotations

import re
from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ._auth import _random_b64url, _sign, _signature_ok, _unb64url, b64url, key_id, raw_public_key
from ._errors import AuthError, ErrorCode
from ._json import canonical_json, loads_object

__all__ = [
    "ENROLL_DEFAULT_LIFETIME",
    "ENROLL_LEEWAY",
    "ENROLL_MAX_LIFETIME",
    "ENROLL_TOKEN_PREFIX",
    "EnrollClaims",
    "EnrollRequest",
    "check_enroll_request",
    "check_enroll_time",
    "make_enroll_request",
    "make_enroll_token",
    "parse_enroll_token",
    "parse_public_key_text",
    "public_key_text",
    "sign_enrolled",
    "verify_enrolled",
]

#: Every enrolment token starts with this (and names the token format's version).
ENROLL_TOKEN_PREFIX = "edgetds-enroll-1."
#: Signature context of the token, of the connector's proof, and of the relay's answer.
ENROLL_CONTEXT = b"edgetds/1 enroll\n"
ENROLL_PROOF_CONTEXT = b"edgetds/1 enroll-proof\n"
ENROLLED_CONTEXT = b"edgetds/1 enrolled\n"
#: Longest token lifetime (exp - iat), seconds: 7 days.
ENROLL_MAX_LIFETIME = 7 * 24 * 3600
#: The lifetime `edgetds relay enroll` gives a token by default, seconds.
ENROLL_DEFAULT_LIFETIME = 15 * 60
#: Clock leeway on iat and exp, seconds; a consumed jti is remembered until exp + this.
ENROLL_LEEWAY = 5
#: Longest token text a relay reads (a real one is about 600 characters).
MAX_TOKEN_CHARS = 4096

_PUBLIC_KEY_PREFIX = "ed25519:"
_CLAIMS = ("v", "relay_url", "tunnel", "connector_id", "relay_key", "relay_key_id", "iat", "exp",
           "jti")  # fmt: skip
_BODY = ("token", "public_key", "proof")
_MAX_INT = 2**53 - 1
# a tunnel or connector id: what connector.toml accepts for them, and safe in a URL path
_NAME = re.compile(r"[A-Za-z0-9._-]{1,128}")
# http(s) base of a relay: scheme, host (name, IPv4 or [IPv6]), optional port; no path, no user.
_RELAY_URL = re.compile(r"https?://(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")


def public_key_text(key: Ed25519PublicKey | Ed25519PrivateKey) -> str:
    """``ed25519:`` + unpadded base64url of the raw public key (the form connector.toml pins)."""
    return _PUBLIC_KEY_PREFIX + b64url(raw_public_key(key))


def parse_public_key_text(text: Any) -> Ed25519PublicKey:
    """Parse ``ed25519:<base64url raw 32 bytes>``.

    Raises:
        ValueError: not that form.
    """
    if not isinstance(text, str) or not text.startswith(_PUBLIC_KEY_PREFIX):
        raise ValueError('a public key is "ed25519:" + base64url of 32 bytes')
    raw = _unb64url(text[len(_PUBLIC_KEY_PREFIX) :])
    if len(raw) != 32:
        raise ValueError(f"a public key holds 32 bytes, this one {len(raw)}")
    return Ed25519PublicKey.from_public_bytes(raw)


@dataclass(frozen=True, slots=True)
class EnrollClaims:
    """The claims of an enrolment token whose signature verified under its own ``relay_key``."""

    relay_url: str
    tunnel: str
    connector_id: str
    #: ``ed25519:...``: the relay key that signed the token (the connector pins it).
    relay_key: str
    relay_key_id: str
    iat: int
    exp: int
    jti: str

    def as_json(self) -> dict[str, Any]:
        """The claims object as the token carries it."""
        return {"v": 1, **{name: getattr(self, name) for name in self.__slots__}}


@dataclass(frozen=True, slots=True)
class EnrollRequest:
    """An enrolment request that passed every check but the ``jti`` replay check's atomicity."""

    claims: EnrollClaims
    #: ``ed25519:...``: the connector's new public key.
    public_key: str
    #: ``protocol.key_id`` of it.
    key_id: str


def _invalid(message: str) -> AuthError:
    return AuthError(message, error_code=ErrorCode.ENROLL_INVALID_TOKEN)


def _name_ok(value: Any) -> bool:
    return isinstance(value, str) and _NAME.fullmatch(value) is not None


def _check_claims(claims: Mapping[str, Any]) -> None:
    if sorted(claims) != sorted(_CLAIMS) or claims["v"] != 1 or type(claims["v"]) is not int:
        raise _invalid(f"enrolment token claims must be exactly {', '.join(_CLAIMS)} with v = 1")
    url = claims["relay_url"]
    if not isinstance(url, str) or not _RELAY_URL.fullmatch(url):
        raise _invalid('enrolment token "relay_url" must be http(s)://host[:port] with no path')
    for name in ("tunnel", "connector_id"):
        if not _name_ok(claims[name]):
            raise _invalid(
                f'enrolment token "{name}" must be 1..128 of the characters A-Z a-z 0-9 . _ -'
            )
    iat, exp = claims["iat"], claims["exp"]
    if type(iat) is not int or type(exp) is not int or not 0 <= iat < exp <= _MAX_INT:
        raise _invalid('enrolment token needs integer "iat" < "exp" (unix seconds)')
    if exp - iat > ENROLL_MAX_LIFETIME:
        raise _invalid("enrolment token lifetime (exp - iat) is over 7 days")
    jti = claims["jti"]
    try:
        ok = isinstance(jti, str) and 16 <= len(_unb64url(jti)) <= 64
    except ValueError:
        ok = False
    if not ok:
        raise _invalid('enrolment token "jti" must be 16..64 random bytes, base64url')


def make_enroll_token(
    relay_key: Ed25519PrivateKey,
    *,
    relay_url: str,
    tunnel: str,
    connector_id: str,
    now: int,
    lifetime: int = ENROLL_DEFAULT_LIFETIME,
    jti: str | None = None,
) -> str:
    """A one-time enrolment token, made offline with the relay's signing key.

    Args:
        relay_key: the relay's Ed25519 key (the one that signs HELLOs).
        relay_url: the relay's http(s) base URL (``https://host[:port]``, no path).
        tunnel, connector_id: what the token enrols.
        now: unix seconds (``iat``).
        lifetime: ``exp - iat``, seconds, in (0, 7 days].
        jti: the token id (default: 128 random bits, base64url).

    Raises:
        ValueError: an argument the token cannot carry (the message says which).
    """
    claims = {
        "v": 1,
        "relay_url": relay_url,
        "tunnel": tunnel,
        "connector_id": connector_id,
        "relay_key": public_key_text(relay_key),
        "relay_key_id": key_id(relay_key),
        "iat": now,
        "exp": now + lifetime,
        "jti": jti if jti is not None else _random_b64url(),
    }
    try:
        _check_claims(claims)
    except AuthError as exc:
        raise ValueError(str(exc)) from None
    body = canonical_json(claims)
    return f"{ENROLL_TOKEN_PREFIX}{b64url(body)}.{b64url(relay_key.sign(ENROLL_CONTEXT + body))}"


def parse_enroll_token(token: str) -> EnrollClaims:
    """Parse an enrolment token and verify its signature with the relay key it carries.

    This proves the token is whole and unaltered, not that the right relay made it: a relay
    checks ``relay_key`` against its own keys (:func:`check_enroll_request`), a connector pins it.

    Raises:
        AuthError: ``enroll.invalid_token``, saying what is wrong.
    """
    token = token.strip()
    if not token.startswith(ENROLL_TOKEN_PREFIX):
        raise _invalid(
            f"not an enrolment token (it starts with {ENROLL_TOKEN_PREFIX!r}); copy the whole "
            "line `edgetds relay enroll` printed"
        )
    parts = token[len(ENROLL_TOKEN_PREFIX) :].split(".")
    try:
        if len(parts) != 2:
            raise ValueError("two parts")
        body, sig = _unb64url(parts[0]), _unb64url(parts[1])
        claims = loads_object(body)
    except ValueError:
        raise _invalid(
            "enrolment token is damaged (not two base64url JSON parts); was it cut short "
            "when copied?"
        ) from None
    _check_claims(claims)
    if body != canonical_json(claims):
        raise _invalid("enrolment token claims are not in canonical JSON")
    relay_key = _parse_key(claims["relay_key"], "relay_key")
    if claims["relay_key_id"] != key_id(relay_key):
        raise _invalid('enrolment token "relay_key_id" is not the key id of its "relay_key"')
    if not _signature_ok(relay_key, ENROLL_CONTEXT, {**claims, "sig": b64url(sig)}):
        raise _invalid(
            "enrolment token signature does not verify: it was altered or damaged; ask the relay "
            "operator for a new one"
        )
    return EnrollClaims(**{k: v for k, v in claims.items() if k != "v"})


def _parse_key(text: Any, what: str) -> Ed25519PublicKey:
    try:
        return parse_public_key_text(text)
    except ValueError as exc:
        raise _invalid(f'enrolment token "{what}": {exc}') from None


def check_enroll_time(claims: EnrollClaims, *, now: float, leeway: int = ENROLL_LEEWAY) -> None:
    """``iat - leeway <= now <= exp + leeway``.

    Raises:
        AuthError: ``enroll.expired``.
    """
    if now > claims.exp + leeway:
        raise AuthError(
            f"enrolment token expired at {claims.exp} (unix time); ask the relay operator for a "
            f"new one: edgetds relay enroll --tunnel {claims.tunnel} --connector "
            f"{claims.connector_id}",
            error_code=ErrorCode.ENROLL_EXPIRED,
        )
    if now < claims.iat - leeway:
        raise AuthError(
            f"enrolment token is not valid before {claims.iat} (unix time): check the clocks",
            error_code=ErrorCode.ENROLL_EXPIRED,
        )


def _proof_input(claims: EnrollClaims, public_key: str) -> bytes:
    signed = {
        "jti": claims.jti,
        "tunnel": claims.tunnel,
        "connector_id": claims.connector_id,
        "public_key": public_key,
    }
    return ENROLL_PROOF_CONTEXT + canonical_json(signed)


def make_enroll_request(token: str, connector_key: Ed25519PrivateKey) -> dict[str, str]:
    """The body the connector POSTs: the token, its new public key and the proof it holds the key.

    Raises:
        AuthError: ``enroll.invalid_token`` (the token does not parse).
    """
    claims = parse_enroll_token(token)
    public_key = public_key_text(connector_key)
    proof = b64url(connector_key.sign(_proof_input(claims, public_key)))
    return {"token": token.strip(), "public_key": public_key, "proof": proof}


def check_enroll_request(
    body: bytes,
    *,
    tunnel: str,
    relay_keys: Sequence[Ed25519PublicKey],
    tunnels: Container[str],
    now: float,
    consumed: Container[str] = (),
) -> EnrollRequest:
    """The relay's checks of ``POST /v1/tunnels/{tunnel}/enroll``, in SPEC.md 8.7's order.

    Args:
        body: the request body.
        tunnel: the tunnel of the URL.
        relay_keys: the relay's CURRENT signing keys (public halves).
        tunnels: the tunnels this relay serves.
        now: unix seconds.
        consumed: the jtis already consumed for ``tunnel``. The caller records the key and
            consumes the jti atomically with this check (one lock, one storage write).

    Raises:
        AuthError: ``request.invalid`` (400), ``enroll.invalid_token`` (401),
            ``tunnel.unknown`` (404), ``enroll.expired`` (401), ``enroll.invalid_proof`` (400),
            ``enroll.used`` (409).
    """
    try:
        doc = loads_object(body)
    except ValueError:
        doc = {}
    if sorted(doc) != sorted(_BODY) or not all(isinstance(doc[k], str) for k in _BODY):
        raise AuthError(
            'enrolment body must be a JSON object {"token", "public_key", "proof"} of strings',
            error_code=ErrorCode.REQUEST_INVALID,
        )
    token, public_key, proof = doc["token"], doc["public_key"], doc["proof"]
    try:
        new_key = parse_public_key_text(public_key)
        proof_sig = _unb64url(proof)
    except ValueError as exc:
        raise AuthError(
            f'enrolment body "public_key" or "proof" is malformed: {exc}',
            error_code=ErrorCode.REQUEST_INVALID,
        ) from None
    if len(token) > MAX_TOKEN_CHARS:
        raise _invalid(f"enrolment token is longer than {MAX_TOKEN_CHARS} characters")
    claims = parse_enroll_token(token)
    if claims.relay_key not in {public_key_text(key) for key in relay_keys}:
        raise _invalid(
            "enrolment token was signed by a key that is not this relay's signing key (made for "
            "another relay, or before the relay's key changed); ask for a new one"
        )
    if claims.tunnel != tunnel:
        raise _invalid(
            f"enrolment token is for another tunnel than {tunnel!r}; post it to its own "
            "tunnel's URL"
        )
    if tunnel not in tunnels:
        raise AuthError(
            f"tunnel {tunnel!r} is not served here", error_code=ErrorCode.TUNNEL_UNKNOWN
        )
    check_enroll_time(claims, now=now)
    if not _proof_ok(new_key, proof_sig, _proof_input(claims, public_key)):
        raise AuthError(
            '"proof" does not verify with "public_key": the connector must sign the proof with '
            "the key it enrols",
            error_code=ErrorCode.ENROLL_INVALID_PROOF,
        )
    if claims.jti in consumed:
        raise AuthError(
            "enrolment token was already used; ask the relay operator for a new one",
            error_code=ErrorCode.ENROLL_USED,
        )
    return EnrollRequest(claims, public_key, key_id(new_key))


def _proof_ok(key: Ed25519PublicKey, sig: bytes, signed: bytes) -> bool:
    try:
        key.verify(sig, signed)
    except InvalidSignature:
        return False
    return True


def enrolled_object(request: EnrollRequest) -> dict[str, str]:
    """The ``"enrolled"`` object of the relay's answer."""
    return {
        "tunnel": request.claims.tunnel,
        "connector_id": request.claims.connector_id,
        "public_key": request.public_key,
        "key_id": request.key_id,
        "jti": request.claims.jti,
    }


def sign_enrolled(relay_key: Ed25519PrivateKey, request: EnrollRequest) -> dict[str, Any]:
    """The relay's 200 answer: ``{"enrolled": {...}, "relay_key_id", "sig"}``.

    Args:
        relay_key: the relay key the token named (so the connector can verify with it).
        request: what :func:`check_enroll_request` returned.
    """
    enrolled = enrolled_object(request)
    signed = _sign(relay_key, ENROLLED_CONTEXT, enrolled)
    return {"enrolled": enrolled, "relay_key_id": key_id(relay_key), "sig": signed["sig"]}


def verify_enrolled(answer: Any, *, token: str, public_key: str) -> None:
    """Connector: check the relay's answer before writing any file.

    Args:
        answer: the parsed JSON answer.
        token: the token that was posted (its ``relay_key`` must have signed the answer).
        public_key: the ``ed25519:...`` key that was posted.

    Raises:
        AuthError: ``auth.relay_rejected``: the answer is not the token's relay's, or not about
            this enrolment.
    """
    claims = parse_enroll_token(token)
    expected = {
        "tunnel": claims.tunnel,
        "connector_id": claims.connector_id,
        "public_key": public_key,
        "key_id": key_id(parse_public_key_text(public_key)),
        "jti": claims.jti,
    }
    if not isinstance(answer, Mapping) or not isinstance(answer.get("enrolled"), Mapping):
        raise _rejected('the relay\'s answer has no "enrolled" object')
    if answer.get("relay_key_id") != claims.relay_key_id:
        raise _rejected(
            "the relay's answer is signed by another key than the one the token pins (is "
            f"{claims.relay_url} the relay that made the token?)"
        )
    enrolled = answer["enrolled"]
    relay_key = parse_public_key_text(claims.relay_key)
    if not _signature_ok(relay_key, ENROLLED_CONTEXT, {**enrolled, "sig": answer.get("sig")}):
        raise _rejected(
            "the relay's answer signature does not verify with the relay key the token pins"
        )
    if dict(enrolled) != expected:
        raise _rejected("the relay's answer is about another enrolment")


def _rejected(message: str) -> AuthError:
    return AuthError(message, error_code=ErrorCode.AUTH_RELAY_REJECTED)
