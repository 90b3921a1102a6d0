"""Mutual authentication and identity tagging: connector tokens, the relay HELLO, attestations.

- The connector proves its key with a short-lived EdDSA JWT (:func:`make_connector_token`), checked
  by the relay before the WebSocket upgrade (:func:`verify_connector_token`).
- The relay proves its key with a HELLO signed over the token's nonce and a fresh session id
  (:func:`sign_hello`), checked by the connector against pinned keys (:func:`verify_hello`).
- Every QUERY carries a relay attestation binding query id, statement, params, options and token
  hash to the session (:func:`make_attestation`, :func:`verify_attestation`).

Signatures are Ed25519 over a context string plus :func:`canonical_json` of the object without
``"sig"``, so the same bytes are signed in Python and JavaScript. Keys are ``cryptography`` key
objects (PEM files, signing); every signature is verified by libsodium (PyNaCl), which takes
about half the time of OpenSSL's Ed25519 verify, paid once per QUERY by the connector, and
refuses non-canonical signatures and small-order keys as well. Time is always passed in
(``now``, unix seconds): this module owns no clock. Every failure is an :class:`AuthError` whose
message says what failed, never a token or a key.
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from nacl.bindings import crypto_sign, crypto_sign_open, crypto_sign_seed_keypair
from nacl.exceptions import BadSignatureError

from . import events as ev
from ._errors import AuthError, ErrorCode
from ._flow import Limits
from ._json import canonical_json, loads_object

__all__ = [
    "ATTESTATION_MAX_SKEW",
    "HELLO_CONTEXT",
    "QUERY_CONTEXT",
    "TOKEN_LEEWAY",
    "TOKEN_MAX_LIFETIME",
    "ConnectorClaims",
    "ReplayCache",
    "b64url",
    "key_id",
    "make_attestation",
    "make_connector_token",
    "raw_public_key",
    "sign_hello",
    "verify_attestation",
    "verify_connector_token",
    "verify_hello",
]

#: Signature context of the relay HELLO.
HELLO_CONTEXT = b"edgetds/1 hello\n"
#: Signature context of a QUERY attestation.
QUERY_CONTEXT = b"edgetds/1 query\n"
#: Longest connector-token lifetime (exp - iat), seconds.
TOKEN_MAX_LIFETIME = 60
#: Clock leeway when checking a connector token's exp/iat, seconds.
TOKEN_LEEWAY = 5
#: Largest |now - ts| accepted for an attestation, seconds.
ATTESTATION_MAX_SKEW = 60

_B64URL = re.compile(r"[A-Za-z0-9_-]*")
_ATTESTATION_STRINGS = (
    "relay_key_id",
    "session_id",
    "nonce",
    "statement_sha256",
    "params_sha256",
    "token_sha256",
    "options_sha256",
    "query_id",
    "sig",
)


def b64url(data: bytes) -> str:
    """Unpadded base64url (RFC 4648 section 5), as JWTs and signatures use it."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64url(text: str) -> bytes:
    if not _B64URL.fullmatch(text) or len(text) % 4 == 1:
        raise ValueError("not unpadded base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def raw_public_key(key: Ed25519PublicKey | Ed25519PrivateKey) -> bytes:
    """The 32 raw bytes of a public key (or of a private key's public half)."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(key: Ed25519PublicKey | Ed25519PrivateKey) -> str:
    """The key id of an Ed25519 key (``relay_key_id``): the first 16 characters of
    base64url(sha256(raw public key))."""
    return b64url(hashlib.sha256(raw_public_key(key)).digest())[:16]


def _random_b64url() -> str:
    return b64url(secrets.token_bytes(16))


@lru_cache(maxsize=16)
def _sodium_secret(key: Ed25519PrivateKey) -> bytes:
    """libsodium's 64-byte secret key of ``key``: seed and public key. Keyed by the key object
    (it hashes by identity and the cache holds it), so each key is expanded once."""
    return crypto_sign_seed_keypair(key.private_bytes_raw())[1]


def _signature(key: Ed25519PrivateKey, data: bytes) -> bytes:
    """``key``'s Ed25519 signature of ``data``. Ed25519 signatures are deterministic, so this is
    byte for byte ``key.sign(data)``; libsodium's signing costs about half of OpenSSL's here."""
    return crypto_sign(data, _sodium_secret(key))[:64]


def _sign(key: Ed25519PrivateKey, context: bytes, obj: Mapping[str, Any]) -> dict[str, Any]:
    unsigned = {k: v for k, v in obj.items() if k != "sig"}
    return {**unsigned, "sig": b64url(_signature(key, context + canonical_json(unsigned)))}


#: each verifying key's raw bytes, by the key object (keys are immutable; the entry holds the
#: object, so its id is not reused while it is here): the relay keys are a handful of objects
#: for the life of the process, and each QUERY's attestation is verified with one of them
_RAW_KEYS: dict[int, tuple[Ed25519PublicKey, bytes]] = {}


def _verifies(key: Ed25519PublicKey, sig: bytes, data: bytes) -> bool:
    """Whether ``sig`` is ``key``'s Ed25519 signature of ``data`` (libsodium's verify)."""
    if len(sig) != 64:
        return False
    entry = _RAW_KEYS.get(id(key))
    if entry is None or entry[0] is not key:
        if len(_RAW_KEYS) >= 64:
            _RAW_KEYS.clear()
        entry = _RAW_KEYS[id(key)] = (key, key.public_bytes_raw())
    try:
        crypto_sign_open(sig + data, entry[1])
    except BadSignatureError:
        return False
    return True


def _signature_ok(key: Ed25519PublicKey, context: bytes, obj: Mapping[str, Any]) -> bool:
    try:
        sig = _unb64url(obj["sig"])
        data = context + canonical_json({k: v for k, v in obj.items() if k != "sig"})
    except (ValueError, TypeError, KeyError):
        return False
    return _verifies(key, sig, data)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


#: ``_sha256(canonical_json({}))``: the options (and params) of most queries are empty
_EMPTY_OBJECT_SHA256 = _sha256(b"{}")


def _object_sha256(obj: Mapping[str, Any]) -> str:
    """``_sha256(canonical_json(dict(obj)))``, without encoding an empty object."""
    if obj == {}:
        return _EMPTY_OBJECT_SHA256
    return _sha256(canonical_json(dict(obj)))


# -- replay ---------------------------------------------------------------------------------------


class ReplayCache:
    """Remembers ids (token jti, attestation nonce, query id) until they expire.

    Args:
        ttl: seconds an id is remembered when no explicit expiry is given. For attestation nonces
            use at least ``2 * ATTESTATION_MAX_SKEW``.
        max_entries: when this many unexpired ids are held, new ids are refused (fail closed).
    """

    def __init__(self, ttl: float, *, max_entries: int = 1_000_000) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._expiry: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []

    def __len__(self) -> int:
        return len(self._expiry)

    def remember(self, key: str, *, now: float, expires_at: float | None = None) -> bool:
        """Record ``key``; return True if it is new, False if seen before (or the cache is full).

        Args:
            key: the id.
            now: the current time (unix seconds); expired ids are forgotten first.
            expires_at: when to forget ``key`` (default ``now + ttl``).
        """
        while self._heap and self._heap[0][0] <= now:
            # One heap entry per remembered key: a key is re-added only after it was popped.
            del self._expiry[heapq.heappop(self._heap)[1]]
        if key in self._expiry or len(self._expiry) >= self.max_entries:
            return False
        expiry = now + self.ttl if expires_at is None else expires_at
        self._expiry[key] = expiry
        heapq.heappush(self._heap, (expiry, key))
        return True


# -- connector token ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConnectorClaims:
    """The verified claims of a connector token."""

    connector_id: str
    tunnel: str
    jti: str
    nonce: str
    iat: int
    exp: int
    #: The registered key the token verified with (raw 32 bytes, hex): during a key rotation a
    #: connector id has several, and the relay ends sessions whose key was unregistered.
    public_key_hex: str


def _audience(tunnel: str) -> str:
    return f"edgetds:relay:{tunnel}"


def make_connector_token(
    private_key: Ed25519PrivateKey,
    *,
    connector_id: str,
    tunnel: str,
    now: int,
    lifetime: int = TOKEN_MAX_LIFETIME,
    jti: str | None = None,
    nonce: str | None = None,
) -> str:
    """The connector's upgrade token: an EdDSA JWT (``Authorization: Bearer <token>``).

    Args:
        private_key: the connector's Ed25519 key (its public key is registered at the relay).
        connector_id: the ``kid``, ``iss`` and ``sub``.
        tunnel: the tunnel to join (``aud`` = ``edgetds:relay:<tunnel>``).
        now: unix seconds (``iat``).
        lifetime: ``exp - iat`` in seconds, at most 60.
        jti: the token id (default: 128 random bits, base64url).
        nonce: the nonce the relay's HELLO must echo (default: 128 random bits, base64url).
    """
    if not 0 < lifetime <= TOKEN_MAX_LIFETIME:
        raise ValueError(f"lifetime must be in (0, {TOKEN_MAX_LIFETIME}] seconds, got {lifetime}")
    header = {"alg": "EdDSA", "typ": "JWT", "kid": connector_id}
    claims = {
        "iss": connector_id,
        "sub": connector_id,
        "aud": _audience(tunnel),
        "iat": now,
        "exp": now + lifetime,
        "jti": jti if jti is not None else _random_b64url(),
        "nonce": nonce if nonce is not None else _random_b64url(),
    }
    signing_input = f"{b64url(canonical_json(header))}.{b64url(canonical_json(claims))}"
    return f"{signing_input}.{b64url(private_key.sign(signing_input.encode('ascii')))}"


def _token_part(part: str, what: str) -> dict[str, Any]:
    try:
        return loads_object(_unb64url(part))
    except ValueError:
        raise AuthError(
            f"connector token {what} is not base64url JSON", error_code=ErrorCode.AUTH_INVALID_TOKEN
        ) from None


def _random_id(claims: Mapping[str, Any], name: str) -> str:
    value = claims.get(name)
    try:
        ok = isinstance(value, str) and len(_unb64url(value)) >= 16
    except ValueError:
        ok = False
    if not ok:
        raise AuthError(
            f'connector token "{name}" must be >= 128 random bits, base64url',
            error_code=ErrorCode.AUTH_INVALID_TOKEN,
        )
    assert isinstance(value, str)
    return value


def verify_connector_token(
    token: str,
    connector_keys: Mapping[str, Ed25519PublicKey | Sequence[Ed25519PublicKey]],
    *,
    tunnel: str,
    now: float,
    replay: ReplayCache | None = None,
    leeway: int = TOKEN_LEEWAY,
) -> ConnectorClaims:
    """Check a connector token before accepting the WebSocket upgrade.

    Args:
        token: the bearer token.
        connector_keys: registered connector public keys by connector id (``kid``): one key, or
            several while that connector's key rotates (any of them may have signed).
        tunnel: the tunnel in the upgrade URL (``aud`` must be ``edgetds:relay:<tunnel>``).
        now: unix seconds.
        replay: where seen ``jti`` values are kept until ``exp + leeway`` (None: no replay check).
        leeway: clock skew allowed on ``exp`` and ``iat``, seconds.

    Returns:
        The verified claims (keep ``nonce``: the HELLO must echo it).

    Raises:
        AuthError: ``auth.invalid_token`` (malformed, bad signature, lifetime over 60 s),
            ``auth.unknown_issuer`` (unknown kid), ``auth.wrong_audience``, ``auth.expired``,
            ``auth.replay`` (jti seen before).
    """
    parts = token.split(".")
    if len(parts) != 3:
        raise AuthError("connector token is not a JWT", error_code=ErrorCode.AUTH_INVALID_TOKEN)
    header = _token_part(parts[0], "header")
    if header.get("alg") != "EdDSA" or not isinstance(header.get("kid"), str):
        raise AuthError(
            'connector token must have alg "EdDSA" and a "kid"',
            error_code=ErrorCode.AUTH_INVALID_TOKEN,
        )
    kid = header["kid"]
    registered = connector_keys.get(kid)
    if registered is None:
        raise AuthError(
            f"connector {kid!r} is not registered at this relay",
            error_code=ErrorCode.AUTH_UNKNOWN_ISSUER,
        )
    key = _verifying_key(
        registered if isinstance(registered, Sequence) else (registered,),
        signature=parts[2],
        signed=f"{parts[0]}.{parts[1]}",
    )
    claims = _token_part(parts[1], "claims")
    if claims.get("iss") != kid or claims.get("sub") != kid:
        raise AuthError(
            'connector token "iss" and "sub" must equal its "kid"',
            error_code=ErrorCode.AUTH_INVALID_TOKEN,
        )
    if claims.get("aud") != _audience(tunnel):
        raise AuthError(
            f"connector token is not for tunnel {tunnel!r}",
            error_code=ErrorCode.AUTH_WRONG_AUDIENCE,
        )
    iat, exp = claims.get("iat"), claims.get("exp")
    if type(iat) is not int or type(exp) is not int or not 0 < exp - iat <= TOKEN_MAX_LIFETIME:
        raise AuthError(
            f'connector token needs integer "iat" < "exp" at most {TOKEN_MAX_LIFETIME} s apart',
            error_code=ErrorCode.AUTH_INVALID_TOKEN,
        )
    if now > exp + leeway or now < iat - leeway:
        raise AuthError(
            "connector token expired or not yet valid (check the connector's clock)",
            error_code=ErrorCode.AUTH_EXPIRED,
        )
    jti, nonce = _random_id(claims, "jti"), _random_id(claims, "nonce")
    if replay is not None and not replay.remember(
        f"jti:{kid}:{jti}", now=now, expires_at=exp + leeway
    ):
        raise AuthError("connector token was already used", error_code=ErrorCode.AUTH_REPLAY)
    return ConnectorClaims(kid, tunnel, jti, nonce, iat, exp, raw_public_key(key).hex())


def _verifying_key(
    keys: Sequence[Ed25519PublicKey], *, signature: str, signed: str
) -> Ed25519PublicKey:
    """The first of ``keys`` under which ``signature`` verifies, or AuthError."""
    try:
        sig, data = _unb64url(signature), signed.encode("ascii")
    except (ValueError, UnicodeEncodeError):
        keys = ()  # not a signature any key could have made
    for key in keys:
        if _verifies(key, sig, data):
            return key
    raise AuthError(
        "connector token signature does not verify"
        + (f" under any of its {len(keys)} registered keys" if len(keys) > 1 else ""),
        error_code=ErrorCode.AUTH_INVALID_TOKEN,
    )


# -- HELLO ----------------------------------------------------------------------------------------


def sign_hello(
    private_key: Ed25519PrivateKey,
    *,
    relay_key_id: str,
    session_id: str,
    tunnel: str,
    connector_id: str,
    nonce: str,
    limits: Limits,
    caps: tuple[str, ...] = (),
) -> dict[str, Any]:
    """The relay's signed HELLO fields (send them as ``events.Hello(fields=...)``).

    Args:
        private_key: the relay's Ed25519 key; the connector pins its public key.
        relay_key_id: names that key (``relay_key_id``), so keys can rotate.
        session_id: a fresh uuid4 string for this connection.
        tunnel, connector_id: from the verified connector token.
        nonce: the connector token's ``nonce``.
        limits: the relay connection's limits.
        caps: capabilities the relay supports.
    """
    hello = {
        "version": 1,
        "session_id": session_id,
        "tunnel": tunnel,
        "connector_id": connector_id,
        "nonce": nonce,
        "relay_key_id": relay_key_id,
        "caps": list(caps),
        "limits": limits.to_json(),
    }
    return _sign(private_key, HELLO_CONTEXT, hello)


def verify_hello(
    hello: ev.Hello | Mapping[str, Any],
    relay_keys: Mapping[str, Ed25519PublicKey],
    *,
    nonce: str,
    tunnel: str,
    connector_id: str,
) -> None:
    """Connector: check the relay's HELLO before sending READY.

    Args:
        hello: the received HELLO event (or its fields).
        relay_keys: the pinned relay public keys by ``relay_key_id``.
        nonce: the nonce of the connector token used for this connection.
        tunnel, connector_id: this connector's own.

    Raises:
        AuthError: ``auth.relay_rejected``; close with ``CloseCode.AUTH_FAILED`` and serve nothing.
    """
    fields = hello.fields if isinstance(hello, ev.Hello) else hello
    presented = fields.get("relay_key_id")
    key = relay_keys.get(presented)  # type: ignore[arg-type]
    if key is None:
        # key ids are public (a hash of the public key); the relay's is cut short, it is untrusted
        raise AuthError(
            f"HELLO is signed by relay key {str(presented)[:64]!r}, which is not pinned "
            f"(pinned: {', '.join(sorted(relay_keys)) or 'none'})",
            error_code=ErrorCode.AUTH_RELAY_REJECTED,
        )
    if not _signature_ok(key, HELLO_CONTEXT, fields):
        raise AuthError("HELLO signature does not verify", error_code=ErrorCode.AUTH_RELAY_REJECTED)
    expected = {"nonce": nonce, "tunnel": tunnel, "connector_id": connector_id}
    for name, value in expected.items():
        if fields.get(name) != value:
            raise AuthError(
                f'HELLO "{name}" is not this connection\'s',
                error_code=ErrorCode.AUTH_RELAY_REJECTED,
            )


# -- attestation ----------------------------------------------------------------------------------


def _statement(sql: str | None, query: str | None) -> bytes:
    if sql is not None:
        return ("sql:" + sql).encode("utf-8")
    if query is not None:
        return ("query:" + query).encode("utf-8")
    return b""  # a session op other than run: no statement


def make_attestation(
    private_key: Ed25519PrivateKey,
    *,
    relay_key_id: str,
    session_id: str,
    query_id: str,
    token: str,
    sql: str | None,
    query: str | None,
    params: Mapping[str, Any],
    options: Mapping[str, Any],
    now: float,
    nonce: str | None = None,
    session: Mapping[str, Any] | None = None,
    params_json: bytes | None = None,
    token_sha256: str | None = None,
) -> dict[str, Any]:
    """The relay's attestation for a QUERY (its ``"attestation"`` member).

    Args:
        private_key, relay_key_id: the relay's signing key and its id.
        session_id: the HELLO's session id (the connection's, not a database session's).
        query_id, token, sql, query, params, options: exactly the QUERY's members.
        now: unix seconds (``ts`` is ``round(now * 1000)``).
        nonce: default 128 random bits, base64url.
        session: the QUERY's ``session`` member (its hash is attested), None for a one-shot query.
        params_json, token_sha256: ``canonical_json(params)`` and the hex SHA-256 of ``token``
            as UTF-8, when the caller has them already (else they are computed here).
    """
    attestation = {
        "relay_key_id": relay_key_id,
        "session_id": session_id,
        "ts": round(now * 1000),
        "nonce": nonce if nonce is not None else _random_b64url(),
        "statement_sha256": _sha256(_statement(sql, query)),
        "params_sha256": _object_sha256(params) if params_json is None else _sha256(params_json),
        "token_sha256": token_sha256 or _sha256(token.encode("utf-8")),
        "options_sha256": _object_sha256(options),
        "query_id": query_id,
    }
    if session is not None:
        attestation["session_sha256"] = _sha256(canonical_json(dict(session)))
    return _sign(private_key, QUERY_CONTEXT, attestation)


def _invalid(message: str) -> AuthError:
    return AuthError(message, error_code=ErrorCode.AUTH_ATTESTATION_INVALID)


def verify_attestation(
    query: ev.Query,
    relay_keys: Mapping[str, Ed25519PublicKey],
    *,
    session_id: str,
    now: float,
    replay: ReplayCache | None = None,
    max_skew: float = ATTESTATION_MAX_SKEW,
) -> None:
    """Connector: check that ``query`` is exactly what the relay attested, in this session, now.

    Args:
        query: the received QUERY event.
        relay_keys: the pinned relay public keys by ``relay_key_id``.
        session_id: the session id of the HELLO this connection verified.
        now: unix seconds.
        replay: remembers nonces and query ids (None: no replay check).
        max_skew: largest |now - ts| accepted, seconds.

    Raises:
        AuthError: ``auth.attestation_invalid`` (any mismatch or bad signature), ``auth.replay``
            (nonce seen before), ``query.duplicate`` (query id seen before with a fresh nonce).
    """
    att = query.attestation
    for name in _ATTESTATION_STRINGS:
        if not isinstance(att.get(name), str):
            raise _invalid("attestation is missing a member")
    if type(att.get("ts")) is not int:
        raise _invalid('attestation "ts" must be an integer (unix ms)')
    key = relay_keys.get(att["relay_key_id"])
    if key is None:
        raise _invalid("attestation is signed by a relay key that is not pinned")
    if not _signature_ok(key, QUERY_CONTEXT, att):
        raise _invalid("attestation signature does not verify")
    try:
        expected = {
            "session_id": session_id,
            "query_id": query.query_id,
            "statement_sha256": _sha256(_statement(query.sql, query.query)),
            "params_sha256": _object_sha256(query.params),
            "token_sha256": _sha256(query.token.encode("utf-8")),
            "options_sha256": _object_sha256(query.options),
        }
        if query.session is not None:
            expected["session_sha256"] = _sha256(canonical_json(dict(query.session)))
    except ValueError:
        raise _invalid("QUERY members cannot be canonically encoded") from None
    if ("session_sha256" in att) != ("session_sha256" in expected):
        raise _invalid('attestation "session_sha256" must be present exactly for a session QUERY')
    for name, value in expected.items():
        if att[name] != value:
            raise _invalid(f'attestation "{name}" does not match the QUERY')
    if abs(now * 1000 - att["ts"]) > max_skew * 1000:
        raise _invalid(f"attestation timestamp is more than {max_skew} s from now (check clocks)")
    if replay is not None:
        if not replay.remember(f"nonce:{att['nonce']}", now=now):
            raise AuthError("attestation nonce was already used", error_code=ErrorCode.AUTH_REPLAY)
        if not replay.remember(f"query:{query.query_id}", now=now):
            raise AuthError(
                "a query with this query_id was already executed",
                error_code=ErrorCode.QUERY_DUPLICATE,
            )
