"""``edgetds connector diag``: check, in order, everything the connector needs, and name the first
step that fails with a hint (instead of "login to server failed: EOF").

Steps, per relay URL (each needs the previous one; a failure skips the rest for that relay):

1. ``dns``       the relay host resolves (IPv4 and IPv6 addresses shown); via a proxy: the proxy's.
2. ``tcp``       a TCP connection opens; via an HTTP proxy: the CONNECT tunnel is granted.
3. ``tls``       (wss:// only) the TLS handshake verifies; the certificate's issuer is printed, so
                 a TLS-inspecting corporate proxy (issuer = the company's CA) is easy to spot.
4. ``websocket`` the relay's WebSocket endpoint answers the upgrade for this tunnel.
5. ``auth``      the relay accepts this connector's key (else HTTP 401/403).
6. ``relay_identity`` the relay's HELLO is signed by a pinned relay key (``relay_public_keys``).

Steps 4-6 are one real dial with the connector's own code (`connector.tunnel.TunnelLink`): the
connection is registered at the relay for a moment, then drained and closed. Then, independently:

7. ``idp``       each issuer's discovery document and JWKS load (identity/oidc.py `warm_up`).
8. ``sql_login`` every ``[logins.NAME]`` logs in to SQL Server with its ``auth`` method and runs
                 ``SELECT 1`` (the connector's own pool code, connector/pool.py); a failure
                 names its step: ``ticket`` (Kerberos), ``token`` (Entra ID), ``SSPI``
                 (NTLM/Kerberos exchange refused, 18452), ``18456`` (login failed).

Nothing secret is printed: no key, password or token; SQL Server error texts are reduced to their
error number and a hint.
"""

from __future__ import annotations

import argparse
import json
import logging
import ssl
import sys
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from websockets.exceptions import InvalidProxy, InvalidProxyStatus, ProxyError
from websockets.proxy import get_proxy, parse_proxy
from websockets.trio.client import connect_http_proxy
from websockets.uri import parse_uri

from connector.causes import describe_os_error, describe_tls_error
from connector.config import ConfigError, ConnectorConfig, load_config
from protocol import ErrorCode, error_record

__all__ = ["DiagReport", "Step", "register_diag", "run_diag"]

STEP_TIMEOUT_S = 10.0


@dataclass
class Step:
    """One check: ``status`` is "ok", "fail" or "skip"."""

    step: str
    target: str
    status: str = "ok"
    detail: str = ""
    hint: str = ""
    elapsed_ms: float = 0.0


@dataclass
class DiagReport:
    connector_id: str
    tunnel: str
    steps: list[Step] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(s.status != "fail" for s in self.steps)

    @property
    def first_failure(self) -> Step | None:
        return next((s for s in self.steps if s.status == "fail"), None)

    def as_json(self) -> dict[str, Any]:
        first = self.first_failure
        return {
            "ok": self.ok,
            "connector_id": self.connector_id,
            "tunnel": self.tunnel,
            "first_failure": asdict(first) if first else None,
            "steps": [asdict(s) for s in self.steps],
        }

    def as_text(self) -> str:
        out = [f"edgetds connector diag: connector {self.connector_id!r}, tunnel {self.tunnel!r}"]
        for s in self.steps:
            mark = {"ok": "ok  ", "fail": "FAIL", "skip": "skip"}[s.status]
            timing = f" ({s.elapsed_ms:.0f} ms)" if s.status != "skip" else ""
            out.append(f"  {mark} {s.step:<15} {s.target}: {s.detail}{timing}")
            if s.hint and s.status == "fail":
                out.append(f"       hint: {s.hint}")
        first = self.first_failure
        if first is None:
            out.append("all checks passed")
        else:
            out.append(f"first failing step: {first.step} ({first.target})")
        return "\n".join(out)


class _Failed(Exception):
    def __init__(self, detail: str, hint: str) -> None:
        super().__init__(detail)
        self.detail = detail
        self.hint = hint


async def _timed(step: Step, check: Callable[[], Awaitable[str]]) -> bool:
    started = trio.current_time()
    try:
        with trio.fail_after(STEP_TIMEOUT_S):
            step.detail = await check()
    except _Failed as exc:
        step.status, step.detail, step.hint = "fail", exc.detail, exc.hint
    except trio.TooSlowError:
        step.status = "fail"
        step.detail = f"no answer within {STEP_TIMEOUT_S:.0f} s"
        step.hint = "a firewall may drop the packets silently; check egress rules for this port"
    step.elapsed_ms = round((trio.current_time() - started) * 1000, 1)
    return step.status == "ok"


def _proxy_for(url: str, config: ConnectorConfig) -> str | None:
    """The proxy the connector itself uses for `url` ([connector] proxy; "auto" = HTTPS_PROXY /
    NO_PROXY from the environment, as websockets resolves it)."""
    from connector.tunnel import proxy_option

    option = proxy_option(config.tunnel.proxy)
    return get_proxy(parse_uri(url)) if option is True else option


def _redact(proxy: str) -> str:
    parts = urlsplit(proxy)
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")


async def _check_relay(report: DiagReport, config: ConnectorConfig, url: str) -> None:
    uri = parse_uri(url)
    names = ["dns", "tcp", "tls", "websocket", "auth", "relay_identity"]
    steps = {name: Step(name, url) for name in names}
    report.steps.extend(steps.values())
    stream: trio.abc.Stream | None = None
    try:
        proxy = _proxy_for(url, config)
        if proxy:
            parse_proxy(proxy)
    except InvalidProxy as exc:
        steps["dns"].status, steps["dns"].detail = "fail", f"unusable proxy setting: {exc}"
        steps["dns"].hint = "fix HTTPS_PROXY / [connector] proxy (http://host:port)"
        for name in names[1:]:
            steps[name].status, steps[name].detail = "skip", "an earlier step failed"
        return

    async def dns() -> str:
        host, port = (uri.host, uri.port)
        if proxy:
            p = parse_proxy(proxy)
            host, port = p.host, p.port
        try:
            infos = await trio.socket.getaddrinfo(host, port, type=trio.socket.SOCK_STREAM)
        except trio.socket.gaierror as exc:
            raise _Failed(
                f"cannot resolve {host!r}: {exc.strerror}",
                "check the host name in relay_urls (or the proxy URL) and this host's DNS "
                "(/etc/resolv.conf); on an IPv6-only host the name needs an AAAA record",
            ) from None
        addrs = sorted({str(info[4][0]) for info in infos})
        via = f" (proxy {_redact(proxy)})" if proxy else ""
        return f"{host} -> {', '.join(addrs)}{via}"

    async def tcp() -> str:
        nonlocal stream
        if proxy:
            p = parse_proxy(proxy)
            if p.scheme.startswith("socks"):
                try:
                    stream = await trio.open_tcp_stream(p.host, p.port)
                except OSError as exc:
                    raise _Failed(
                        f"cannot connect to SOCKS proxy {_redact(proxy)}: "
                        + describe_os_error(exc),
                        "check [connector] proxy / the proxy environment variables",
                    ) from None
                return f"connected to SOCKS proxy {_redact(proxy)} (the tunnel is tested below)"
            try:
                stream = await connect_http_proxy(p, uri)
            except InvalidProxyStatus as exc:
                status = exc.response.status_code
                hint = (
                    "the proxy wants credentials: put user:password in the proxy URL "
                    "(http://user:pass@proxy:3128, in HTTPS_PROXY or [connector] proxy)"
                    if status == 407
                    else "the proxy refused the tunnel: ask for CONNECT to this host:port to be "
                    "allowed (port 443 for wss://)"
                )
                raise _Failed(f"proxy {_redact(proxy)} answered HTTP {status}", hint) from None
            except (OSError, ProxyError) as exc:
                what = describe_os_error(exc) if isinstance(exc, OSError) else str(exc)
                raise _Failed(
                    f"cannot open a tunnel through proxy {_redact(proxy)}: {what}",
                    "check HTTPS_PROXY / the proxy config key, and NO_PROXY for hosts that must "
                    "not use it",
                ) from None
            return f"CONNECT {uri.host}:{uri.port} through {_redact(proxy)} granted"
        try:
            stream = await trio.open_tcp_stream(uri.host, uri.port)
        except OSError as exc:
            raise _Failed(
                f"cannot connect to {uri.host}:{uri.port}: {describe_os_error(exc)}",
                "is the relay up and this port open in outbound firewall rules? Behind a "
                "corporate proxy set HTTPS_PROXY (or [connector] proxy)",
            ) from None
        sock = getattr(stream, "socket", None)
        peer = sock.getpeername()[0] if sock is not None else "?"
        return f"connected to {peer} port {uri.port}"

    async def tls() -> str:
        assert stream is not None
        context = ssl.create_default_context(cafile=config.tunnel.relay_cafile or None)
        tls_stream = trio.SSLStream(stream, context, server_hostname=uri.host)
        try:
            await tls_stream.do_handshake()
        except (ssl.SSLError, trio.BrokenResourceError) as exc:
            await trio.aclose_forcefully(tls_stream)
            reason = describe_tls_error(exc)
            if reason in ("WRONG_VERSION_NUMBER", "HTTP_REQUEST", "RECORD_LAYER_FAILURE"):
                hint = (
                    f"port {uri.port} does not speak TLS (a plain HTTP server answered): use "
                    f"ws://{uri.host}:{uri.port} if the relay serves plain HTTP there, or the "
                    "relay's TLS port"
                )
            else:
                hint = (
                    "if the certificate is issued by your company's CA, a TLS-inspecting proxy "
                    "is in the way: exempt the relay host, or give its CA in [connector] "
                    "relay_cafile"
                )
            raise _Failed(f"TLS handshake with {uri.host} failed: {reason}", hint) from None
        cert = tls_stream.getpeercert() or {}
        issuer = _name(cert.get("issuer", ()))
        subject = _name(cert.get("subject", ()))
        version = tls_stream.version()
        await trio.aclose_forcefully(tls_stream)
        return f"{version} subject {subject!r}, issuer {issuer!r}"

    if await _timed(steps["dns"], dns) and await _timed(steps["tcp"], tcp):
        if proxy and parse_proxy(proxy).scheme.startswith("socks"):
            steps["tls"].status, steps["tls"].detail = (
                "skip",
                "through a SOCKS proxy: see websocket",
            )
            if stream is not None:
                await trio.aclose_forcefully(stream)
            await _check_handshake(config, url, steps)
            return
        if uri.secure:
            tls_ok = await _timed(steps["tls"], tls)
        else:
            steps["tls"].status, steps["tls"].detail = "skip", "ws:// (no TLS)"
            tls_ok = True
            if stream is not None:
                await trio.aclose_forcefully(stream)
        if tls_ok:
            await _check_handshake(config, url, steps)
            return
    if stream is not None:  # after a failed or timed-out step
        await trio.aclose_forcefully(stream)
    for step in steps.values():
        if step.status == "ok" and not step.detail:
            step.status, step.detail = "skip", "an earlier step failed"


def _register_hint(config: ConnectorConfig, key: Ed25519PrivateKey) -> str:
    """How to register this connector's key at the relay, with the key itself (it is public)."""
    from identity.keys import encode_public_key

    cid, tunnel = config.tunnel.connector_id, config.tunnel.tunnel
    return (
        f"the relay does not know this connector's key: register it (Python relay: in relay.toml "
        f'[tunnels.{tunnel}] connectors = {{ "{cid}" = "{encode_public_key(key)}" }}, then '
        "reload the relay; Worker: the same entry in the TUNNELS variable), or fix [connector] "
        "id and tunnel if the relay knows this key under other names"
    )


def _name(rdns: Any) -> str:
    return ", ".join(f"{k}={v}" for rdn in rdns for k, v in rdn)


async def _refuse(link: Any, query: Any, sink: Any, cancel: Any) -> None:
    await sink.finish(error_record(ErrorCode.CONNECTOR_DRAINING, "diagnostics only"), error=True)


async def _dial_once(link: Any) -> None:
    """Dial, wait for READY, drain and close; the link's own error, not a group, on failure."""
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(link.run)
            await link.drain("diagnostics only")
            await link.close("diagnostics done")
    except BaseExceptionGroup as group:
        leaves = _leaves(group)
        if len(leaves) == 1 and isinstance(leaves[0], Exception):
            raise leaves[0] from None
        raise


def _leaves(group: BaseExceptionGroup[Any]) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        out.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return out


async def _check_handshake(config: ConnectorConfig, url: str, steps: dict[str, Step]) -> None:
    """WebSocket upgrade, connector auth and relay identity: one real dial with TunnelLink."""
    from connector.runtime import connector_private_key, pinned_relay_keys
    from connector.tunnel import DialFailed, RelayRejected, TunnelLink

    private_key = connector_private_key(config)
    link = TunnelLink(
        config.tunnel,
        url,
        private_key=private_key,
        relay_keys=pinned_relay_keys(config),
        handler=_refuse,
    )
    started = trio.current_time()
    failure: tuple[str, str, str] | None = None
    try:
        with trio.fail_after(STEP_TIMEOUT_S):
            await _dial_once(link)
    except DialFailed as exc:
        if exc.auth:
            failure = ("auth", str(exc), _register_hint(config, private_key))
        else:
            failure = (
                "websocket",
                str(exc),
                "check the relay URL and tunnel name; a proxy that does not pass WebSocket "
                "upgrades also fails here",
            )
    except RelayRejected as exc:
        failure = (
            "relay_identity",
            str(exc).removeprefix(f"relay {url}: "),
            "the relay's key is not one of [connector] relay_public_keys: pin the relay's .pub "
            "(during a relay key rotation pin both the old and the new key)",
        )
    except trio.TooSlowError:
        failure = ("websocket", "no HELLO from the relay in time", "is this really a relay?")
    elapsed = round((trio.current_time() - started) * 1000, 1)
    order = ["websocket", "auth", "relay_identity"]
    failed_at = order.index(failure[0]) if failure else len(order)
    for i, name in enumerate(order):
        step = steps[name]
        step.elapsed_ms = elapsed
        if i < failed_at:
            step.detail = {
                "websocket": "the relay accepted the upgrade (subprotocol edgetds.v1)",
                "auth": f"the relay accepted connector {config.tunnel.connector_id!r}",
                "relay_identity": f"HELLO verified (session {link.session_id})",
            }[name]
            if name == "websocket" and failure and failure[0] == "auth":
                step.detail = "the relay's endpoint answered the upgrade"
        elif i == failed_at and failure:
            step.status, step.detail, step.hint = "fail", failure[1], failure[2]
        else:
            step.status, step.detail = "skip", "an earlier step failed"


async def _check_idp(report: DiagReport, config: ConnectorConfig) -> None:
    from connector.runtime import build_verifier

    issuers = [str(i.get("issuer")) for i in config.identity.get("issuers", [])]
    try:
        verifier = build_verifier(config)
    except ValueError as exc:
        report.steps.append(Step("idp", "[[issuers]]", "fail", str(exc), "fix the issuer table"))
        return
    async with verifier:
        started = trio.current_time()
        with trio.move_on_after(STEP_TIMEOUT_S):
            results = await verifier.warm_up()
        elapsed = round((trio.current_time() - started) * 1000, 1)
    for issuer in issuers:
        error = results.get(issuer, "no answer in time")
        step = Step("idp", issuer, elapsed_ms=elapsed)
        if error is None:
            step.detail = "discovery and JWKS loaded"
        else:
            step.status, step.detail = "fail", error
            step.hint = (
                "the connector fetches /.well-known/openid-configuration and the JWKS itself: "
                "allow egress to the IdP (or set HTTPS_PROXY), check the issuer URL exactly as "
                "the tokens' iss claim spells it"
            )
        report.steps.append(step)


def _sql_hint(exc: BaseException) -> tuple[str, str]:
    """What a login failure means, from the error chain (never the server's message text)."""
    from connector.pool import DatabaseUnavailable

    if isinstance(exc, DatabaseUnavailable) and exc.step in ("ticket", "token", "SSPI", "18456"):
        # the connector's own words for its steps; SQL Server's text stays out (as below)
        reason = exc.detail.split(": ", 1)[1] if exc.step in ("ticket", "token") else ""
        what = {"SSPI": "error 18452 (SSPI refused)", "18456": "error 18456 (login failed)"}
        return f"step {exc.step}: " + (reason or what.get(exc.step, "")), exc.hint
    seen: BaseException | None = exc
    number = None
    while seen is not None and number is None:
        number = getattr(seen, "msg_no", None) or getattr(seen, "number", None)
        text = str(seen)
        if number is None and "Login failed" in text:
            number = 18456
        if number is None and "Cannot open database" in text:
            number = 4060
        seen = seen.__cause__ or seen.__context__
    if number == 18456:
        return "error 18456 (login failed)", (
            "wrong user or password: check [logins.NAME] user and the password_file / "
            "password_env; on SQL Server the login must exist and SQL authentication be enabled"
        )
    if number == 4060:
        return "error 4060 (cannot open database)", (
            "check [database] database, and that the login has a user in that database"
        )
    if number:
        return f"SQL Server error {number}", "see the SQL Server error log for this number"
    return str(exc), (
        "is SQL Server listening on [database] host:port, and reachable from this host? "
        "(TLS: [database] cafile)"
    )


async def _check_sql(report: DiagReport, config: ConnectorConfig) -> None:
    from connector.ops import probe_login
    from connector.pool import LoginPool

    db = config.database
    for name, login in db.logins.items():
        auth = "" if login.auth == "sql" else f"auth {login.auth}, "
        step = Step("sql_login", f"{name} ({auth}{login.user}@{db.host}:{db.port}/{db.database})")
        pool = LoginPool(db, login, query_timeout_s=STEP_TIMEOUT_S)

        async def check(pool: LoginPool = pool) -> str:
            try:
                await probe_login(pool)
            except Exception as exc:  # any failure: reported with a hint, never raised
                detail, hint = _sql_hint(exc)
                raise _Failed(detail, hint) from None
            return "login ok, SELECT 1 answered"

        try:
            await _timed(step, check)
        finally:
            await pool.aclose()
        report.steps.append(step)


async def run_diag(config: ConnectorConfig) -> DiagReport:
    """Run every check for `config` and return the report (never raises for a failed check)."""
    report = DiagReport(config.tunnel.connector_id, config.tunnel.tunnel)
    for url in config.tunnel.relay_urls:
        await _check_relay(report, config, url)
    await _check_idp(report, config)
    await _check_sql(report, config)
    return report


# -- CLI ----------------------------------------------------------------------------------------

EPILOG = """\
examples:
  edgetds connector diag --config connector.toml          # every step, the first failure named
  edgetds connector diag --config connector.toml --json   # the same as JSON (for tickets/tools)
  HTTPS_PROXY=http://user:pass@proxy:3128 edgetds connector diag --config connector.toml

Steps: dns, tcp, tls (prints the certificate issuer: a TLS-inspecting proxy shows up there),
websocket, auth (connector key registered at the relay), relay_identity (HELLO signed by a pinned
relay key), idp (discovery + JWKS per issuer), sql_login (every [logins.NAME]). Exit code 0 when
all pass, 1 when a step fails, 2 when the config itself is invalid.
"""


def register_diag(subparsers: Any) -> None:
    """Add ``diag`` to the ``edgetds connector`` actions."""
    parser = subparsers.add_parser(
        "diag",
        help="check DNS, TCP, TLS, WebSocket, auth, relay key, IdP and SQL logins in order",
        description="Check every step the connector needs and name the first one that fails.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", required=True, type=Path, help="connector TOML file")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.set_defaults(func=_cmd_diag)


def _cmd_diag(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        if args.json:
            problems = [str(p) for p in exc.problems]
            print(json.dumps({"ok": False, "config_problems": problems}, indent=2))
        else:
            for problem in exc.problems:
                print(f"error: {problem}", file=sys.stderr)
            print("fix the config first: edgetds connector check --config ...", file=sys.stderr)
        return 2
    # the connector's own modules log their errors; diag reports them itself
    logging.getLogger("edgetds").setLevel(logging.CRITICAL)
    report = trio.run(run_diag, config)
    print(json.dumps(report.as_json(), indent=2) if args.json else report.as_text())
    return 0 if report.ok else 1
