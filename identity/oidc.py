"""Verify end users' OIDC/JWT bearer tokens: used by the relay (client tokens) and the connector
(which re-verifies every query's token itself; it trusts no one upstream).

Strategy (Pomerium's multi-issuer pattern, hardened):

1. Refuse missing tokens (``auth.missing_token``) and tokens over ``max_token_bytes`` before any
   parsing (``auth.invalid_token``).
2. Read the *unverified* ``iss`` claim only to pick the issuer; an issuer that is not configured is
   refused (``auth.unknown_issuer``) before any key is looked up or fetched.
   Header and payload are parsed strictly first (identity/_idtoken.py: no duplicate member names,
   no NaN, bounded nesting and numbers), so what is checked is what the signature covers.
3. The header ``alg`` must be in that issuer's allowlist (default RS256, ES256, EdDSA; ``none`` and
   HS* are never accepted) and the key found by ``kid`` in *our* copy of the issuer's JWKS must be
   of the matching type (RSA for RS*/PS*, the right EC curve for ES*, OKP for EdDSA). The ``jku``,
   ``x5u``, ``jwk`` and ``x5c`` headers are ignored entirely: keys only come from configuration.
   ``crit``, ``cty`` and ``b64`` are refused, and ``typ`` must be ``JWT`` or ``at+jwt``.
4. Keys are cached per issuer; an unknown ``kid`` triggers a refresh, at most one per
   ``min_refresh_interval_s`` per issuer, so a flood of random kids costs at most one fetch.
5. pyjwt checks the signature with ``algorithms=[alg]`` (one explicit algorithm); then the claims
   are checked by identity/_idtoken.py: ``exp``, ``iss``, ``sub`` and ``aud`` required with their
   JSON types, ``nbf``/``iat`` checked when present, with ``leeway_s`` of clock skew, and a
   lifetime of at most the issuer's ``max_token_lifetime_s`` (default 24 h).
6. A token that passed all of the above is remembered by its sha256 (at most
   ``verified_cache_size``, 0 = off), so the same token sent again skips the signature check: a
   remembered verification is used only while the exact key object that verified it is still the
   issuer's current key for that ``kid`` (no refresh due), and ``exp`` is checked again at every
   use with the same leeway. Refusals are never remembered.

Errors are :class:`TokenError` carrying a FIXED protocol error code and a message that names what
failed and never contains the token. If an issuer's keys cannot be fetched the code is
``internal`` (the client is not at fault; the message names the issuer and the failure).

Configuration (a TOML table, passed as a dict to :meth:`TokenVerifier.from_config`)::

    [identity]
    audience = "edgetds"            # required unless every issuer sets its own
    leeway_s = 30                   # clock skew allowed for exp/nbf/iat
    max_token_bytes = 16384
    min_refresh_interval_s = 30     # per issuer: at most one JWKS fetch per interval
    jwks_max_age_s = 3600           # refetch cached keys older than this
    http_timeout_s = 5
    max_response_bytes = 262144     # discovery document / JWKS size limit
    verified_cache_size = 4096      # verified tokens remembered by sha256 (0 = off)
    ca_file = "/etc/edgetds/ca.pem" # optional: trust only this CA bundle for discovery/JWKS

    [[identity.issuers]]            # discovery: {issuer}/.well-known/openid-configuration
    issuer = "https://login.example.com/tenant/v2.0"

    [[identity.issuers]]
    issuer = "https://idp.internal"
    jwks_uri = "https://idp.internal/keys"   # skip discovery
    audience = ["api://edgetds", "edgetds"]  # overrides the default audience
    algorithms = ["ES256"]
    max_token_lifetime_s = 3600              # refuse tokens valid longer (default 86400)

    [[identity.issuers]]
    issuer = "https://offline.example"
    jwks_file = "keys/offline-jwks.json"     # static JWKS (relative to the config file)

Issuer URLs and jwks_uri must be https, except on loopback hosts (127.0.0.1, ::1, localhost) for
development with ``edgetds dev-idp``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import ssl
import time
from collections.abc import Callable, Iterable, Mapping
from contextlib import aclosing
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

import httpx
import jwt
import trio
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from identity._idtoken import (
    DEFAULT_MAX_TOKEN_LIFETIME_S,
    TokenError,
    check_claims,
    check_header,
    parse_token,
)
from protocol import ErrorCode

__all__ = [
    "DEFAULT_ALGORITHMS",
    "DEFAULT_MAX_TOKEN_LIFETIME_S",
    "TokenError",
    "Identity",
    "IssuerConfig",
    "TokenVerifier",
    "bearer_token",
    "claim_at",
    "default_verify_context",
    "token_sha256",
]

log = logging.getLogger("edgetds.oidc")

#: Accepted when an issuer names no ``algorithms``.
DEFAULT_ALGORITHMS: tuple[str, ...] = ("RS256", "ES256", "EdDSA")

# Which public key type each supported algorithm needs. HS* and none are deliberately absent.
_RSA_ALGS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
_EC_CURVES = {"ES256": ec.SECP256R1, "ES384": ec.SECP384R1, "ES512": ec.SECP521R1}
SUPPORTED_ALGORITHMS = frozenset(_RSA_ALGS | set(_EC_CURVES) | {"EdDSA"})
_ASYMMETRIC_KTY = frozenset({"RSA", "EC", "OKP"})
_LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})
_MAX_KEYS = 100


@dataclass(frozen=True, eq=False)
class Identity:
    """A verified end user. ``claims`` is the whole verified payload (read-only)."""

    subject: str
    issuer: str
    audience: tuple[str, ...]
    claims: Mapping[str, Any]
    token_sha256: str
    expires_at: int
    algorithm: str
    key_id: str | None

    def claim(self, path: str) -> Any:
        """The claim at a dotted ``path`` (e.g. ``realm_access.roles``), or None."""
        return claim_at(self.claims, path)


def claim_at(claims: Mapping[str, Any], path: str) -> Any:
    """Follow a dotted claim path; an exact top-level key with dots wins (URL-style claims)."""
    if path in claims:
        return claims[path]
    node: Any = claims
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def token_sha256(token: str) -> str:
    """Hex sha256 of the token's UTF-8 bytes (the protocol's ``token_sha256``)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def bearer_token(authorization: str | None) -> str:
    """Extract the token from an ``Authorization: Bearer <token>`` header value."""
    if not authorization:
        raise TokenError(
            ErrorCode.AUTH_MISSING_TOKEN, "no Authorization header; send 'Bearer <token>'"
        )
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise TokenError(
            ErrorCode.AUTH_MISSING_TOKEN, "Authorization header is not 'Bearer <token>'"
        )
    return token.strip()


@dataclass(frozen=True, kw_only=True)
class IssuerConfig:
    """One trusted issuer. Keys come from discovery unless ``jwks_uri`` or ``jwks_file`` is set."""

    issuer: str
    audiences: tuple[str, ...]
    algorithms: tuple[str, ...] = DEFAULT_ALGORITHMS
    jwks_uri: str | None = None
    jwks_file: Path | None = None
    #: tokens valid for longer than this (exp - iat) are refused
    max_token_lifetime_s: float = DEFAULT_MAX_TOKEN_LIFETIME_S

    def __post_init__(self) -> None:
        if not self.audiences:
            raise ValueError(f"issuer {self.issuer!r}: no audience configured")
        lifetime = self.max_token_lifetime_s
        if isinstance(lifetime, bool) or not isinstance(lifetime, int | float) or lifetime <= 0:
            raise ValueError(
                f"issuer {self.issuer!r}: max_token_lifetime_s must be a positive number of "
                f"seconds (default {DEFAULT_MAX_TOKEN_LIFETIME_S})"
            )
        bad = [a for a in self.algorithms if a not in SUPPORTED_ALGORITHMS]
        if bad or not self.algorithms:
            raise ValueError(
                f"issuer {self.issuer!r}: algorithms {bad or '[]'} not allowed; choose from "
                f"{sorted(SUPPORTED_ALGORITHMS)} (HS* and none are never accepted)"
            )
        if self.jwks_uri and self.jwks_file:
            raise ValueError(f"issuer {self.issuer!r}: set jwks_uri or jwks_file, not both")
        if self.jwks_file is None:
            _check_url(self.jwks_uri or self.issuer, what=f"issuer {self.issuer!r}")


def _check_url(url: str, *, what: str) -> None:
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme == "http" and parts.hostname in _LOOPBACK:
        return
    raise ValueError(f"{what}: {url!r} must be an https URL (plain http only on loopback)")


@dataclass
class _IssuerKeys:
    """Mutable key cache for one issuer (owned by TokenVerifier, guarded by ``lock``)."""

    config: IssuerConfig
    keys: dict[str | None, tuple[Mapping[str, Any], Any]] = field(default_factory=dict)
    fetched_at: float | None = None  # trio clock of the last successful fetch
    attempted_at: float | None = None  # trio clock of the last attempt (success or not)
    last_error: str | None = None
    fetches: int = 0
    lock: trio.Lock = field(default_factory=trio.Lock)


@functools.cache
def default_verify_context() -> ssl.SSLContext:
    """httpx's default verifying TLS context (certifi's CA bundle), built once per process.

    Loading the bundle takes tens of milliseconds of CPU per context, and every verifier, and
    so every relay and connector start, made one. A context is safe to share between HTTP/1.1
    clients. Not used when ``SSL_CERT_FILE``/``SSL_CERT_DIR`` is set: httpx reads those for each
    client, as before."""
    return httpx.create_ssl_context()


class TokenVerifier:
    """Verifies bearer tokens against several configured issuers. Use as ``async with``."""

    def __init__(
        self,
        issuers: Iterable[IssuerConfig],
        *,
        leeway_s: float = 30.0,
        max_token_bytes: int = 16384,
        min_refresh_interval_s: float = 30.0,
        jwks_max_age_s: float = 3600.0,
        http_timeout_s: float = 5.0,
        max_response_bytes: int = 262144,
        ca_file: str | Path | None = None,
        http_client: httpx.AsyncClient | None = None,
        verified_cache_size: int = 4096,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._issuers = {cfg.issuer: _IssuerKeys(cfg) for cfg in issuers}
        #: token sha256 -> (its Identity, the key object that verified it); insertion order
        self._verified: dict[str, tuple[Identity, Any]] = {}
        self.verified_cache_size = int(verified_cache_size)
        self._clock = clock  # the wall clock exp, nbf and iat are compared with
        if not self._issuers:
            raise ValueError("no issuers configured: add at least one [[identity.issuers]] table")
        self.leeway_s = leeway_s
        self.max_token_bytes = max_token_bytes
        self.min_refresh_interval_s = min_refresh_interval_s
        self.jwks_max_age_s = jwks_max_age_s
        self.max_response_bytes = max_response_bytes
        self._owns_client = http_client is None
        if http_client is None:
            verify: ssl.SSLContext | bool = True
            if ca_file is not None:
                verify = ssl.create_default_context(cafile=str(ca_file))
            elif not (os.environ.get("SSL_CERT_FILE") or os.environ.get("SSL_CERT_DIR")):
                verify = default_verify_context()
            http_client = httpx.AsyncClient(
                timeout=httpx.Timeout(http_timeout_s), verify=verify, follow_redirects=False
            )
        self._http = http_client

    @classmethod
    def from_config(
        cls,
        table: Mapping[str, Any],
        *,
        base_dir: str | Path = ".",
        http_client: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.time,
    ) -> TokenVerifier:
        """Build from the ``[identity]`` TOML table (see the module docstring for its shape).

        Raises:
            ValueError: naming the offending key, for unknown keys, wrong types or bad URLs.
        """
        known = {
            "audience",
            "leeway_s",
            "max_token_bytes",
            "min_refresh_interval_s",
            "jwks_max_age_s",
            "http_timeout_s",
            "max_response_bytes",
            "verified_cache_size",
            "ca_file",
            "issuers",
        }
        _no_unknown_keys(table, known, "[identity]")
        default_aud = _audiences(table.get("audience"), "[identity] audience")
        issuers_raw = table.get("issuers")
        if not isinstance(issuers_raw, list) or not issuers_raw:
            raise ValueError("[identity]: add at least one [[identity.issuers]] table")
        base = Path(base_dir)
        issuers = []
        for i, raw in enumerate(issuers_raw):
            where = f"[[identity.issuers]] #{i + 1}"
            if not isinstance(raw, Mapping):
                raise ValueError(f"{where}: expected a table")
            _no_unknown_keys(
                raw,
                {
                    "issuer",
                    "audience",
                    "algorithms",
                    "jwks_uri",
                    "jwks_file",
                    "max_token_lifetime_s",
                },
                where,
            )
            issuer = raw.get("issuer")
            if not isinstance(issuer, str) or not issuer:
                raise ValueError(f"{where}: key 'issuer' must be the issuer URL (the 'iss' claim)")
            algs = raw.get("algorithms", list(DEFAULT_ALGORITHMS))
            if not isinstance(algs, list) or not all(isinstance(a, str) for a in algs):
                raise ValueError(f"{where}: key 'algorithms' must be a list of strings")
            jwks_file = raw.get("jwks_file")
            aud = _audiences(raw.get("audience"), f"{where} audience") or default_aud
            try:
                issuers.append(
                    IssuerConfig(
                        issuer=issuer,
                        audiences=aud,
                        algorithms=tuple(algs),
                        jwks_uri=raw.get("jwks_uri"),
                        jwks_file=(base / jwks_file) if jwks_file else None,
                        max_token_lifetime_s=raw.get(
                            "max_token_lifetime_s", DEFAULT_MAX_TOKEN_LIFETIME_S
                        ),
                    )
                )
            except ValueError as exc:
                raise ValueError(f"{where}: {exc}") from None
        opts = {k: table[k] for k in known - {"audience", "issuers"} if k in table}
        for key, value in opts.items():
            if key != "ca_file" and (not isinstance(value, int | float) or value < 0):
                raise ValueError(f"[identity]: key {key!r} must be a non-negative number")
        if "ca_file" in opts:
            opts["ca_file"] = base / opts["ca_file"]
        return cls(issuers, http_client=http_client, clock=clock, **opts)

    @property
    def issuers(self) -> tuple[str, ...]:
        return tuple(self._issuers)

    def fetch_count(self, issuer: str) -> int:
        """How many times this issuer's keys were fetched (for tests and metrics)."""
        return self._issuers[issuer].fetches

    async def __aenter__(self) -> TokenVerifier:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._owns_client:
            with trio.CancelScope(shield=True):
                await self._http.aclose()

    async def verify(self, token: str | None) -> Identity:
        """Verify ``token`` and return the identity it proves.

        Raises:
            TokenError: with ``code`` one of auth.missing_token, auth.invalid_token, auth.expired,
                auth.wrong_audience, auth.unknown_issuer (or internal if keys cannot be fetched).
        """
        if token is None or not token.strip():
            raise TokenError(ErrorCode.AUTH_MISSING_TOKEN, "no bearer token was sent")
        if not isinstance(token, str):
            raise TokenError(ErrorCode.AUTH_INVALID_TOKEN, "token must be a string")
        # Characters <= bytes: a huge token is refused without even encoding it.
        size = (
            len(token)
            if len(token) > self.max_token_bytes
            else len(token.encode("utf-8", "surrogatepass"))
        )
        if size > self.max_token_bytes:
            raise TokenError(
                ErrorCode.AUTH_INVALID_TOKEN,
                f"token is {size} bytes, over the {self.max_token_bytes}-byte limit",
            )
        # (a valid JWT is ASCII; anything else takes the full path and fails there as before)
        digest = token_sha256(token) if token.isascii() else None
        remembered = self._remembered(digest) if digest is not None else None
        if remembered is not None:
            return remembered
        header, payload = parse_token(token)
        iss = payload.get("iss")
        if not isinstance(iss, str) or not iss:
            raise TokenError(ErrorCode.AUTH_INVALID_TOKEN, "token has no 'iss' claim")
        entry = self._issuers.get(iss)
        if entry is None:
            # No key lookup, no fetch: an unknown issuer costs nothing.
            raise TokenError(
                ErrorCode.AUTH_UNKNOWN_ISSUER, f"issuer {iss[:200]!r} is not trusted here"
            )
        cfg = entry.config
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in cfg.algorithms:
            shown = alg if isinstance(alg, str) else type(alg).__name__
            raise TokenError(
                ErrorCode.AUTH_INVALID_TOKEN,
                f"algorithm {shown[:20]!r} is not allowed for issuer {iss!r} "
                f"(allowed: {', '.join(cfg.algorithms)})",
            )
        check_header(header)
        kid = header.get("kid")
        _, key = await self._key_for(entry, kid, alg)
        self._check_signature(token, key, alg)
        # The payload parsed above is exactly the bytes the signature covers: now it is verified.
        sub, aud, exp = check_claims(
            payload,
            issuer=cfg.issuer,
            audiences=cfg.audiences,
            max_lifetime_s=cfg.max_token_lifetime_s,
            leeway_s=self.leeway_s,
            now=self._clock(),
        )
        identity = Identity(
            subject=sub,
            issuer=iss,
            audience=aud,
            claims=MappingProxyType(payload),
            token_sha256=digest or token_sha256(token),
            expires_at=int(exp),
            algorithm=alg,
            key_id=kid,
        )
        self._remember(identity, key)
        return identity

    def _remembered(self, digest: str) -> Identity | None:
        """The Identity of an already verified token, if that verification still holds now: the
        same key object is still the issuer's key for its kid (no refresh due), and it has not
        expired (pyjwt's rule: refused once ``exp <= now - leeway``)."""
        found = self._verified.get(digest)
        if found is None:
            return None
        identity, key = found
        entry = self._issuers[identity.issuer]
        kid = identity.key_id
        current = (
            entry.keys.get(kid)
            if kid is not None
            else next((v for v in entry.keys.values() if v[1] is key), None)
        )
        if current is None or current[1] is not key or self._needs_refresh(entry, kid):
            del self._verified[digest]
            return None  # verify from scratch (and refresh keys if due)
        if identity.expires_at <= self._clock() - self.leeway_s:
            del self._verified[digest]
            raise TokenError(ErrorCode.AUTH_EXPIRED, "token has expired; get a fresh one")
        return identity

    def _remember(self, identity: Identity, key: Any) -> None:
        if self.verified_cache_size <= 0:
            return
        if len(self._verified) >= self.verified_cache_size:
            now = self._clock() - self.leeway_s
            for digest in [d for d, (i, _) in self._verified.items() if i.expires_at <= now]:
                del self._verified[digest]
            while len(self._verified) >= self.verified_cache_size:
                del self._verified[next(iter(self._verified))]  # the oldest
        self._verified[identity.token_sha256] = (identity, key)

    @staticmethod
    def _check_signature(token: str, key: Any, alg: str) -> None:
        """Verify the signature of ``token`` under ``key`` with exactly ``alg``."""
        try:
            jwt.PyJWS().decode_complete(token, key=key, algorithms=[alg])
        except jwt.InvalidSignatureError:
            raise TokenError(
                ErrorCode.AUTH_INVALID_TOKEN, "token signature does not verify"
            ) from None
        except jwt.PyJWTError as exc:
            raise TokenError(
                ErrorCode.AUTH_INVALID_TOKEN, f"token refused: {type(exc).__name__}"
            ) from None

    async def _key_for(
        self, entry: _IssuerKeys, kid: str | None, alg: str
    ) -> tuple[Mapping[str, Any], Any]:
        if self._needs_refresh(entry, kid):
            # Only tokens that need a fetch queue here; known kids never wait behind a slow IdP.
            async with entry.lock:
                if self._needs_refresh(entry, kid):  # another task may have just fetched
                    await self._maybe_refresh(entry, trio.current_time())
        cfg = entry.config
        if kid is None:
            candidates = [v for v in entry.keys.values() if _key_matches(v[1], alg)]
            if len(candidates) != 1:
                raise TokenError(
                    ErrorCode.AUTH_INVALID_TOKEN,
                    f"token has no 'kid' and issuer {cfg.issuer!r} has "
                    f"{len(candidates)} {alg} keys; the IdP must send a kid",
                )
            return candidates[0]
        found = entry.keys.get(kid)
        if found is None:
            raise TokenError(
                ErrorCode.AUTH_INVALID_TOKEN,
                f"key id {kid[:64]!r} is not in the JWKS of issuer {cfg.issuer!r}",
            )
        jwk_data, key = found
        if not _key_matches(key, alg) or jwk_data.get("alg", alg) != alg:
            raise TokenError(
                ErrorCode.AUTH_INVALID_TOKEN,
                f"key {kid[:64]!r} of issuer {cfg.issuer!r} cannot verify {alg} tokens",
            )
        return found

    def _needs_refresh(self, entry: _IssuerKeys, kid: str | None) -> bool:
        now = trio.current_time()
        if entry.fetched_at is None or now - entry.fetched_at > self.jwks_max_age_s:
            return True
        if kid is None or kid in entry.keys:
            return False
        # Unknown kid: worth a fetch only once the rate limit allows one.
        return entry.attempted_at is None or now - entry.attempted_at >= self.min_refresh_interval_s

    async def warm_up(self) -> dict[str, str | None]:
        """Fetch every issuer's keys now (at startup), so config mistakes surface early.

        Returns:
            issuer -> None when its keys loaded, else what went wrong (also logged).
        """
        result: dict[str, str | None] = {}
        for issuer, entry in self._issuers.items():
            try:
                async with entry.lock:
                    await self._maybe_refresh(entry, trio.current_time())
                result[issuer] = entry.last_error
            except TokenError as exc:
                result[issuer] = exc.message
        return result

    async def _maybe_refresh(self, entry: _IssuerKeys, now: float) -> None:
        """Fetch keys unless a fetch was attempted less than min_refresh_interval_s ago."""
        if (
            entry.attempted_at is not None
            and now - entry.attempted_at < self.min_refresh_interval_s
        ):
            if entry.fetched_at is None:
                raise TokenError(
                    ErrorCode.INTERNAL,
                    f"keys of issuer {entry.config.issuer!r} are unavailable "
                    f"(last fetch failed: {entry.last_error})",
                )
            return
        entry.attempted_at = now
        entry.fetches += 1
        try:
            keys = await self._load_keys(entry.config)
        except (OSError, ValueError, httpx.HTTPError) as exc:
            entry.last_error = _describe_error(exc)
            log.warning(
                "jwks fetch failed: %s",
                entry.last_error,
                extra={"issuer": entry.config.issuer, "error": entry.last_error},
            )
            if entry.fetched_at is None:
                raise TokenError(
                    ErrorCode.INTERNAL,
                    f"could not load keys of issuer {entry.config.issuer!r}: {entry.last_error}",
                ) from None
            return  # keep serving the keys we have
        entry.keys = keys
        entry.fetched_at = now
        entry.last_error = None
        log.info("jwks loaded", extra={"issuer": entry.config.issuer, "keys": len(keys)})

    async def _load_keys(
        self, cfg: IssuerConfig
    ) -> dict[str | None, tuple[Mapping[str, Any], Any]]:
        if cfg.jwks_file is not None:
            raw = await trio.Path(cfg.jwks_file).read_bytes()
            if len(raw) > self.max_response_bytes:
                raise ValueError(f"{cfg.jwks_file}: larger than {self.max_response_bytes} bytes")
            return parse_jwks(json.loads(raw))
        jwks_uri = cfg.jwks_uri
        if jwks_uri is None:
            disco_url = cfg.issuer.rstrip("/") + "/.well-known/openid-configuration"
            doc = await self._get_json(disco_url)
            if doc.get("issuer") != cfg.issuer:
                raise ValueError(f"discovery document at {disco_url} names another issuer")
            jwks_uri = doc.get("jwks_uri")
            if not isinstance(jwks_uri, str):
                raise ValueError(f"discovery document at {disco_url} has no jwks_uri")
            _check_url(jwks_uri, what=f"jwks_uri of {cfg.issuer!r}")
        return parse_jwks(await self._get_json(jwks_uri))

    async def _get_json(self, url: str) -> dict[str, Any]:
        async with self._http.stream("GET", url, headers={"Accept": "application/json"}) as resp:
            if resp.status_code != 200:
                raise ValueError(f"GET {url} answered HTTP {resp.status_code}")
            too_big = ValueError(f"GET {url}: response over {self.max_response_bytes} bytes")
            declared = resp.headers.get("content-length", "0")
            if declared.isdigit() and int(declared) > self.max_response_bytes:
                raise too_big
            body = bytearray()
            async with aclosing(resp.aiter_bytes()) as chunks:  # type: ignore[type-var]
                async for chunk in chunks:
                    body += chunk
                    if len(body) > self.max_response_bytes:
                        raise too_big
        doc = json.loads(body)
        if not isinstance(doc, dict):
            raise ValueError(f"GET {url}: expected a JSON object")
        return doc


def _describe_error(exc: BaseException) -> str:
    """``Type: message`` of ``exc``, with the first non-empty message of its cause chain
    (httpx's ConnectError says nothing itself; the TLS or socket error below it does)."""
    parts = [type(exc).__name__]
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            break
        if str(seen):
            parts.append(str(seen))
            break
        seen = seen.__cause__ or seen.__context__
    return ": ".join(parts)[:300]


def parse_jwks(doc: Any) -> dict[str | None, tuple[Mapping[str, Any], Any]]:
    """Public asymmetric signing keys of a JWKS by kid; symmetric/unusable keys are skipped."""
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise ValueError("JWKS must be an object with a 'keys' list")
    out: dict[str | None, tuple[Mapping[str, Any], Any]] = {}
    for jwk_data in doc["keys"][:_MAX_KEYS]:
        if not isinstance(jwk_data, dict) or jwk_data.get("kty") not in _ASYMMETRIC_KTY:
            continue
        if jwk_data.get("use", "sig") != "sig" or "d" in jwk_data:
            continue  # encryption keys, and private keys published by mistake
        try:
            key = jwt.PyJWK(jwk_data).key
        except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError):
            continue
        kid = jwk_data.get("kid")
        out[kid if isinstance(kid, str) else None] = (MappingProxyType(dict(jwk_data)), key)
    return out


def _key_matches(key: Any, alg: str) -> bool:
    if alg in _RSA_ALGS:
        return isinstance(key, rsa.RSAPublicKey)
    if alg in _EC_CURVES:
        return isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, _EC_CURVES[alg])
    if alg == "EdDSA":
        return isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey)
    return False


def _audiences(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ValueError(f"{where}: expected a string or a list of strings")


def _no_unknown_keys(table: Mapping[str, Any], known: set[str], where: str) -> None:
    unknown = sorted(set(table) - known)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; known keys: {sorted(known)}")
