"""`edgetds relay serve --config relay.toml`: run the self-hosted Python relay, and
`edgetds relay enroll`: make a one-time enrolment token for a connector (SPEC.md 8.7).

The first line on stdout is `relay listening on http://HOST:PORT` (flushed), so a parent process
(the demo, a test) can read the port even with `listen = "127.0.0.1:0"`. Logs go to stderr in
the format of logsetup (JSON lines, text on a terminal, --log-format), per-query lines at debug
with a `queries.summary` line every --log-summary-s, and `stopped` (with the reason) last.
SIGTERM/SIGINT drain: connectors are told to stop sending queries here, in-flight queries get
`--grace` seconds, then the relay exits; a second signal exits at once. SIGHUP re-reads the config
and applies its keys and tunnels without dropping a session (key rotation, README "Rotate keys").
Start-up and SIGHUP validate the config the same way (`_load_config`): a config start-up would
refuse is refused by a reload too, the running one is kept, and `relay.reload_failed` lists every
problem.
"""

from __future__ import annotations

import argparse
import gc
import logging
import signal
import sys
from typing import Any

from logsetup import add_log_options, log_stopped, setup_logging

__all__ = ["register"]

EPILOG = """\
examples:
  edgetds keygen --out keys --name relay                # the relay's signing key (pin relay.pub
                                                        # in every connector.toml)
  edgetds relay serve --config examples/relay.toml      # serve on [relay] listen
  edgetds relay serve --config relay.toml --listen 127.0.0.1:0   # any free port (printed)
  edgetds relay enroll --tunnel demo --connector conn-1 --config relay.toml   # one-time token
                                                        # for `edgetds connector enroll`

  curl -s http://127.0.0.1:8787/healthz
  curl -s http://127.0.0.1:8787/v1/relay/stats          # refusal counters (loopback only)
  curl -s -H "Authorization: Bearer $(edgetds dev-idp token --sub alice --groups analysts)" \\
       -d '{"sql": "SELECT 1 AS one"}' http://127.0.0.1:8787/v1/tunnels/demo/query

Connectors dial ws://HOST:PORT/v1/tunnels/TUNNEL/connect; the relay checks their token before the
upgrade. Client queries must carry a token from an issuer listed in [[issuers]].
See examples/relay.toml for every key, and SPEC.md for the HTTP API.

signals:
  SIGTERM, SIGINT   drain: connectors stop getting queries, in-flight ones get --grace seconds
  SIGHUP            reload keys and tunnels from --config, live: the relay key signs new
                    connections' HELLOs (connections made before keep theirs); a connector id may
                    list ["ed25519:NEW", "ed25519:OLD"] (both accepted); connections whose key was
                    removed are drained and reconnect with their current key. A config that
                    `relay serve` would refuse at start is refused (relay.reload_failed lists
                    every problem) and the running one kept. listen, TLS, [[issuers]],
                    [identity] and [limits] need a restart.
"""


ENROLL_EPILOG = """\
examples:
  # the Python relay: key and URL from its config ([relay] private_key_file, public_url)
  edgetds relay enroll --tunnel sales --connector conn-1 --config relay.toml > conn-1.token
  # the Cloudflare Worker relay (or any relay whose key file you hold): say where it is
  edgetds relay enroll --tunnel sales --connector conn-1 --key keys/relay.key \\
      --relay-url https://edgetds-relay.example.workers.dev --expires-in 1h
  # then, on the connector's machine:
  edgetds connector enroll --token-file conn-1.token --out /etc/edgetds

The token is made here, offline, with the relay's signing key: nothing is sent anywhere. It is
printed alone on stdout (the details go to stderr). It enrols ONE connector key, once, until it
expires (--expires-in, default 15m, at most 7d): treat it as a secret, and move it to the
connector's machine by file or pipe rather than on a command line (`ps` shows arguments).
The relay must keep enrolled keys: the Python relay needs [relay] enrollment_file; a tunnel may
then have connectors = {} and only enrolled connectors. Enrolling a connector id again replaces
its enrolled key and drains the connections made with the old one.
"""


def _duration(text: str) -> int:
    """``90s``, ``15m``, ``2h``, ``7d`` (or plain seconds) as seconds."""
    import re

    match = re.fullmatch(r"\s*(\d+)\s*([smhd]?)\s*", text)
    if match is None or int(match[1]) == 0:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration like 90s, 15m, 2h or 7d (at most 7d)"
        )
    return int(match[1]) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match[2]]


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "relay",
        help="run the self-hosted Python relay (connector WebSockets + client HTTP API)",
        description="The self-hosted relay: connectors dial in, clients POST queries.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")
    serve = sub.add_parser(
        "serve",
        help="serve the relay described by a TOML config",
        description="Serve connector WebSockets and the client HTTP API on one port.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument("--config", required=True, help="relay TOML file (see examples/relay.toml)")
    serve.add_argument("--listen", help="override [relay] listen, e.g. 127.0.0.1:0")
    serve.add_argument(
        "--grace", type=float, default=30.0, help="seconds in-flight queries get on shutdown"
    )
    add_log_options(serve, summary=True)
    serve.set_defaults(func=_serve)
    enroll = sub.add_parser(
        "enroll",
        help="make a one-time token that enrols a connector (edgetds connector enroll TOKEN)",
        description="Print a one-time enrolment token for connector --connector on tunnel "
        "--tunnel, signed with the relay's key (SPEC.md 8.7).",
        epilog=ENROLL_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    enroll.add_argument("--tunnel", required=True, help="the tunnel the connector will serve")
    enroll.add_argument("--connector", required=True, help="the connector id it will have")
    enroll.add_argument(
        "--expires-in",
        type=_duration,
        default=15 * 60,
        metavar="DURATION",
        help="token lifetime: 90s, 15m (default), 2h, 7d (the most)",
    )
    source = enroll.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", help="the Python relay's TOML (its key and public_url)")
    source.add_argument(
        "--key", help="the relay's private key file (PKCS#8 PEM), e.g. the Worker's"
    )
    enroll.add_argument(
        "--relay-url",
        help="the relay's http(s) base URL, https://host[:port] (required with --key; overrides "
        "[relay] public_url)",
    )
    enroll.set_defaults(func=_enroll)
    parser.set_defaults(func=lambda args: _usage(parser))


def _enroll(args: argparse.Namespace) -> int:
    import datetime
    import time

    from identity.keys import KeyFileError, load_private_key
    from protocol import ENROLL_MAX_LIFETIME, key_id, make_enroll_token
    from relay.config import ConfigError, load_config

    def fail(message: str) -> int:
        print(f"edgetds relay enroll: {message}", file=sys.stderr)
        return 2

    url = args.relay_url or ""
    if args.config:
        try:
            config = load_config(args.config)
        except ConfigError as exc:
            for line in exc.problems:
                print(f"edgetds relay enroll: {line}", file=sys.stderr)
            return 2
        if args.tunnel not in config.tunnels:
            return fail(
                f"tunnel {args.tunnel!r} is not in {args.config}; add [tunnels.{args.tunnel}] "
                "(connectors = {} is enough with enrollment_file) and reload the relay"
            )
        if not config.enrollment_file:
            return fail(
                f"{args.config} has no [relay] enrollment_file: the relay would refuse the token "
                '(enroll.disabled); set it, e.g. enrollment_file = "enrolled.json", and restart '
                "the relay"
            )
        key, url = config.private_key, url or config.public_url
        if not url:
            return fail(
                f"{args.config} has no [relay] public_url: set it to the URL connectors reach "
                "the relay at (https://host[:port]), or pass --relay-url"
            )
    else:
        if not url:
            return fail("--key needs --relay-url (the relay's https://host[:port])")
        try:
            key = load_private_key(args.key)
        except KeyFileError as exc:
            return fail(f"--key: {exc}")
    if args.expires_in > ENROLL_MAX_LIFETIME:
        return fail("--expires-in is at most 7d")
    now = int(time.time())
    try:
        token = make_enroll_token(
            key,
            relay_url=url.rstrip("/"),
            tunnel=args.tunnel,
            connector_id=args.connector,
            now=now,
            lifetime=args.expires_in,
        )
    except ValueError as exc:
        return fail(str(exc).replace("enrolment token", "the token's"))
    expires = datetime.datetime.fromtimestamp(now + args.expires_in, datetime.UTC)
    print(token, flush=True)
    print(
        f"enrolment token for connector {args.connector} on tunnel {args.tunnel} at "
        f"{url.rstrip('/')} (relay key id {key_id(key)}), valid once until "
        f"{expires:%Y-%m-%d %H:%M:%S} UTC.\n"
        "On the connector's machine: edgetds connector enroll --token-file FILE --out DIR",
        file=sys.stderr,
    )
    return 0


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def _load_config(args: argparse.Namespace) -> Any:
    """The relay config of --config (and --listen): the one validation start-up and SIGHUP share.

    Raises:
        ConfigError: listing every problem.
    """
    import dataclasses

    from relay.config import ConfigError, load_config, split_listen

    problems: list[str] = []
    config = None
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        problems.extend(exc.problems)
    if args.listen:
        try:
            split_listen(args.listen)
        except ConfigError as exc:
            problems.extend(exc.problems)
    if problems or config is None:
        raise ConfigError(problems)
    if args.listen:
        config = dataclasses.replace(config, listen=args.listen)
    return config


def _serve(args: argparse.Namespace) -> int:
    import trio

    from relay.config import ConfigError
    from relay.server import RunningRelay, serve_relay

    try:
        config = _load_config(args)
    except ConfigError as exc:
        for line in exc.problems:
            print(f"edgetds relay: {line}", file=sys.stderr)
        return 2
    setup_logging(args.log_level, args.log_format)
    reason = "served"

    async def main() -> None:
        nonlocal reason
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            stop = trio.Event()
            async with trio.open_nursery() as nursery:

                async def run_server(task_status: trio.TaskStatus[RunningRelay]) -> None:
                    try:
                        await serve_relay(
                            config,
                            shutdown_trigger=stop.wait,
                            grace_s=args.grace,
                            summary_interval_s=args.log_summary_s,
                            task_status=task_status,
                        )
                    finally:
                        nursery.cancel_scope.cancel()  # served and drained: stop listening

                running: RunningRelay = await nursery.start(run_server)
                _tune_gc()
                print(f"relay listening on {running.http_url}", flush=True)
                async for signum in signals:
                    if signum == signal.SIGHUP:
                        _reload(args, running)
                        continue
                    name = signal.Signals(signum).name
                    if stop.is_set():
                        reason = f"{name} again: exited at once"
                        nursery.cancel_scope.cancel()  # second signal: exit at once
                        return
                    reason = f"{name}: drained"
                    stop.set()

    try:
        trio.run(main)
    except BaseException as exc:  # noqa: BLE001 - unwrap trio's exception groups for the user
        problem = _find(exc, (ConfigError, OSError))
        if isinstance(problem, ConfigError):
            log_stopped("edgetds.relay", f"config refused: {problem}")
            print(f"edgetds relay: {problem}", file=sys.stderr)
            return 2
        if isinstance(problem, OSError):
            log_stopped("edgetds.relay", f"cannot serve on {config.listen}: {problem}")
            print(f"edgetds relay: cannot serve on {config.listen}: {problem}", file=sys.stderr)
            return 1
        log_stopped("edgetds.relay", f"failed: {type(exc).__name__}")
        raise
    log_stopped("edgetds.relay", reason)
    return 0


#: Container objects allocated and not freed since the last collection that start a young
#: collection. Python's 700 is crossed over and over by the objects of 16 queries in flight, and
#: each collection walks every young object alive (about 90 K instructions per query at
#: concurrency 16, none at 1); the relay's requests leave next to no reference cycles to find.
GC_YOUNG_THRESHOLD = 10_000


def _tune_gc() -> None:
    """What is alive once the relay listens (modules, the app, its keys) lives as long as the
    process: frozen, a full collection no longer walks it; young collections start later."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


def _reload(args: argparse.Namespace, running: Any) -> None:
    """SIGHUP: re-validate --config as start-up does and apply its keys and tunnels; on any
    problem keep the running config and log `relay.reload_failed` with every problem."""
    from relay.config import ConfigError
    from relay.logs import log_event

    try:
        config = _load_config(args)
    except ConfigError as exc:
        prefix = f"{args.config} "
        log_event(
            "relay.reload_failed",
            level=logging.ERROR,
            file=args.config,
            problems=[problem.removeprefix(prefix) for problem in exc.problems],
            hint="fix the file and send SIGHUP again; the running config is unchanged",
        )
        return
    running.app.reload(config)


def _find(exc: BaseException, types: tuple[type[BaseException], ...]) -> BaseException | None:
    """The first exception of `types` in `exc` or, recursively, in its exception group."""
    if isinstance(exc, types):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _find(inner, types)
            if found is not None:
                return found
    return None
