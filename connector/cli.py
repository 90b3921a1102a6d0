"""`edgetds connector run|check|explain|enroll` and `edgetds keygen`."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["register"]

CONNECTOR_EPILOG = """\
examples:
  edgetds keygen --out keys --name conn-1            # the connector's identity (register the .pub)
  edgetds connector check --config connector.toml    # every config problem, with its location
  edgetds connector explain --config connector.toml --token "$TOKEN"   # which role, and why
  edgetds connector run --config connector.toml      # dial out and serve; SIGTERM drains
  kill -HUP <pid>                                     # reload the key and relay_public_keys live

The connector needs no listening port: it dials OUT to the relay over ws(s)://, proves its key,
checks the relay's key, then verifies every query's user token and runs it under the role's login.
See examples/connector.toml and examples/policy.toml.

signals (connector run):
  SIGTERM, SIGINT   drain: no new queries, in-flight ones get drain_grace_s, then exit
                    (a second signal exits at once)
  SIGHUP            re-read the config and apply the connector key (new connections use it)
                    and relay_public_keys (connections whose relay key is no longer pinned are
                    replaced; their in-flight queries finish). A config that `connector run`
                    would refuse at start is refused (connector.reload_failed lists every
                    problem) and the running one kept; other settings need a restart. Key
                    rotation: README, "Rotate keys". It also rotates the [audit] file: audit.jsonl
                    becomes audit.jsonl.<seq of its last record, 12 digits> and the chain continues
                    in a new audit.jsonl (edgetds audit verify audit.jsonl.* audit.jsonl).
"""

ENROLL_EPILOG = """\
examples:
  # on the relay's side, the operator makes a one-time token (15 minutes by default):
  edgetds relay enroll --tunnel sales --connector conn-1 --config relay.toml > conn-1.token
  # on the connector's machine:
  edgetds connector enroll --token-file conn-1.token --out /etc/edgetds
  ssh relay-host cat conn-1.token | edgetds connector enroll - --out /etc/edgetds
  edgetds connector check --config /etc/edgetds/connector.toml
  edgetds connector run --config /etc/edgetds/connector.toml

What it does: checks the token (whole, unaltered, not expired), makes a new key, proves it to the
relay named in the token, checks the relay's signed answer with the relay key the token carries,
and only then writes DIR/connector.key (mode 0600), DIR/connector.pub and DIR/connector.toml.
An existing connector.toml keeps everything but [connector] id, tunnel, relay_urls,
private_key_file and relay_public_keys; a new one is examples/connector.toml with those filled in
([database], [logins.*], [[issuers]], [policy] and [audit] are yours to set).

A token is a credential that enrols whoever uses it first, once. A TOKEN argument is visible to
other users in `ps` and lands in shell history: prefer --token-file or - (stdin). The token is
never printed or logged. A refusal names its code (enroll.expired, enroll.used, ...) and what to
do; nothing is written then.
"""

KEYGEN_EPILOG = """\
examples:
  edgetds keygen --out keys --name conn-1     # keys/conn-1.key (0600) + keys/conn-1.pub
  edgetds keygen --out keys --name relay      # the relay's key; pin relay.pub in connector.toml

Put the .pub line into the relay config ([tunnels.NAME] connectors = { "conn-1" = "ed25519:..." })
or into connector.toml (relay_public_keys = ["ed25519:..."]). Never copy the .key file anywhere.
"""


class _JsonFormatter(logging.Formatter):
    """One JSON object per line; `extra` fields included. Callers never pass secrets."""

    _SKIP = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in self._SKIP and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def setup_logging(level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # websockets/httpx debug logs could include headers (tokens): keep them at warning
    for name in ("websockets", "httpx", "httpcore", "pytds"):
        logging.getLogger(name).setLevel(logging.WARNING)


def register(subparsers: Any) -> None:
    conn = subparsers.add_parser(
        "connector",
        help="run, check or explain an on-prem connector",
        description="The on-prem connector: dials out to the relay and runs identity-checked "
        "queries on SQL Server.",
        epilog=CONNECTOR_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = conn.add_subparsers(title="actions", metavar="ACTION")
    actions = (
        ("run", "dial the relay(s) and serve queries until SIGTERM", _cmd_run),
        ("check", "validate a config (and its policy) and print every problem", _cmd_check),
        (
            "explain",
            "verify a token like the connector would and show which role it maps to and why",
            _cmd_explain,
        ),
    )
    for name, help_text, func in actions:
        action = sub.add_parser(
            name,
            help=help_text,
            epilog=CONNECTOR_EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        action.add_argument("--config", required=True, type=Path, help="connector TOML file")
        if name == "explain":
            action.add_argument(
                "--token", required=True, help="an end user's IdP token ('-' reads it from stdin)"
            )
        action.set_defaults(func=func)
    enroll = sub.add_parser(
        "enroll",
        help="register this connector at the relay with a one-time token and write its config",
        description="Enrol with a token from `edgetds relay enroll`: make the connector key, "
        "register it at the relay, pin the relay key, write connector.key/.pub/.toml into --out.",
        epilog=ENROLL_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    enroll.add_argument(
        "token",
        nargs="?",
        metavar="TOKEN",
        help="the enrolment token, or - to read it from stdin (visible in `ps`: prefer "
        "--token-file or -)",
    )
    enroll.add_argument("--token-file", type=Path, help="read the token from this file")
    enroll.add_argument(
        "--out", required=True, type=Path, help="directory for connector.key/.pub/.toml"
    )
    enroll.add_argument(
        "--force", action="store_true", help="replace an existing DIR/connector.key"
    )
    enroll.add_argument(
        "--cafile", type=Path, help="PEM CA bundle for an https relay with a private CA"
    )
    enroll.set_defaults(func=_cmd_enroll)
    from connector.diag import register_diag  # `connector diag` lives in connector/diag.py

    register_diag(sub)
    conn.set_defaults(func=lambda _args: (conn.print_help(sys.stderr), 2)[1])

    keygen = subparsers.add_parser(
        "keygen",
        help="create an Ed25519 key pair (connector or relay identity)",
        description="Write NAME.key (PKCS#8 PEM, mode 0600) and NAME.pub (ed25519:...) into DIR.",
        epilog=KEYGEN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    keygen.add_argument("--out", required=True, type=Path, help="directory to write into")
    keygen.add_argument("--name", required=True, help="file name stem, e.g. conn-1")
    keygen.add_argument("--force", action="store_true", help="overwrite existing files")
    keygen.set_defaults(func=_cmd_keygen)


def _cmd_enroll(args: argparse.Namespace) -> int:
    from connector.enroll import EnrollFailed, enroll, read_token, report

    try:
        if args.token is not None and args.token_file is not None:
            raise EnrollFailed("request.invalid", "give the token once: TOKEN, - or --token-file")
        token = read_token(args.token, args.token_file, sys.stdin)
        done = enroll(token, args.out, force=args.force, cafile=args.cafile)
    except EnrollFailed as exc:
        print(f"edgetds connector enroll: {exc}", file=sys.stderr)
        return 1
    print(report(done))
    return 0


def _cmd_keygen(args: argparse.Namespace) -> int:
    from identity.keys import KeyFileError, generate_key_files

    try:
        gen = generate_key_files(args.out, args.name, overwrite=args.force)
    except KeyFileError as exc:
        print(f"edgetds keygen: {exc}", file=sys.stderr)
        return 1
    print(f"private key: {gen.private_path} (mode 0600; keep it here)")
    print(f"public key:  {gen.public_path}")
    print(f"public:      {gen.public_key}")
    print(f"key id:      {gen.key_id}")
    return 0


def _load(path: Path) -> Any:
    """The validated config (`connector.runtime.check_config`), or None after printing every
    problem."""
    from connector.config import ConfigError
    from connector.runtime import check_config

    try:
        return check_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr)
        print(f"{len(exc.problems)} problem(s) in {path}", file=sys.stderr)
        return None


def _cmd_check(args: argparse.Namespace) -> int:
    from connector.runtime import build_policy

    config = _load(args.config)
    if config is None:
        return 1
    roles = ", ".join(r.name for r in build_policy(config).roles) or "(none)"
    t = config.tunnel
    print(f"ok: connector {t.connector_id!r} for tunnel {t.tunnel!r}")
    print(f"  relays: {', '.join(t.relay_urls)} ({t.ha_connections} connection(s))")
    print(f"  database: {config.database.host}:{config.database.port}/{config.database.database}")
    print(f"  logins: {', '.join(sorted(config.database.logins))}; roles: {roles}")
    print(f"  audit: {config.audit_file or '(off)'}")
    return 0


def _cmd_explain(args: argparse.Namespace) -> int:
    import trio

    from connector.policy import PolicyError
    from connector.runtime import build_policy, build_verifier
    from identity.oidc import TokenError

    config = _load(args.config)
    if config is None:
        return 1
    token = sys.stdin.read().strip() if args.token == "-" else args.token.strip()
    try:
        policy = build_policy(config)
    except (PolicyError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1

    async def verify() -> Any:
        async with build_verifier(config) as verifier:
            return await verifier.verify(token)

    try:
        identity = trio.run(verify)
    except TokenError as exc:
        print(f"token refused: {exc.code}: {exc.message}", file=sys.stderr)
        print("every query with this token would be refused before reaching SQL Server")
        return 1
    print(policy.explain(identity))
    return 0


def _reload_keys(path: str, connector: Any, log: logging.Logger) -> None:
    """SIGHUP: re-validate the config as start-up does; apply the connector key and relay pins,
    keep the rest. Any problem: the running config is kept and `connector.reload_failed` lists
    every problem."""
    from connector.config import ConfigError
    from connector.runtime import check_config

    try:
        config = check_config(path)
    except ConfigError as exc:
        problems = [str(p) for p in exc.problems]
        log.error(
            "connector.reload_failed: SIGHUP: config not reloaded, the running one is kept: %s",
            "; ".join(problems),
            extra={
                "event": "connector.reload_failed",
                "problems": problems,
                "hint": "fix the file and send SIGHUP again; the running config is unchanged",
            },
        )
        return
    summary = connector.reload_keys(config)
    log.info(
        "SIGHUP: connector key and relay pins reloaded",
        extra={"event": "connector.reloaded", **summary},
    )
    if summary["restart_needed"]:
        log.warning(
            "SIGHUP: these settings changed but need a restart: %s",
            ", ".join(summary["restart_needed"]),
        )


def _cmd_run(args: argparse.Namespace) -> int:
    import trio

    from connector.policy import PolicyError
    from connector.runtime import open_connector

    config = _load(args.config)
    if config is None:
        return 1
    setup_logging(config.log_level)
    log = logging.getLogger("edgetds.connector")

    async def main() -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            async with open_connector(config) as connector, trio.open_nursery() as nursery:
                log.info(
                    "connector started",
                    extra={
                        "connector_id": config.tunnel.connector_id,
                        "tunnel": config.tunnel.tunnel,
                        "relays": list(config.tunnel.relay_urls),
                    },
                )

                async def on_signals() -> None:
                    async for signum in signals:
                        name = signal.Signals(signum).name
                        if signum == signal.SIGHUP:
                            _reload_keys(args.config, connector, log)
                            nursery.start_soon(connector.rotate_audit)
                        elif not connector.draining:
                            log.info(
                                "%s: draining (send it again to exit at once)",
                                name,
                                extra={"grace_s": config.tunnel.drain_grace_s},
                            )
                            connector.start_shutdown()
                        else:
                            log.warning("%s again: exiting now", name)
                            connector.abort()

                nursery.start_soon(on_signals)
                await connector.wait_stopped()
                nursery.cancel_scope.cancel()

    try:
        trio.run(main)
    except (PolicyError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (OSError, BaseExceptionGroup) as exc:
        failures = _os_errors(exc)
        if failures is None:
            raise
        for failure in failures:  # a file or port the system refused: no traceback, the cause
            log.error("connector stopped: %s", failure)
            print(f"error: the connector stopped: {failure}", file=sys.stderr)
        return 1
    return 0


def _os_errors(exc: BaseException) -> list[str] | None:
    """Each OSError in ``exc`` (a group's leaves) as one line, or None if anything else is
    among them (a bug: its traceback is worth more than a line)."""
    if isinstance(exc, BaseExceptionGroup):
        lines: list[str] = []
        for leaf in exc.exceptions:
            sub = _os_errors(leaf)
            if sub is None:
                return None
            lines += sub
        return lines
    if isinstance(exc, OSError):
        where = f" ({exc.filename})" if exc.filename else ""
        return [f"{exc.strerror or exc}{where}"]
    return None
