"""The connector's TOML configuration: schema, defaults, and errors that name file, table and key.

`load_config(path)` returns a frozen `ConnectorConfig` or raises `ConfigError` listing EVERY problem
found (``edgetds connector check`` prints them all, not just the first). Secrets never live in the
file itself: the connector key comes from ``private_key_file`` or ``private_key_env``, database
passwords from ``password_file`` or ``password_env`` (Entra client secrets likewise from
``client_secret_file`` or ``client_secret_env``). Relative paths are resolved against the
directory of the config file. See examples/connector.toml for a commented example.

Issuers and the policy are validated by their owners (identity/oidc.py, connector/policy.py); this
module only checks their shape and hands them over.
"""

from __future__ import annotations

import os
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from connector._opsconfig import parse_ops_listen
from identity.keys import KeyFileError, load_private_key, parse_public_key

__all__ = [
    "ConfigError",
    "MAX_REPLICAS",
    "ConnectorConfig",
    "DatabaseConfig",
    "EntraConfig",
    "LoginConfig",
    "Problem",
    "SessionsConfig",
    "TunnelConfig",
    "load_config",
    "parse_config",
]


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a config: where (file + dotted key) and what to do about it."""

    file: str
    location: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}: [{self.location}]" if self.location else self.file
        return f"{where}: {self.message}"


class ConfigError(ValueError):
    """The configuration is unusable; `.problems` lists every problem found."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


@dataclass(frozen=True)
class TunnelConfig:
    """How the connector reaches the relay(s) and keeps its connections healthy."""

    connector_id: str
    tunnel: str
    relay_urls: tuple[str, ...]
    private_key_pem: bytes = field(repr=False)
    relay_public_keys: tuple[str, ...]
    ha_connections: int = 2
    max_concurrent_queries: int = 64
    #: full-jitter backoff: sleep uniform in [0, min(cap, base * 2**n))
    backoff_base_s: float = 1.0
    backoff_cap_s: float = 30.0
    #: a connection that stayed up this long resets the backoff counter
    stable_after_s: float = 30.0
    #: delay between bringing up the first connection and each further one
    stagger_s: float = 1.0
    #: WebSocket ping interval, and the hard deadline after which a silent peer is declared dead
    ping_interval_s: float = 5.0
    dead_peer_after_s: float = 15.0
    open_timeout_s: float = 10.0
    drain_grace_s: float = 30.0
    #: CA bundle for wss:// relays with private certificates ("" = system trust store)
    relay_cafile: str = ""
    #: outbound proxy: "auto" (HTTPS_PROXY/HTTP_PROXY/NO_PROXY from the environment), "none",
    #: or a URL such as http://proxy.corp:3128 (HTTP CONNECT) or socks5://...
    proxy: str = "auto"


#: [logins.NAME] auth: how the login proves who it is (SQL Server's authentication methods).
AUTH_METHODS = ("sql", "ntlm", "kerberos", "entra")
#: [logins.NAME] credential (auth = "entra"): where the Entra ID access token comes from.
ENTRA_CREDENTIALS = ("managed_identity", "workload_identity", "client_secret", "certificate")
#: The scope of an Azure SQL access token: resource https://database.windows.net/ (with its
#: slash: azure-identity drops "/.default" only, so the audience keeps the form SQL expects).
AZURE_SQL_SCOPE = "https://database.windows.net//.default"


@dataclass(frozen=True)
class EntraConfig:
    """How an ``auth = "entra"`` login gets its Entra ID access token (azure-identity)."""

    credential: str = "managed_identity"
    client_id: str = ""
    tenant_id: str = ""
    client_secret: str = field(default="", repr=False)
    certificate_file: str = ""
    federated_token_file: str = ""
    authority_host: str = ""
    scope: str = AZURE_SQL_SCOPE
    #: a token this close to its expiry is replaced before a new connection logs in with it
    refresh_before_s: float = 300.0


@dataclass(frozen=True)
class LoginConfig:
    """A SQL Server login that a policy role's pool uses."""

    name: str
    user: str
    password: str = field(repr=False)
    pool_size: int = 8
    #: "sql" (user + password), "ntlm" / "kerberos" (Windows, through SSPI), "entra" (token)
    auth: str = "sql"
    #: kerberos: the client keytab ("" = KRB5_CLIENT_KTNAME or the credential cache)
    keytab: str = ""
    #: ntlm/kerberos: SQL Server's SPN ("" = MSSQLSvc/HOST:PORT of [database])
    spn: str = ""
    entra: EntraConfig | None = None


@dataclass(frozen=True)
class DatabaseConfig:
    host: str
    port: int
    database: str
    logins: Mapping[str, LoginConfig]
    cafile: str = ""
    validate_host: bool = True
    login_timeout_s: float = 10.0
    #: python-tds per-read timeout; also the granularity at which a query notices cancellation
    read_timeout_s: float = 1.0
    #: rows fetched from the cursor per worker-thread call
    fetch_rows: int = 500
    #: every login is checked at start-up and then this often (0: at start-up only)
    login_check_interval_s: float = 60.0


@dataclass(frozen=True)
class SessionsConfig:
    """[sessions]: transactions across requests (SPEC.md 7.4; connector/sessions.py)."""

    #: a session with no operation for this long is rolled back (a client's shorter one wins)
    idle_timeout_ms: int = 30_000
    #: a session is rolled back this long after its begin, even mid-statement
    max_lifetime_ms: int = 300_000
    #: open sessions one identity (issuer + subject) may hold at this connector
    max_per_identity: int = 8
    #: open sessions at this connector, all roles together
    max_open: int = 64
    #: connections of each login's pool that sessions never take (kept for one-shot queries)
    reserve_connections: int = 2


@dataclass(frozen=True)
class ConnectorConfig:
    path: Path
    tunnel: TunnelConfig
    database: DatabaseConfig
    #: the [identity] table for identity.oidc.TokenVerifier.from_config (top-level [[issuers]]
    #: tables, the relay's shape, are folded into identity.issuers)
    identity: Mapping[str, Any]
    #: the policy document (from [policy] file = ... or inline), validated by connector/policy.py
    policy: Mapping[str, Any]
    policy_path: Path | None
    audit_file: Path | None
    log_level: str = "info"
    #: [audit] rotate_bytes: rotate the audit file at this size (0 = only on SIGHUP)
    audit_rotate_bytes: int = 0
    #: [audit] checkpoint_every_records / checkpoint_interval_s: signed checkpoints to the relay
    audit_checkpoint_every_records: int = 100
    audit_checkpoint_interval_s: float = 60.0
    #: [ops] listen: host:port of /metrics, /healthz, /ready ("" = off); connector/ops.py
    ops_listen: str = ""
    #: [sessions]: caps and timeouts of transactions across requests
    sessions: SessionsConfig = field(default_factory=SessionsConfig)


_CONNECTOR_KEYS = {
    "id",
    "tunnel",
    "relay_urls",
    "private_key_file",
    "private_key_env",
    "relay_public_keys",
    "ha_connections",
    "max_concurrent_queries",
    "backoff_base_s",
    "backoff_cap_s",
    "stable_after_s",
    "stagger_s",
    "ping_interval_s",
    "dead_peer_after_s",
    "open_timeout_s",
    "drain_grace_s",
    "relay_cafile",
    "proxy",
    "log_level",
}
_DATABASE_KEYS = {
    "host",
    "port",
    "database",
    "cafile",
    "validate_host",
    "login_timeout_s",
    "read_timeout_s",
    "fetch_rows",
    "login_check_interval_s",
}
#: [logins.NAME] keys of each auth method, besides auth and pool_size
_AUTH_KEYS = {
    "sql": {"user", "password_file", "password_env", "password"},
    "ntlm": {"user", "password_file", "password_env", "password", "spn"},
    "kerberos": {"user", "keytab", "spn"},
    "entra": {
        "user",
        "credential",
        "client_id",
        "tenant_id",
        "client_secret_file",
        "client_secret_env",
        "certificate_file",
        "federated_token_file",
        "authority_host",
        "scope",
        "refresh_before_s",
    },
}
_TOP_KEYS = {
    "connector",
    "database",
    "logins",
    "issuers",
    "identity",
    "policy",
    "audit",
    "ops",
    "sessions",
}


class _Reader:
    """Pulls typed values out of nested tables and records problems instead of raising."""

    def __init__(self, file: str, base_dir: Path) -> None:
        self.file = file
        self.base_dir = base_dir
        self.problems: list[Problem] = []

    def problem(self, location: str, message: str) -> None:
        self.problems.append(Problem(self.file, location, message))

    def table(
        self, doc: Mapping[str, Any], key: str, where: str, *, required: bool
    ) -> dict[str, Any]:
        value = doc.get(key)
        loc = f"{where}.{key}" if where else key
        if value is None:
            if required:
                self.problem(loc, f"missing table [{loc}]")
            return {}
        if not isinstance(value, dict):
            self.problem(loc, f"must be a table, got {type(value).__name__}")
            return {}
        return value

    def unknown(self, table: Mapping[str, Any], allowed: set[str], where: str) -> None:
        for key in table:
            if key not in allowed:
                hint = ", ".join(sorted(allowed))
                self.problem(f"{where}.{key}", f"unknown key (allowed: {hint})")

    def get(
        self,
        table: Mapping[str, Any],
        key: str,
        where: str,
        kind: type | tuple[type, ...],
        default: Any = None,
        *,
        required: bool = False,
    ) -> Any:
        loc = f"{where}.{key}"
        if key not in table:
            if required:
                self.problem(loc, "missing (required)")
            return default
        value = table[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        # bool is an int subclass: never accept true where a number is wanted
        if isinstance(value, bool) and bool not in kinds:
            ok = False
        else:
            ok = isinstance(value, kinds)
        if not ok:
            names = " or ".join(k.__name__ for k in kinds)
            self.problem(loc, f"must be {names}, got {type(value).__name__} {value!r}")
            return default
        return value

    def number(
        self,
        table: Mapping[str, Any],
        key: str,
        where: str,
        default: float,
        *,
        minimum: float,
        maximum: float | None = None,
    ) -> float:
        value = self.get(table, key, where, (int, float), default)
        if value < minimum or (maximum is not None and value > maximum):
            bounds = f">= {minimum}" + (f" and <= {maximum}" if maximum is not None else "")
            self.problem(f"{where}.{key}", f"must be {bounds}, got {value}")
            return default
        return float(value)

    def integer(
        self,
        table: Mapping[str, Any],
        key: str,
        where: str,
        default: int,
        *,
        minimum: int,
        maximum: int | None = None,
    ) -> int:
        value = self.get(table, key, where, int, default)
        if value < minimum or (maximum is not None and value > maximum):
            bounds = f">= {minimum}" + (f" and <= {maximum}" if maximum is not None else "")
            self.problem(f"{where}.{key}", f"must be an integer {bounds}, got {value}")
            return default
        return int(value)

    def path(self, value: str) -> Path:
        p = Path(os.path.expanduser(value))
        return p if p.is_absolute() else self.base_dir / p

    def secret(
        self,
        table: Mapping[str, Any],
        where: str,
        file_key: str,
        env_key: str,
        env: Mapping[str, str],
        *,
        what: str,
    ) -> bytes | None:
        """Read a secret from exactly one of `file_key` (a path) or `env_key` (an env var name)."""
        file_name = self.get(table, file_key, where, str)
        env_name = self.get(table, env_key, where, str)
        if file_name and env_name:
            self.problem(where, f"set only one of {file_key} and {env_key} for the {what}")
            return None
        if file_name:
            path = self.path(file_name)
            try:
                mode = path.stat().st_mode
                data = path.read_bytes()
            except OSError as exc:
                self.problem(
                    f"{where}.{file_key}", f"cannot read {what} file {path}: {exc.strerror}"
                )
                return None
            if os.name == "posix" and mode & (stat.S_IRWXG | stat.S_IRWXO):
                # as for the private key file: a secret others can read is no longer one
                self.problem(
                    f"{where}.{file_key}",
                    f"{what} file {path} is accessible by group/others (mode "
                    f"{stat.S_IMODE(mode):o}); run: chmod 600 {path}",
                )
                return None
            return data
        if env_name:
            value = env.get(env_name)
            if value is None:
                self.problem(
                    f"{where}.{env_key}",
                    f"environment variable {env_name} (the {what}) is not set",
                )
                return None
            return value.encode("utf-8")
        self.problem(where, f"the {what} is missing: set {file_key} (a path) or {env_key}")
        return None


def _check_relay_url(r: _Reader, url: str, loc: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        r.problem(loc, f"{url!r} must be a ws:// or wss:// URL such as wss://relay.example.com")
    elif parts.query or parts.fragment or parts.path not in ("", "/"):
        r.problem(
            loc,
            f"{url!r}: give the relay's base URL only, such as wss://relay.example.com (the "
            "connector appends /v1/tunnels/TUNNEL/connect itself)",
        )


def _tunnel(r: _Reader, doc: Mapping[str, Any], env: Mapping[str, str]) -> TunnelConfig | None:
    w = "connector"
    t = r.table(doc, "connector", "", required=True)
    r.unknown(t, _CONNECTOR_KEYS, w)
    cid = r.get(t, "id", w, str, "", required=True)
    tunnel = r.get(t, "tunnel", w, str, "", required=True)
    for key, value in (("id", cid), ("tunnel", tunnel)):
        if value and not all(c.isalnum() or c in "-_." for c in value):
            r.problem(f"{w}.{key}", f"{value!r} may only hold letters, digits, '-', '_' and '.'")
    urls = r.get(t, "relay_urls", w, list, [], required=True)
    if "relay_urls" in t and not urls:
        r.problem(f"{w}.relay_urls", "list at least one relay URL")
    for i, url in enumerate(urls):
        if not isinstance(url, str):
            r.problem(f"{w}.relay_urls[{i}]", "must be a string")
        else:
            _check_relay_url(r, url, f"{w}.relay_urls[{i}]")
    pem = r.secret(t, w, "private_key_file", "private_key_env", env, what="connector private key")
    if pem is not None and "private_key_file" in t:
        try:  # also checks the file mode
            load_private_key(r.path(t["private_key_file"]))
        except KeyFileError as exc:
            r.problem(f"{w}.private_key_file", str(exc))
            pem = None
    pubs = r.get(t, "relay_public_keys", w, list, [], required=True)
    if "relay_public_keys" in t and not pubs:
        r.problem(f"{w}.relay_public_keys", "pin at least one relay public key (ed25519:...)")
    for i, pub in enumerate(pubs):
        try:
            parse_public_key(pub if isinstance(pub, str) else "")
        except KeyFileError as exc:
            r.problem(f"{w}.relay_public_keys[{i}]", str(exc))
    relay_cafile = r.get(t, "relay_cafile", w, str, "")
    if relay_cafile and not r.path(relay_cafile).is_file():
        r.problem(f"{w}.relay_cafile", f"no such file: {r.path(relay_cafile)}")
    proxy = r.get(t, "proxy", w, str, "auto")
    if proxy not in ("auto", "none") and urlsplit(proxy).scheme not in (
        "http",
        "https",
        "socks5",
        "socks5h",
        "socks4",
        "socks4a",
    ):
        r.problem(f"{w}.proxy", f"{proxy!r}: use auto, none, or http://HOST:PORT (or socks5://)")
        proxy = "auto"
    cfg = TunnelConfig(
        connector_id=cid,
        tunnel=tunnel,
        relay_urls=tuple(u.rstrip("/") for u in urls if isinstance(u, str)),
        private_key_pem=pem or b"",
        relay_public_keys=tuple(p for p in pubs if isinstance(p, str)),
        ha_connections=r.integer(t, "ha_connections", w, 2, minimum=1, maximum=4),
        max_concurrent_queries=r.integer(
            t, "max_concurrent_queries", w, 64, minimum=1, maximum=10_000
        ),
        backoff_base_s=r.number(t, "backoff_base_s", w, 1.0, minimum=0.01),
        backoff_cap_s=r.number(t, "backoff_cap_s", w, 30.0, minimum=0.01),
        stable_after_s=r.number(t, "stable_after_s", w, 30.0, minimum=0),
        stagger_s=r.number(t, "stagger_s", w, 1.0, minimum=0),
        ping_interval_s=r.number(t, "ping_interval_s", w, 5.0, minimum=0.05),
        dead_peer_after_s=r.number(t, "dead_peer_after_s", w, 15.0, minimum=0.1),
        open_timeout_s=r.number(t, "open_timeout_s", w, 10.0, minimum=0.1),
        drain_grace_s=r.number(t, "drain_grace_s", w, 30.0, minimum=0),
        relay_cafile=str(r.path(relay_cafile)) if relay_cafile else "",
        proxy=proxy,
    )
    if cfg.dead_peer_after_s <= cfg.ping_interval_s:
        r.problem(f"{w}.dead_peer_after_s", "must be larger than ping_interval_s")
    return cfg


def _logins(r: _Reader, doc: Mapping[str, Any], env: Mapping[str, str]) -> dict[str, LoginConfig]:
    logins: dict[str, LoginConfig] = {}
    table = r.table(doc, "logins", "", required=True)
    if "logins" in doc and not table:
        r.problem("logins", "define at least one [logins.NAME] table (user + password_file)")
    for name, entry in table.items():
        w = f"logins.{name}"
        if not isinstance(entry, dict):
            r.problem(w, "must be a table with user and password_file or password_env")
            continue
        auth = r.get(entry, "auth", w, str, "sql")
        if auth not in AUTH_METHODS:
            r.problem(f"{w}.auth", f"{auth!r}: use one of {', '.join(AUTH_METHODS)}")
            continue
        r.unknown(entry, {"auth", "pool_size"} | _AUTH_KEYS[auth], w)
        if "password" in entry:
            r.problem(
                f"{w}.password",
                "passwords are never read from the config file: use password_file or password_env",
            )
            continue
        size = r.integer(entry, "pool_size", w, 8, minimum=1, maximum=256)
        login = _login(r, entry, w, name, auth, env)
        if login is not None:
            logins[name] = replace(login, pool_size=size, auth=auth)
    return logins


def _login(
    r: _Reader, entry: Mapping[str, Any], w: str, name: str, auth: str, env: Mapping[str, str]
) -> LoginConfig | None:
    """One login's credentials for its auth method (pool_size is filled in by the caller)."""
    spn = r.get(entry, "spn", w, str, "")
    if spn and "/" not in spn:
        r.problem(f"{w}.spn", f"{spn!r}: write it as MSSQLSvc/HOST:PORT (or MSSQLSvc/HOST)")
    if auth in ("sql", "ntlm"):
        user = r.get(entry, "user", w, str, "", required=True)
        if auth == "ntlm" and user and "\\" not in user and "@" not in user:
            r.problem(
                f"{w}.user", f"{user!r}: write a Windows login as DOMAIN\\user or user@domain"
            )
        pw = r.secret(entry, w, "password_file", "password_env", env, what=f"password of {name!r}")
        if pw is None:
            return None
        text = pw.decode("utf-8", "replace").rstrip("\r\n")
        return LoginConfig(name=name, user=user, password=text, spn=spn)
    if auth == "kerberos":
        user = r.get(entry, "user", w, str, "")
        keytab = r.get(entry, "keytab", w, str, "")
        if keytab:
            path = r.path(keytab)
            if not _private_file(r, path, f"{w}.keytab", f"keytab of {name!r}"):
                return None
            keytab = str(path)
            if not user:
                r.problem(
                    f"{w}.user", "name the principal of the keytab, e.g. svc@CORP.EXAMPLE.COM"
                )
        return LoginConfig(name=name, user=user, password="", keytab=keytab, spn=spn)
    return _entra(r, entry, w, name, env)


def _private_file(r: _Reader, path: Path, where: str, what: str) -> bool:
    """A secret file (keytab, certificate) exists and only its owner can read it."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        r.problem(where, f"cannot read {what} file {path}: {exc.strerror}")
        return False
    if os.name == "posix" and mode & (stat.S_IRWXG | stat.S_IRWXO):
        r.problem(
            where,
            f"{what} file {path} is accessible by group/others (mode {stat.S_IMODE(mode):o}); "
            f"run: chmod 600 {path}",
        )
        return False
    return True


def _entra(
    r: _Reader, entry: Mapping[str, Any], w: str, name: str, env: Mapping[str, str]
) -> LoginConfig | None:
    credential = r.get(entry, "credential", w, str, "managed_identity")
    if credential not in ENTRA_CREDENTIALS:
        r.problem(f"{w}.credential", f"{credential!r}: use one of {', '.join(ENTRA_CREDENTIALS)}")
        return None
    allowed = {
        "managed_identity": {"client_id"},
        "workload_identity": {"client_id", "tenant_id", "federated_token_file", "authority_host"},
        "client_secret": {
            "client_id",
            "tenant_id",
            "client_secret_file",
            "client_secret_env",
            "authority_host",
        },
        "certificate": {"client_id", "tenant_id", "certificate_file", "authority_host"},
    }[credential]
    for key in sorted(set(_AUTH_KEYS["entra"]) - allowed - {"user", "credential", "scope"}):
        if key in entry and key != "refresh_before_s":
            r.problem(f"{w}.{key}", f"not used with credential = {credential!r}")
    # managed and workload identities find their ids in the environment when not given
    need = (
        ()
        if credential in ("managed_identity", "workload_identity")
        else ("client_id", "tenant_id")
    )
    for key in need:
        r.get(entry, key, w, str, "", required=True)
    secret = ""
    if credential == "client_secret":
        raw = r.secret(
            entry,
            w,
            "client_secret_file",
            "client_secret_env",
            env,
            what=f"client secret of {name!r}",
        )
        if raw is None:
            return None
        secret = raw.decode("utf-8", "replace").strip()
    certificate = ""
    if credential == "certificate":
        cert = r.get(entry, "certificate_file", w, str, "", required=True)
        if not cert or not _private_file(
            r, r.path(cert), f"{w}.certificate_file", f"certificate of {name!r}"
        ):
            return None
        certificate = str(r.path(cert))
    token_file = r.get(entry, "federated_token_file", w, str, "")
    authority = r.get(entry, "authority_host", w, str, "")
    if authority and urlsplit(authority).scheme != "https":
        r.problem(f"{w}.authority_host", f"{authority!r}: an https:// URL")
    entra = EntraConfig(
        credential=credential,
        client_id=r.get(entry, "client_id", w, str, ""),
        tenant_id=r.get(entry, "tenant_id", w, str, ""),
        client_secret=secret,
        certificate_file=certificate,
        federated_token_file=str(r.path(token_file)) if token_file else "",
        authority_host=authority,
        scope=r.get(entry, "scope", w, str, AZURE_SQL_SCOPE),
        refresh_before_s=r.number(entry, "refresh_before_s", w, 300.0, minimum=0, maximum=3000),
    )
    user = r.get(entry, "user", w, str, "") or entra.client_id or credential
    return LoginConfig(name=name, user=user, password="", entra=entra)


def _database(r: _Reader, doc: Mapping[str, Any], env: Mapping[str, str]) -> DatabaseConfig:
    w = "database"
    t = r.table(doc, "database", "", required=True)
    r.unknown(t, _DATABASE_KEYS, w)
    cafile = r.get(t, "cafile", w, str, "")
    if cafile and not r.path(cafile).is_file():
        r.problem(f"{w}.cafile", f"no such file: {r.path(cafile)}")
    return DatabaseConfig(
        host=r.get(t, "host", w, str, "", required=True),
        port=r.integer(t, "port", w, 1433, minimum=1, maximum=65535),
        database=r.get(t, "database", w, str, "", required=True),
        logins=_logins(r, doc, env),
        cafile=str(r.path(cafile)) if cafile else "",
        validate_host=r.get(t, "validate_host", w, bool, True),
        login_timeout_s=r.number(t, "login_timeout_s", w, 10.0, minimum=0.1),
        read_timeout_s=r.number(t, "read_timeout_s", w, 1.0, minimum=0.05, maximum=60),
        fetch_rows=r.integer(t, "fetch_rows", w, 500, minimum=1, maximum=100_000),
        login_check_interval_s=r.number(t, "login_check_interval_s", w, 60.0, minimum=0),
    )


def _identity(r: _Reader, doc: Mapping[str, Any]) -> dict[str, Any]:
    """[identity] (identity/oidc.py's shape) plus top-level [[issuers]] (the relay's shape)."""
    identity = dict(r.table(doc, "identity", "", required=False))
    issuers = list(identity.get("issuers") or [])
    raw = doc.get("issuers")
    if raw is not None:
        if not isinstance(raw, list) or not all(isinstance(i, dict) for i in raw):
            r.problem("issuers", "must be an array of tables: [[issuers]] issuer = ...")
        else:
            issuers.extend(raw)
    if not issuers:
        r.problem(
            "issuers",
            "no token issuers: add [[issuers]] tables (issuer = URL, audience = ...) listing the "
            "IdPs whose tokens the connector accepts",
        )
    for i, entry in enumerate(issuers):
        if not isinstance(entry, dict) or not isinstance(entry.get("issuer"), str):
            r.problem(f"issuers[{i}].issuer", "missing (required): the issuer URL (iss claim)")
    identity["issuers"] = issuers
    return identity


def _policy(r: _Reader, doc: Mapping[str, Any]) -> tuple[Mapping[str, Any], Path | None]:
    t = r.table(doc, "policy", "", required=True)
    if "file" in t:
        name = r.get(t, "file", "policy", str, "")
        if len(t) > 1:
            r.problem("policy", "use either file = ... or inline policy tables, not both")
        if not name:
            return {}, None
        path = r.path(name)
        try:
            with path.open("rb") as fh:
                return tomllib.load(fh), path
        except OSError as exc:
            r.problem("policy.file", f"cannot read policy file {path}: {exc.strerror}")
        except tomllib.TOMLDecodeError as exc:
            r.problem("policy.file", f"{path} is not valid TOML: {exc}")
        return {}, path
    return t, None


def parse_config(
    doc: Mapping[str, Any], *, file: str | Path, env: Mapping[str, str] | None = None
) -> ConnectorConfig:
    """Validate a parsed TOML document. Raises ConfigError listing every problem."""
    path = Path(file)
    r = _Reader(str(path), path.parent.resolve())
    env = os.environ if env is None else env
    for key in doc:
        if key not in _TOP_KEYS:
            r.problem(key, f"unknown table (allowed: {', '.join(sorted(_TOP_KEYS))})")
    tunnel = _tunnel(r, doc, env)
    database = _database(r, doc, env)
    identity = _identity(r, doc)
    policy, policy_path = _policy(r, doc)
    audit = r.table(doc, "audit", "", required=False)
    audit_keys = {"file", "rotate_bytes", "checkpoint_every_records", "checkpoint_interval_s"}
    r.unknown(audit, audit_keys, "audit")
    audit_name = r.get(audit, "file", "audit", str, "")
    rotate_bytes = r.integer(audit, "rotate_bytes", "audit", 0, minimum=0)
    every_records = r.integer(audit, "checkpoint_every_records", "audit", 100, minimum=1)
    interval_s = r.number(audit, "checkpoint_interval_s", "audit", 60.0, minimum=1.0)
    ops_listen = parse_ops_listen(r, doc)
    sessions = _sessions(r, doc)
    log_level = "info"
    if isinstance(doc.get("connector"), dict):
        log_level = r.get(doc["connector"], "log_level", "connector", str, "info")
        if log_level not in ("debug", "info", "warning", "error"):
            r.problem("connector.log_level", "must be one of debug, info, warning, error")
    if r.problems or tunnel is None:
        raise ConfigError(r.problems)
    return ConnectorConfig(
        path=path,
        tunnel=tunnel,
        database=database,
        identity=identity,
        policy=policy,
        policy_path=policy_path,
        audit_file=r.path(audit_name) if audit_name else None,
        log_level=log_level,
        audit_rotate_bytes=rotate_bytes,
        audit_checkpoint_every_records=every_records,
        audit_checkpoint_interval_s=interval_s,
        ops_listen=ops_listen,
        sessions=sessions,
    )


def _sessions(r: _Reader, doc: Mapping[str, Any]) -> SessionsConfig:
    t = r.table(doc, "sessions", "", required=False)
    default = SessionsConfig()
    r.unknown(t, set(SessionsConfig.__dataclass_fields__), "sessions")
    values = {
        name: r.integer(t, name, "sessions", getattr(default, name), minimum=minimum)
        for name, minimum in (
            ("idle_timeout_ms", 1),
            ("max_lifetime_ms", 1),
            ("max_per_identity", 0),
            ("max_open", 0),
            ("reserve_connections", 1),
        )
    }
    return SessionsConfig(**values)


#: most replicas of one connector on one host (one per core)
MAX_REPLICAS = 64


def for_replica(config: ConnectorConfig, replica: int) -> ConnectorConfig:
    """The config of replica ``replica`` (1..`MAX_REPLICAS`) of a connector run as one process
    per core with the same file (``connector run --replica N``; the systemd template unit
    edgetds-connector@.service). Every replica has the same connector id and key: the relay
    treats each one's connections like more HA connections and spreads queries over them. What
    two processes cannot share is made per replica: the audit file (``audit.jsonl`` ->
    ``audit-N.jsonl``, its own hash chain and signed checkpoints naming that file) and the
    [ops] listen port (port + N - 1; port 0 stays 0).

    Raises:
        ValueError: ``replica`` outside 1..MAX_REPLICAS.
    """
    if not 1 <= replica <= MAX_REPLICAS:
        raise ValueError(f"--replica must be 1..{MAX_REPLICAS} (one per core), got {replica}")
    audit_file = config.audit_file
    if audit_file is not None:
        audit_file = audit_file.with_name(f"{audit_file.stem}-{replica}{audit_file.suffix}")
    ops_listen = config.ops_listen
    if ops_listen:
        host, _, port = ops_listen.rpartition(":")
        if int(port):
            ops_listen = f"{host}:{int(port) + replica - 1}"
    return replace(config, audit_file=audit_file, ops_listen=ops_listen)


def load_config(
    path: str | os.PathLike[str], *, env: Mapping[str, str] | None = None
) -> ConnectorConfig:
    """Read and validate a connector TOML file.

    Raises:
        ConfigError: with one `Problem` per mistake (file, dotted key, what to do).
    """
    p = Path(path)
    try:
        with p.open("rb") as fh:
            doc = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError([Problem(str(p), "", f"cannot read config: {exc.strerror}")]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([Problem(str(p), "", f"not valid TOML: {exc}")]) from None
    return parse_config(doc, file=p, env=env)
