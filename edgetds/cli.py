"""The `edgetds` command line: one entry point, one subcommand module per area.

Each module named in SUBCOMMANDS exposes ``register(subparsers)``, which adds its subcommand(s)
and sets ``func`` (returning an exit code) on the parser it adds. Keep imports inside those
modules' handlers cheap: `edgetds --help` should start fast (it also runs in the single binary).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from edgetds import __version__

#: Modules that add subcommands, in the order they appear in `edgetds --help`.
SUBCOMMANDS: tuple[str, ...] = (
    "edgetds.demo",
    "edgetds.devidp",
    "tdslite.cli",
    "connector.audit_cli",
    "connector.cli",
    "relay.cli",
    "edgetds.loadtest.cli",
)

EPILOG = """\
Start here:
  edgetds demo                      the whole stack on 127.0.0.1 and a short scripted story
  edgetds demo --serve              the same, then keep it up to poke at (prints a curl line)

Run it for real:
  edgetds keygen --out keys --name conn-1          an Ed25519 key pair for a connector
  edgetds relay enroll --tunnel T --connector C --config relay.toml
                                                   or: a one-time enrolment token, then
  edgetds connector enroll --token-file F --out DIR
                                                   makes the key, registers it, writes the config
  edgetds connector check --config connector.toml  validate a config, every problem listed
  edgetds connector diag --config connector.toml   DNS, TCP, TLS, relay, IdP, SQL: first failure
  edgetds connector run --config connector.toml    dial out to the relay and serve queries
  edgetds relay serve --config relay.toml          the self-hosted relay

Every subcommand has its own --help with examples.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgetds",
        description=(
            "Query a SQL Server behind a firewall from Cloudflare Workers: the connector dials out "
            "to a relay, and every query carries the identity of the person who asked."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"edgetds {__version__}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    for name in SUBCOMMANDS:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    if getattr(sys, "frozen", False):
        # In the single binary, a worker process of the read-only check is this same executable
        # started by multiprocessing (spawn): freeze_support() runs the worker there and exits.
        # (Imported only here: `edgetds --version` from source need not pay for it.)
        import multiprocessing

        multiprocessing.freeze_support()
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(func(args))
    except KeyboardInterrupt:
        return 130
