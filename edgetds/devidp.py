"""A small OIDC issuer for development, the demo and tests (never for production).

It holds real signing keys (RSA RS256, EC P-256 ES256, Ed25519 EdDSA), serves the discovery
document and the JWKS over HTTP on 127.0.0.1 (hypercorn + a tiny ASGI app on trio), and mints
real signed tokens. Tests count its requests per path (``idp.requests``) to prove that verifiers
do not fetch keys they should not.

In-process::

    async with open_dev_idp(key_dir=None) as idp:
        token = idp.mint(sub="alice", groups=["analysts"], aud="edgetds", expires_in=300)
        idp.rotate("RS256")          # new signing key (new kid) published in the JWKS

Key directory (default ``.demo/idp``; the demo keeps its keys there so the CLI can mint tokens for
a running ``edgetds demo --serve``):

- ``keys.json``  private keys ``[{"kid", "alg", "pem"}]`` (mode 0600), newest last
- ``jwks.json``  the public JWKS (usable as a static ``jwks_file`` by a verifier)
- ``issuer``     the issuer URL of the last ``serve`` (read by ``dev-idp token``)

It also stands in for a managed identity's token endpoint (``MSI_PATH``, the App Service form
azure-identity's ``ManagedIdentityCredential`` calls when ``IDENTITY_ENDPOINT`` and
``IDENTITY_HEADER`` are set): ``GET ?resource=R&api-version=2019-08-01`` with the header
``X-IDENTITY-HEADER: idp.identity_header`` answers an access token for audience ``R`` (e.g.
``https://database.windows.net/``, Azure SQL's) whose ``oid`` and ``sub`` are
``idp.managed_identity`` (or the ``client_id`` asked for), valid for
``idp.managed_identity_lifetime_s``.

And for Entra ID's client credentials flow (azure-identity's ClientSecretCredential,
CertificateCredential and WorkloadIdentityCredential, with ``authority`` = the issuer and
``disable_instance_discovery``): ``GET /TENANT/v2.0/.well-known/openid-configuration`` and
``POST /TENANT/oauth2/v2.0/token`` (``grant_type=client_credentials``, ``scope=R/.default``) for
clients added with `DevIdP.register_client`: by secret, by a certificate's key (a signed
``client_assertion``), or by a federated token this IdP signed (audience
``api://AzureADTokenExchange``, ``sub`` as registered). The token's audience is ``R``.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import secrets
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from asgiapp import answer_lifespan, read_body
from logsetup import add_log_options, log_stopped, setup_logging

__all__ = [
    "DEFAULT_KEY_DIR",
    "DevIdP",
    "DevKey",
    "generate_key",
    "open_dev_idp",
    "register",
    "sign_token",
]

#: The logger of `dev-idp serve`.
LOGGER = "edgetds.devidp"
#: Where the demo and the CLI keep the dev IdP's keys (relative to the current directory).
DEFAULT_KEY_DIR = Path(".demo/idp")
ALGORITHMS: tuple[str, ...] = ("RS256", "ES256", "EdDSA")
JWKS_PATH = "/jwks.json"
DISCOVERY_PATH = "/.well-known/openid-configuration"
MSI_PATH = "/msi/token"
#: the audience of a workload identity's federated token (as Entra ID requires it)
FEDERATED_AUDIENCE = "api://AzureADTokenExchange"


@dataclass(frozen=True)
class ClientRegistration:
    """A confidential client of the token endpoint: exactly one way to authenticate."""

    client_id: str
    secret: str = ""
    #: a certificate's public key (PEM): the client signs its client_assertion with the key
    public_key_pem: bytes = b""
    #: the ``sub`` of the federated token (a Kubernetes service account, ...)
    federated_subject: str = ""


@dataclass(frozen=True)
class DevKey:
    """A private signing key with its kid and algorithm."""

    kid: str
    alg: str
    private_key: Any

    def public_jwk(self) -> dict[str, Any]:
        from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

        public = self.private_key.public_key()
        codec: Any = {"RS256": RSAAlgorithm, "ES256": ECAlgorithm, "EdDSA": OKPAlgorithm}[self.alg]
        jwk_data: dict[str, Any] = dict(codec.to_jwk(public, as_dict=True))
        jwk_data.update(kid=self.kid, alg=self.alg, use="sig")
        return jwk_data

    def pem(self) -> str:
        pem: bytes = self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return pem.decode()

    def public_pem(self) -> bytes:
        pem: bytes = self.private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return pem


def generate_key(alg: str = "RS256", *, kid: str | None = None) -> DevKey:
    """A fresh key for ``alg`` (RS256: RSA 2048, ES256: P-256, EdDSA: Ed25519)."""
    key: Any
    if alg == "RS256":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    elif alg == "ES256":
        key = ec.generate_private_key(ec.SECP256R1())
    elif alg == "EdDSA":
        key = ed25519.Ed25519PrivateKey.generate()
    else:
        raise ValueError(f"dev IdP cannot make {alg!r} keys; choose from {ALGORITHMS}")
    return DevKey(kid=kid or f"{alg.lower()}-{secrets.token_hex(6)}", alg=alg, private_key=key)


def sign_token(
    claims: Mapping[str, Any], key: DevKey, *, headers: Mapping[str, Any] | None = None
) -> str:
    """Sign ``claims`` with ``key`` (kid and alg in the header, plus any extra ``headers``)."""
    import jwt  # here, as trio below: `edgetds --help` registers this module's commands

    hdr = {"kid": key.kid, **(headers or {})}
    return jwt.encode(dict(claims), key.private_key, algorithm=key.alg, headers=hdr)


class DevIdP:
    """The issuer's keys and state; :func:`open_dev_idp` serves it over HTTP."""

    def __init__(self, keys: Sequence[DevKey], *, issuer: str = "", key_dir: Path | None = None):
        self.keys: list[DevKey] = list(keys)
        self.issuer = issuer
        self.key_dir = key_dir
        #: Requests served, by path (tests assert on the JWKS fetch count).
        self.requests: Counter[str] = Counter()
        #: The managed identity endpoint: its secret header, identity and token lifetime.
        self.identity_header = secrets.token_urlsafe(16)
        self.managed_identity = "00000000-0000-0000-0000-00000000a11e"
        self.managed_identity_lifetime_s = 3600
        #: Confidential clients of the token endpoint, by client id.
        self.clients: dict[str, ClientRegistration] = {}
        for alg in ALGORITHMS:
            if not any(k.alg == alg for k in self.keys):
                self.keys.append(generate_key(alg))

    @classmethod
    def from_key_dir(cls, key_dir: Path) -> DevIdP:
        """Load keys from ``key_dir`` (creating them, and the directory, when absent)."""
        path = key_dir / "keys.json"
        keys: list[DevKey] = []
        if path.exists():
            for item in json.loads(path.read_text()):
                private = serialization.load_pem_private_key(item["pem"].encode(), password=None)
                keys.append(DevKey(kid=item["kid"], alg=item["alg"], private_key=private))
        issuer_file = key_dir / "issuer"
        issuer = issuer_file.read_text().strip() if issuer_file.exists() else ""
        idp = cls(keys, issuer=issuer, key_dir=key_dir)
        idp.save()
        return idp

    def save(self) -> None:
        """Write keys.json (0600), jwks.json and issuer into ``key_dir`` (no-op without one)."""
        if self.key_dir is None:
            return
        self.key_dir.mkdir(parents=True, exist_ok=True)
        private = [{"kid": k.kid, "alg": k.alg, "pem": k.pem()} for k in self.keys]
        keys_path = self.key_dir / "keys.json"
        fd = os.open(keys_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(private, f, indent=1)
        (self.key_dir / "jwks.json").write_text(json.dumps(self.jwks(), indent=1))
        if self.issuer:
            (self.key_dir / "issuer").write_text(self.issuer + "\n")

    def signing_key(self, alg: str = "RS256") -> DevKey:
        """The current (newest) key for ``alg``."""
        for key in reversed(self.keys):
            if key.alg == alg:
                return key
        raise ValueError(f"no {alg} key; choose from {ALGORITHMS}")

    def rotate(self, alg: str = "RS256") -> DevKey:
        """Add a new signing key for ``alg``; the JWKS keeps the old ones (as IdPs do)."""
        key = generate_key(alg)
        self.keys.append(key)
        self.save()
        return key

    def register_client(
        self,
        client_id: str,
        *,
        secret: str = "",
        public_key_pem: bytes = b"",
        federated_subject: str = "",
    ) -> None:
        """Let ``client_id`` get tokens from the token endpoint by one of the three means."""
        if sum(map(bool, (secret, public_key_pem, federated_subject))) != 1:
            raise ValueError("give exactly one of secret, public_key_pem, federated_subject")
        self.clients[client_id] = ClientRegistration(
            client_id, secret, public_key_pem, federated_subject
        )

    def jwks(self) -> dict[str, Any]:
        return {"keys": [k.public_jwk() for k in self.keys]}

    def discovery(self) -> dict[str, Any]:
        return {
            "issuer": self.issuer,
            "jwks_uri": self.issuer + JWKS_PATH,
            "id_token_signing_alg_values_supported": list(ALGORITHMS),
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
        }

    def claims(
        self,
        *,
        sub: str,
        groups: Sequence[str] | None = None,
        aud: str | Sequence[str] = "edgetds",
        expires_in: int = 300,
        extra_claims: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        now = int(time.time())
        # An already expired token (expires_in <= 0) was issued 300 s before it expired: a token
        # issued after its own expiry is malformed, and verifiers refuse it as such.
        issued = now if expires_in > 0 else now + expires_in - 300
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": sub,
            "aud": aud if isinstance(aud, str) else list(aud),
            "iat": issued,
            "nbf": issued,
            "exp": now + expires_in,
            "jti": secrets.token_urlsafe(16),
        }
        if groups is not None:
            claims["groups"] = list(groups)
        claims.update(extra_claims or {})
        return claims

    def mint(
        self,
        *,
        sub: str,
        groups: Sequence[str] | None = None,
        aud: str | Sequence[str] = "edgetds",
        expires_in: int = 300,
        alg: str = "RS256",
        extra_claims: Mapping[str, Any] | None = None,
        key: DevKey | None = None,
        headers: Mapping[str, Any] | None = None,
    ) -> str:
        """A signed token. ``extra_claims`` override the defaults (e.g. ``{"nbf": ...}``);
        ``key``/``headers`` let attack tests sign with another key or add hostile headers."""
        claims = self.claims(
            sub=sub, groups=groups, aud=aud, expires_in=expires_in, extra_claims=extra_claims
        )
        return sign_token(claims, key or self.signing_key(alg), headers=headers)

    async def asgi(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """The ASGI app: discovery document and JWKS; 404 for anything else."""
        if scope["type"] == "lifespan":
            await answer_lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path = scope["path"]
        self.requests[path] += 1
        body: dict[str, Any]
        parts = path.strip("/").split("/")
        if scope["method"] == "POST" and parts[1:] == ["oauth2", "v2.0", "token"]:
            status, body = self._client_credentials(parts[0], path, await _read_form(receive))
        elif scope["method"] != "GET":
            status, body = 405, {"error": "only GET"}
        elif parts[1:] == ["v2.0", ".well-known", "openid-configuration"]:
            status, body = 200, self._tenant_discovery(parts[0])
        elif path == DISCOVERY_PATH:
            status, body = 200, self.discovery()
        elif path == JWKS_PATH:
            status, body = 200, self.jwks()
        elif path == MSI_PATH:
            status, body = self._managed_identity_token(scope)
        else:
            status, body = 404, {"error": "not found"}
        data = json.dumps(body).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(data))]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": data})

    def _tenant_discovery(self, tenant: str) -> dict[str, Any]:
        base = f"{self.issuer}/{tenant}"
        return {
            **self.discovery(),
            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
            "token_endpoint": f"{base}/oauth2/v2.0/token",
        }

    def _client_credentials(
        self, tenant: str, path: str, form: dict[str, str]
    ) -> tuple[int, dict[str, Any]]:
        """Entra ID's client credentials grant: a token for ``scope`` minus ``/.default``."""
        import jwt

        if form.get("grant_type") != "client_credentials":
            return 400, {"error": "unsupported_grant_type"}
        client = self.clients.get(form.get("client_id", ""))
        scope = form.get("scope", "").split(" ")[0]
        if client is None:
            return 400, {"error": "unauthorized_client", "error_description": "unknown client"}
        if not scope.endswith("/.default"):
            return 400, {"error": "invalid_scope", "error_description": "use RESOURCE/.default"}
        assertion = form.get("client_assertion", "")
        try:
            if client.secret:
                ok = secrets.compare_digest(form.get("client_secret", ""), client.secret)
            elif client.public_key_pem:
                jwt.decode(
                    assertion,
                    serialization.load_pem_public_key(client.public_key_pem),  # type: ignore[arg-type]
                    algorithms=["RS256", "PS256"],
                    audience=self.issuer + path,
                    issuer=client.client_id,
                )
                ok = True
            else:
                claims = jwt.decode(
                    assertion,
                    jwt.PyJWKSet.from_dict(self.jwks())[
                        jwt.get_unverified_header(assertion)["kid"]
                    ].key,
                    algorithms=list(ALGORITHMS),
                    audience=FEDERATED_AUDIENCE,
                    issuer=self.issuer,
                )
                ok = claims.get("sub") == client.federated_subject
        except (jwt.PyJWTError, KeyError, ValueError):
            ok = False
        if not ok:
            return 401, {
                "error": "invalid_client",
                "error_description": "client authentication failed",
            }
        lifetime = self.managed_identity_lifetime_s
        token = self.mint(
            sub=client.client_id,
            aud=scope.removesuffix("/.default"),
            expires_in=lifetime,
            extra_claims={"oid": client.client_id, "appid": client.client_id, "tid": tenant},
        )
        return 200, {"token_type": "Bearer", "expires_in": lifetime, "access_token": token}

    def _managed_identity_token(self, scope: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """The App Service managed identity answer (api-version 2019-08-01)."""
        from urllib.parse import parse_qs

        query = {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        if not secrets.compare_digest(headers.get("x-identity-header", ""), self.identity_header):
            return 401, {"error": "invalid X-IDENTITY-HEADER"}
        resource = query.get("resource", "")
        if not resource:
            return 400, {"error": "resource is required"}
        oid = query.get("client_id") or self.managed_identity
        lifetime = self.managed_identity_lifetime_s
        token = self.mint(
            sub=oid, aud=resource, expires_in=lifetime, extra_claims={"oid": oid, "appid": oid}
        )
        return 200, {
            "access_token": token,
            "expires_on": str(int(time.time()) + lifetime),
            "resource": resource,
            "token_type": "Bearer",
            "client_id": oid,
        }


async def _read_form(receive: Any) -> dict[str, str]:
    """An application/x-www-form-urlencoded request body (first value of each field)."""
    from urllib.parse import parse_qs

    body = await read_body(receive)
    return {k: v[0] for k, v in parse_qs(body.decode()).items()}


@asynccontextmanager
async def open_dev_idp(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    key_dir: str | Path | None = None,
    certfile: str | Path | None = None,
    keyfile: str | Path | None = None,
) -> AsyncIterator[DevIdP]:
    """Serve a dev IdP on ``host:port`` (port 0 = any free port) until the block exits.

    With ``certfile``/``keyfile`` (PEM) it serves https and the issuer is ``https://...``.
    """
    import logging

    import trio
    from hypercorn.config import Config
    from hypercorn.trio import serve

    idp = DevIdP.from_key_dir(Path(key_dir)) if key_dir is not None else DevIdP([])
    config = Config()
    config.bind = [f"{host}:{port}"]
    config.errorlog = logging.getLogger("hypercorn.error")  # our format, not its own handler
    config.accesslog = None
    config.graceful_timeout = 1.0
    if certfile is not None:
        config.certfile, config.keyfile = str(certfile), str(keyfile or certfile)
    stop = trio.Event()
    app: Any = idp.asgi
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(
            functools.partial(serve, app, config, shutdown_trigger=stop.wait)
        )
        idp.issuer = binds[0]
        idp.save()
        try:
            yield idp
        finally:
            stop.set()


# ----------------------------------------------------------------------------------------- CLI

EPILOG = """\
examples:
  edgetds dev-idp serve --port 8080              # issuer http://127.0.0.1:8080, keys in .demo/idp
  edgetds dev-idp token --sub alice --groups analysts
  edgetds dev-idp token --sub bob --groups admins --expires-in 60 --aud edgetds
  curl -H "Authorization: Bearer $(edgetds dev-idp token --sub alice --groups analysts)" ...

Keys live in --key-dir (default .demo/idp, where `edgetds demo --serve` keeps them), so `token`
mints tokens the running demo accepts; `token` never creates keys (it stops with exit status 2
when the directory has none). `token` takes the issuer from --issuer, else from the
'issuer' file that `serve` writes there. For development only: anyone who can read the key
directory can mint any identity.
"""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "dev-idp",
        help="a local OIDC issuer for development: serve discovery/JWKS, mint tokens",
        description="A development OIDC issuer on 127.0.0.1 with real keys and real tokens.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(title="actions", metavar="ACTION")
    serve_p = sub.add_parser(
        "serve",
        help="serve discovery + JWKS until Ctrl-C",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve_p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve_p.add_argument("--port", type=int, default=0, help="port (default 0: any free port)")
    serve_p.add_argument(
        "--key-dir",
        type=Path,
        default=DEFAULT_KEY_DIR,
        help=f"key directory (default {DEFAULT_KEY_DIR})",
    )
    add_log_options(serve_p)
    serve_p.set_defaults(func=_cmd_serve)
    token_p = sub.add_parser(
        "token",
        help="print a signed token",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    token_p.add_argument("--sub", required=True, help="subject (the user's id)")
    token_p.add_argument(
        "--groups",
        default="",
        help="comma-separated groups, each kept whole, e.g. 'analysts,finance admins'",
    )
    token_p.add_argument("--aud", default="edgetds", help="audience (default edgetds)")
    token_p.add_argument("--expires-in", type=int, default=300, help="seconds (default 300)")
    token_p.add_argument("--alg", choices=ALGORITHMS, default="RS256", help="default RS256")
    token_p.add_argument(
        "--claim",
        action="append",
        default=[],
        metavar="NAME=JSON",
        help="extra claim, value as JSON (repeatable), e.g. roles='[\"r\"]'",
    )
    token_p.add_argument(
        "--key-dir",
        type=Path,
        default=DEFAULT_KEY_DIR,
        help=f"key directory (default {DEFAULT_KEY_DIR})",
    )
    token_p.add_argument("--issuer", help="issuer URL (default: the one `serve` wrote)")
    token_p.set_defaults(func=_cmd_token)

    def _usage(args: argparse.Namespace) -> int:
        parser.print_help(sys.stderr)
        return 2

    parser.set_defaults(func=_usage)


def _cmd_token(args: argparse.Namespace) -> int:
    # Never create keys here: a token signed by keys no running issuer serves is refused by
    # every relay, far from the mistake (usually a --key-dir relative to another directory).
    if not (args.key_dir / "keys.json").is_file():
        print(
            f"dev-idp token: no dev IdP keys in {args.key_dir} (no keys.json there); start "
            f"`edgetds dev-idp serve --key-dir DIR` or `edgetds demo --serve` first, and pass "
            f"--key-dir with the directory it printed (the demo's is STATE/idp, default "
            f"{DEFAULT_KEY_DIR})",
            file=sys.stderr,
        )
        return 2
    idp = DevIdP.from_key_dir(args.key_dir)
    if args.issuer:
        idp.issuer = args.issuer
    if not idp.issuer:
        print(
            f"dev-idp token: no issuer known; start `edgetds dev-idp serve --key-dir "
            f"{args.key_dir}` (or `edgetds demo --serve`) first, or pass --issuer URL",
            file=sys.stderr,
        )
        return 2
    extra: dict[str, Any] = {}
    for item in args.claim:
        name, sep, value = item.partition("=")
        try:
            extra[name] = json.loads(value) if sep else None
        except json.JSONDecodeError:
            extra[name] = value
    groups = [g.strip() for g in args.groups.split(",") if g.strip()]
    print(
        idp.mint(
            sub=args.sub,
            groups=groups,
            aud=args.aud,
            expires_in=args.expires_in,
            alg=args.alg,
            extra_claims=extra,
        )
    )
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    import logging
    import signal

    import trio

    setup_logging(args.log_level, args.log_format)
    reason = "KeyboardInterrupt"

    async def main() -> None:
        nonlocal reason
        # SIGTERM (a service manager, a parent process) stops it like Ctrl-C: exit status 0
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with open_dev_idp(host=args.host, port=args.port, key_dir=args.key_dir) as idp:
                print(f"dev IdP issuer: {idp.issuer}", flush=True)
                print(f"keys in {args.key_dir} (jwks.json, keys.json); Ctrl-C to stop", flush=True)
                logging.getLogger(LOGGER).info(
                    "dev IdP serving",
                    extra={"event": "devidp.listening", "issuer": idp.issuer},
                )
                async for signum in signals:
                    reason = signal.Signals(signum).name
                    break

    try:
        trio.run(main)
    except KeyboardInterrupt:
        pass
    except BaseException as exc:
        log_stopped(LOGGER, f"failed: {exc!r} (traceback below)")
        raise
    log_stopped(LOGGER, reason)
    return 0
