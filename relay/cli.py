"""`edgetds relay serve --config relay.toml`: run the self-hosted Python relay.

The first line on stdout is `relay listening on http://HOST:PORT` (flushed), so a parent process
(the demo, a test) can read the port even with `listen = "127.0.0.1:0"`. Logs go to stderr as
`key=value` lines. SIGTERM/SIGINT drain: connectors are told to stop sending queries here,
in-flight queries get `--grace` seconds, then the relay exits; a second signal exits at once.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from typing import Any

__all__ = ["register"]

EPILOG = """\
examples:
  edgetds keygen --out keys --name relay                # the relay's signing key (pin relay.pub
                                                        # in every connector.toml)
  edgetds relay serve --config examples/relay.toml      # serve on [relay] listen
  edgetds relay serve --config relay.toml --listen 127.0.0.1:0   # any free port (printed)

  curl -s http://127.0.0.1:8787/healthz
  curl -s http://127.0.0.1:8787/v1/relay/stats          # refusal counters (loopback only)
  curl -s -H "Authorization: Bearer $(edgetds dev-idp token --sub alice --groups analysts)" \\
       -d '{"sql": "SELECT 1 AS one"}' http://127.0.0.1:8787/v1/tunnels/demo/query

Connectors dial ws://HOST:PORT/v1/tunnels/TUNNEL/connect; the relay checks their token before the
upgrade. Client queries must carry a token from an issuer listed in [[issuers]].
See examples/relay.toml for every key, and SPEC.md for the HTTP API.
"""


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
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    serve.set_defaults(func=_serve)
    parser.set_defaults(func=lambda args: _usage(parser))


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def _serve(args: argparse.Namespace) -> int:
    import dataclasses

    import trio

    from relay.config import ConfigError, load_config, split_listen
    from relay.server import RunningRelay, serve_relay

    try:
        config = load_config(args.config)
        if args.listen:
            split_listen(args.listen)
            config = dataclasses.replace(config, listen=args.listen)
    except ConfigError as exc:
        print(f"edgetds relay: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )

    async def main() -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            stop = trio.Event()
            async with trio.open_nursery() as nursery:

                async def run_server(task_status: trio.TaskStatus[RunningRelay]) -> None:
                    try:
                        await serve_relay(
                            config,
                            shutdown_trigger=stop.wait,
                            grace_s=args.grace,
                            task_status=task_status,
                        )
                    finally:
                        nursery.cancel_scope.cancel()  # served and drained: stop listening

                running: RunningRelay = await nursery.start(run_server)
                print(f"relay listening on {running.http_url}", flush=True)
                async for _ in signals:
                    if stop.is_set():
                        nursery.cancel_scope.cancel()  # second signal: exit at once
                        return
                    stop.set()

    try:
        trio.run(main)
    except BaseException as exc:  # noqa: BLE001 - unwrap trio's exception groups for the user
        problem = _find(exc, (ConfigError, OSError))
        if isinstance(problem, ConfigError):
            print(f"edgetds relay: {problem}", file=sys.stderr)
            return 2
        if isinstance(problem, OSError):
            print(f"edgetds relay: cannot serve on {config.listen}: {problem}", file=sys.stderr)
            return 1
        raise
    return 0


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
