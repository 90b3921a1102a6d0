"""The Python relay's configuration: a TOML file (or the same facts built in code), checked.

Shape (see examples/relay.toml, which documents every key)::

    [relay]            listen, public_url, private_key_file, tls_cert_file, tls_key_file,
                       stats_token_sha256, audit_token_sha256, checkpoint_file,
                       enrollment_file (keys enrolled with one-time tokens, SPEC.md 8.7)
    [tunnels.NAME]     connectors = { "conn-1" = "ed25519:..." }, or during a key rotation
                       connectors = { "conn-1" = ["ed25519:NEW", "ed25519:OLD"] }
                       (may be {} or absent when enrollment_file is set: enrolled only);
                       max_queries_per_identity (optional, default 32);
                       cors_origins = ["https://app.example.com"] (optional: the web origins
                       that may call the tunnel from a browser, SPEC.md 11.7)
    [[issuers]]        issuer, audience[, jwks_uri | jwks_file, algorithms]: handed as they are
                       to identity.oidc.TokenVerifier (which checks them)
    [identity]         optional verifier options (leeway_s, max_token_bytes, ...; identity.oidc)
    [limits]           see `Limits` below (every key optional)

`load_config` is THE validation: `edgetds relay serve` runs it at start-up and again on SIGHUP, so
a reload refuses exactly what start-up refuses. Besides the file's own keys it builds the client
token verifier from [[issuers]]/[identity] and loads the TLS certificate and key and the
checkpoint and enrolment files, the things serving would otherwise only find wrong later. It
reports EVERY problem at once in one `ConfigError` (``.problems``), each naming the file, the key
and how to fix it; unknown keys are errors too (a typo must not silently fall back to a default).
"""

from __future__ import annotations

import json
import re
import ssl
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from identity import keys
from identity.oidc import TokenVerifier
from protocol import loads_object, raw_public_key
from relay.cors import origin_problem

__all__ = [
    "ConfigError",
    "Limits",
    "RelayConfig",
    "TunnelConfig",
    "load_config",
    "parse_public_key",
    "read_checkpoint_file",
    "read_enrollment_file",
]


T = TypeVar("T")

#: [tunnels.NAME] max_queries_per_identity when absent (the Worker's default too).
DEFAULT_MAX_QUERIES_PER_IDENTITY = 32


class ConfigError(Exception):
    """The relay configuration is unusable; ``problems`` lists every problem found (each says
    where and how to fix it), the message is all of them, one per line."""

    def __init__(self, problems: str | list[str]) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class _Problems:
    """Collects the problems of a config instead of stopping at the first one."""

    def __init__(self) -> None:
        self.found: list[str] = []

    def check(self, parse: Callable[[], T], fallback: T) -> T:
        """``parse()``, or ``fallback`` after recording the problems it raised."""
        try:
            return parse()
        except ConfigError as exc:
            self.found.extend(exc.problems)
            return fallback

    def raise_any(self) -> None:
        if self.found:
            raise ConfigError(self.found)


@dataclass(frozen=True, kw_only=True)
class Limits:
    """Edge limits. Rates are per second with a burst; 0 disables a limiter."""

    #: Largest accepted HTTP request body (413 request.too_large above it).
    max_body_bytes: int = 1_048_576
    #: Largest `params` of a query request, in bytes of its canonical JSON (400 request.invalid
    #: above it, before anything is signed or sent; at most 2,100 parameters either way).
    max_param_bytes: int = 262_144
    #: Default and maximum query time the relay waits for (the connector enforces it too).
    query_timeout_ms: int = 30_000
    #: Failed authentications allowed per client address: sustained rate and burst.
    auth_failures_per_second: float = 1.0
    auth_failure_burst: int = 20
    #: Queries allowed per identity (issuer + subject): sustained rate and burst.
    queries_per_second: float = 100.0
    query_burst: int = 200
    #: Connector keepalive: PING every interval; a connection silent longer than dead_after is dead.
    ping_interval_s: float = 15.0
    dead_after_s: float = 45.0
    #: How long a connector has to answer HELLO with READY.
    handshake_timeout_s: float = 10.0
    #: How long past a query's timeout_ms the relay waits for the connector's next frame before
    #: it cancels the stream itself (504, or a query.timeout terminal record mid-stream).
    deadline_grace_ms: int = 5_000
    #: How long a client-supplied query_id is remembered (duplicates refused with query.duplicate).
    query_id_ttl_s: float = 600.0
    #: How long a query may wait for a free slot of a full tunnel (counted against its timeout_ms;
    #: then 429 limits.too_many_queries, limit "tunnel"). Waiters are served fewest-in-flight
    #: identity first (SPEC.md 11.4).
    admission_wait_ms: int = 5_000
    #: Most client addresses / identities tracked by the rate limiters (oldest dropped first).
    max_tracked_keys: int = 100_000
    #: Open sessions (transactions across requests, SPEC.md 11.5) per identity and per tunnel;
    #: more: 429 limits.too_many_sessions, "limit" "identity" or "tunnel".
    max_sessions_per_identity: int = 8
    max_sessions_per_tunnel: int = 1024


@dataclass(frozen=True, kw_only=True)
class TunnelConfig:
    """One tunnel: which connector ids may serve it, and their public keys (several while a
    connector's key rotates: a token signed by any of them is accepted)."""

    name: str
    connectors: Mapping[str, tuple[Ed25519PublicKey, ...]]
    #: Queries one identity (issuer + subject) may have in flight or waiting on this tunnel; more
    #: are refused at once with 429 limits.too_many_queries, limit "identity".
    max_queries_per_identity: int = DEFAULT_MAX_QUERIES_PER_IDENTITY
    #: Web origins (exactly ``scheme://host[:port]``) whose pages may call the tunnel's client
    #: endpoints from a browser (CORS, relay/cors.py); empty: none.
    cors_origins: tuple[str, ...] = ()

    def registers(self, connector_id: str, public_key_hex: str) -> bool:
        """Whether ``public_key_hex`` (raw, hex) is a registered key of ``connector_id``."""
        return public_key_hex in {
            raw_public_key(key).hex() for key in self.connectors.get(connector_id, ())
        }


@dataclass(frozen=True, kw_only=True)
class RelayConfig:
    """Everything the relay needs to run."""

    listen: str = "127.0.0.1:8787"
    public_url: str = ""
    private_key: Ed25519PrivateKey
    tunnels: Mapping[str, TunnelConfig]
    #: The table for identity.oidc.TokenVerifier.from_config: {"issuers": [...], options...}.
    identity: Mapping[str, Any]
    #: Relative paths inside `identity` (jwks_file, ca_file) are resolved from here.
    base_dir: Path = Path(".")
    limits: Limits = field(default_factory=Limits)
    tls_cert_file: str = ""
    tls_key_file: str = ""
    #: hex sha256 of a bearer secret that may read GET /v1/relay/stats from a non-loopback address.
    stats_token_sha256: str = ""
    #: hex sha256 of the bearer secret that may read GET /v1/tunnels/T/audit/checkpoint ("" = none)
    audit_token_sha256: str = ""
    #: where connectors' latest signed audit checkpoints are kept across restarts ("" = memory)
    checkpoint_file: str = ""
    #: where keys enrolled with one-time tokens and consumed token ids are kept (SPEC.md 8.7;
    #: relay/enrollment.py); "" = enrolment off (POST .../enroll answers 404 enroll.disabled)
    enrollment_file: str = ""

    @property
    def host_port(self) -> tuple[str, int]:
        return split_listen(self.listen)

    def make_verifier(self) -> TokenVerifier:
        """The client-token verifier (use as `async with`); ConfigError if the issuers are bad."""
        try:
            return TokenVerifier.from_config(self.identity, base_dir=self.base_dir)
        except ValueError as exc:
            raise ConfigError(f"client token issuers: {exc}") from None


def split_listen(listen: str) -> tuple[str, int]:
    """`host:port` (IPv6 as `[::1]:port`) into its parts, or ConfigError."""
    host, sep, port = listen.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(
            f"[relay] listen = {listen!r} is not HOST:PORT; write e.g. listen = "
            '"127.0.0.1:8787" (port 0 picks a free port)'
        )
    return host, int(port)


def parse_public_key(text: Any, *, where: str) -> Ed25519PublicKey:
    """Parse `ed25519:<base64url raw 32 bytes>` (the project's public key string)."""
    if not isinstance(text, str):
        raise ConfigError(f"{where}: expected a public key string 'ed25519:<base64url>'")
    try:
        return keys.parse_public_key(text)
    except keys.KeyFileError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """Read the relay's Ed25519 PKCS#8 PEM private key (mode 0600)."""
    try:
        return keys.load_private_key(path)
    except keys.KeyFileError as exc:
        raise ConfigError(
            f"[relay] private_key_file: {exc} (create one with `edgetds keygen --out DIR "
            "--name relay`)"
        ) from None


def _table(doc: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    value = doc.get(key, {})
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: [{key}] must be a table")
    return value


def _check_keys(table: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}"
        )


def _string(table: Mapping[str, Any], key: str, where: str, default: str = "") -> str:
    value = table.get(key, default)
    if not isinstance(value, str):
        raise ConfigError(f"{where}: {key} must be a string")
    return value


def parse_limits(table: Mapping[str, Any], *, where: str = "[limits]") -> Limits:
    """Build Limits from a mapping, checking names, types and ranges (every problem reported)."""
    known = {f.name: f for f in fields(Limits)}
    problems = _Problems()
    problems.check(lambda: _check_keys(table, set(known), where), None)
    values: dict[str, Any] = {}
    for name, value in table.items():
        if name not in known:
            continue
        default = getattr(Limits(), name)
        if isinstance(value, bool) or not isinstance(value, int | float):
            problems.found.append(f"{where}: {name} must be a number, got {type(value).__name__}")
        elif isinstance(default, int) and not isinstance(value, int):
            problems.found.append(f"{where}: {name} must be a whole number")
        elif value < 0:
            problems.found.append(f"{where}: {name} must be >= 0")
        else:
            values[name] = value
    limits = Limits(**values)
    if limits.max_body_bytes < 1024:
        problems.found.append(f"{where}: max_body_bytes must be at least 1024")
    if limits.max_param_bytes < 1024:
        problems.found.append(f"{where}: max_param_bytes must be at least 1024")
    if limits.ping_interval_s <= 0 or limits.dead_after_s <= limits.ping_interval_s:
        problems.found.append(f"{where}: need 0 < ping_interval_s < dead_after_s")
    problems.raise_any()
    return limits


def parse_tunnels(
    table: Mapping[str, Any], *, where: str, enrolment: bool = False
) -> dict[str, TunnelConfig]:
    """The [tunnels.NAME] tables; with ``enrolment`` (an enrollment_file is set) a tunnel may list
    no connectors: its connectors enrol with one-time tokens."""
    problems = _Problems()
    tunnels: dict[str, TunnelConfig] = {}
    for name, body in table.items():
        here = f"{where} [tunnels.{name}]"
        if not isinstance(body, Mapping):
            problems.found.append(f"{here} must be a table")
            continue
        problems.check(
            partial(
                _check_keys, body, {"connectors", "max_queries_per_identity", "cors_origins"}, here
            ),
            None,
        )
        no_origins: tuple[str, ...] = ()
        origins = problems.check(
            partial(_cors_origins, body.get("cors_origins", []), here), no_origins
        )
        per_identity = body.get("max_queries_per_identity", DEFAULT_MAX_QUERIES_PER_IDENTITY)
        if isinstance(per_identity, bool) or not isinstance(per_identity, int) or per_identity < 1:
            problems.found.append(
                f"{here}: max_queries_per_identity must be a whole number >= 1 (queries one "
                "identity may have in flight or waiting)"
            )
        conns = body.get("connectors", {} if enrolment else None)
        if not isinstance(conns, Mapping) or not (conns or enrolment):
            problems.found.append(
                f'{here}: connectors = {{ "conn-1" = "ed25519:..." }} is required (connector id '
                "-> public key), unless [relay] enrollment_file is set and connectors enrol "
                "with one-time tokens (edgetds relay enroll)"
            )
            continue
        none: tuple[Ed25519PublicKey, ...] = ()
        registered = {
            str(cid): problems.check(
                partial(_connector_keys, value, where=f"{here} connectors.{cid}"), none
            )
            for cid, value in conns.items()
        }
        tunnels[name] = TunnelConfig(
            name=name,
            connectors=registered,
            max_queries_per_identity=per_identity,
            cors_origins=origins,
        )
    if not table:
        problems.found.append(
            f"{where}: no [tunnels.NAME] table; a relay without tunnels is useless"
        )
    problems.raise_any()
    return tunnels


def _cors_origins(value: Any, where: str) -> tuple[str, ...]:
    """A tunnel's ``cors_origins``: a list of exact origins (every bad entry reported)."""
    if not isinstance(value, list):
        raise ConfigError(
            f'{where}: cors_origins must be a list of origins, like ["https://app.example.com"]'
        )
    problems = [
        f"{where}: cors_origins[{i}] = {_shown(entry)} {problem}"
        for i, entry in enumerate(value)
        if (problem := origin_problem(entry)) is not None
    ]
    if problems:
        raise ConfigError(problems)
    return tuple(value)


def _shown(entry: Any) -> str:
    return json.dumps(entry, default=str, ensure_ascii=False)


def _connector_keys(value: Any, *, where: str) -> tuple[Ed25519PublicKey, ...]:
    """One key string, or a non-empty list of distinct ones (a key rotation's overlap window)."""
    if isinstance(value, str):
        return (parse_public_key(value, where=where),)
    if not isinstance(value, list) or not value:
        raise ConfigError(
            f'{where}: expected "ed25519:..." or, while rotating its key, a list '
            '["ed25519:NEW", "ed25519:OLD"]'
        )
    if len(set(map(str, value))) != len(value):
        raise ConfigError(f"{where}: the same key is listed twice")
    return tuple(parse_public_key(key, where=f"{where}[{i}]") for i, key in enumerate(value))


def identity_table(issuers: Any, options: Mapping[str, Any], *, where: str) -> dict[str, Any]:
    """The identity.oidc verifier table from `[[issuers]]` plus the optional `[identity]`
    options."""
    if (
        not isinstance(issuers, list)
        or not issuers
        or not all(isinstance(item, Mapping) for item in issuers)
    ):
        raise ConfigError(
            f"{where}: at least one [[issuers]] table (issuer, audience[, jwks_uri]) is required; "
            "client tokens are verified against it"
        )
    if "issuers" in options:
        raise ConfigError(f"{where}: list issuers as top-level [[issuers]], not [identity.issuers]")
    return {**options, "issuers": [dict(item) for item in issuers]}


def config_from_mapping(doc: Mapping[str, Any], *, base_dir: Path, where: str) -> RelayConfig:
    """Build a RelayConfig from a parsed TOML document; relative file paths are from base_dir.

    Raises:
        ConfigError: listing every problem (keys, values, key files, issuers, TLS files).
    """
    problems = _Problems()
    problems.check(
        lambda: _check_keys(doc, {"relay", "tunnels", "issuers", "identity", "limits"}, where),
        None,
    )
    empty: Mapping[str, Any] = {}
    relay = problems.check(lambda: _table(doc, "relay", where), empty)
    here = f"{where} [relay]"
    problems.check(
        lambda: _check_keys(
            relay,
            {
                "listen",
                "public_url",
                "private_key_file",
                "tls_cert_file",
                "tls_key_file",
                "stats_token_sha256",
                "audit_token_sha256",
                "checkpoint_file",
                "enrollment_file",
            },
            here,
        ),
        None,
    )

    def text(key: str, default: str = "") -> str:
        return problems.check(lambda: _string(relay, key, here, default), default)

    listen = text("listen", "127.0.0.1:8787")
    problems.check(lambda: split_listen(listen), None)
    key_file = text("private_key_file")
    private_key: Ed25519PrivateKey | None = None
    if not key_file:
        problems.found.append(f"{here}: private_key_file is required (Ed25519 PKCS#8 PEM)")
    else:
        private_key = problems.check(lambda: load_private_key(base_dir / key_file), None)
    tls_cert = text("tls_cert_file")
    tls_key = text("tls_key_file")
    if bool(tls_cert) != bool(tls_key):
        problems.found.append(f"{here}: set both tls_cert_file and tls_key_file, or neither")
    elif tls_cert:
        problems.check(lambda: _check_tls(base_dir / tls_cert, base_dir / tls_key, here), None)
    stats_hash = text("stats_token_sha256").lower()
    if stats_hash and not re.fullmatch(r"[0-9a-f]{64}", stats_hash):
        problems.found.append(
            f"{here}: stats_token_sha256 must be 64 hex digits (sha256 of a secret)"
        )
    audit_hash = text("audit_token_sha256").lower()
    if audit_hash and not re.fullmatch(r"[0-9a-f]{64}", audit_hash):
        problems.found.append(
            f"{here}: audit_token_sha256 must be 64 hex digits (sha256 of a secret)"
        )
    checkpoint_file = text("checkpoint_file")
    if checkpoint_file:
        problems.check(lambda: read_checkpoint_file(base_dir / checkpoint_file), None)
    enrollment_file = text("enrollment_file")
    if enrollment_file:
        problems.check(lambda: read_enrollment_file(base_dir / enrollment_file), None)
    no_tunnels: dict[str, TunnelConfig] = {}
    tunnels = problems.check(
        lambda: parse_tunnels(
            _table(doc, "tunnels", where), where=where, enrolment=bool(enrollment_file)
        ),
        no_tunnels,
    )
    identity = problems.check(
        lambda: identity_table(doc.get("issuers"), _table(doc, "identity", where), where=where),
        None,
    )
    limits = problems.check(
        lambda: parse_limits(_table(doc, "limits", where), where=f"{where} [limits]"), Limits()
    )
    if identity is not None:
        problems.check(lambda: _check_identity(identity, base_dir, where), None)
    problems.raise_any()
    assert private_key is not None
    assert identity is not None
    return RelayConfig(
        listen=listen,
        public_url=text("public_url"),
        private_key=private_key,
        tls_cert_file=str(base_dir / tls_cert) if tls_cert else "",
        tls_key_file=str(base_dir / tls_key) if tls_key else "",
        stats_token_sha256=stats_hash,
        audit_token_sha256=audit_hash,
        checkpoint_file=str(base_dir / checkpoint_file) if checkpoint_file else "",
        enrollment_file=str(base_dir / enrollment_file) if enrollment_file else "",
        tunnels=tunnels,
        identity=identity,
        base_dir=base_dir,
        limits=limits,
    )


def _check_identity(identity: Mapping[str, Any], base_dir: Path, where: str) -> None:
    """The client-token verifier builds from these issuers (as serving will build it).

    Nothing is fetched or opened: the verifier's HTTP client connects on its first key fetch.
    """
    try:
        TokenVerifier.from_config(identity, base_dir=base_dir)
    except ValueError as exc:
        raise ConfigError(f"{where} [[issuers]]/[identity]: {exc}") from None


def read_checkpoint_file(path: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """The items of a ``[relay] checkpoint_file`` (relay/checkpoints.py keeps them) by (tunnel,
    connector id); empty when it does not exist yet. Checked when the config loads, read when
    the relay starts.

    Raises:
        ConfigError: the file is not a checkpoint file.
    """
    items: dict[tuple[str, str], dict[str, Any]] = {}
    if not path.exists():
        return items
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        for item in doc["checkpoints"]:
            cp = item["checkpoint"]
            items[(cp["tunnel"], cp["connector_id"])] = item
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(
            f"[relay] checkpoint_file {path} is not a checkpoint file ({exc}); "
            "move it aside to start with no checkpoints"
        ) from None
    return items


#: The members of one enrolled key in a ``[relay] enrollment_file``.
ENROLLED_MEMBERS = frozenset({"public_key", "key_id", "jti", "enrolled_at"})


def read_enrollment_file(path: Path) -> dict[str, Any]:
    """The state of a ``[relay] enrollment_file`` (relay/enrollment.py keeps it): ``{"tunnels":
    {NAME: {"connectors": {ID: {"public_key", "key_id", "jti", "enrolled_at"}}, "consumed":
    {JTI: forget_after}}}}``; empty when the file does not exist yet (its directory must).
    Checked when the config loads (start-up, SIGHUP), read again when the relay applies it.

    Raises:
        ConfigError: the file is not an enrolment state file, or cannot be read or created.
    """
    if not path.parent.is_dir():
        raise ConfigError(
            f"[relay] enrollment_file: its directory does not exist: {path.parent} (create it; "
            "the relay writes the file at the first enrolment)"
        )
    if not path.exists():
        return {"version": 1, "tunnels": {}}
    try:
        doc = loads_object(path.read_bytes())
        if doc.get("version") != 1 or not isinstance(doc.get("tunnels"), dict):
            raise ValueError('needs "version": 1 and a "tunnels" object')
        for name, tunnel in doc["tunnels"].items():
            if sorted(tunnel) != ["connectors", "consumed"]:
                raise ValueError(f'tunnel {name!r} needs exactly "connectors" and "consumed"')
            for cid, item in tunnel["connectors"].items():
                if set(item) != ENROLLED_MEMBERS:
                    raise ValueError(f"connector {cid!r} of tunnel {name!r} is incomplete")
                keys.parse_public_key(item["public_key"])
            for jti, until in tunnel["consumed"].items():
                if type(until) is not int:
                    raise ValueError(f"consumed token id {jti[:8]!r}... has no expiry time")
    except OSError as exc:
        raise ConfigError(
            f"[relay] enrollment_file {path} cannot be read: {exc.strerror}"
        ) from None
    except (ValueError, AttributeError, TypeError) as exc:
        raise ConfigError(
            f"[relay] enrollment_file {path} is not an enrolment state file ({exc}); restore it "
            "from a backup, or move it aside and enrol its connectors again (edgetds relay "
            "enroll); the relay does not start on a damaged one"
        ) from None
    return doc


def _check_tls(cert: Path, key: Path, where: str) -> None:
    """The TLS certificate and key load as a server pair (as serving will load them)."""
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"{where}: tls_cert_file {cert} / tls_key_file {key} do not load as a PEM "
            f"certificate and its private key: {exc.strerror or exc}"
        ) from None


def load_config(path: str | Path) -> RelayConfig:
    """Read and check a relay TOML file.

    Raises:
        ConfigError: the file is missing, not TOML, or a key is wrong (the message says which).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"cannot read relay config {path}: {exc.strerror}; see examples/relay.toml"
        ) from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return config_from_mapping(doc, base_dir=path.parent, where=str(path))
