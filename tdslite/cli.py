"""`edgetds tdslite serve`: run tdslite, the SQLite-backed TDS server, until SIGINT/SIGTERM.

The first line on stdout is ``tdslite listening on HOST:PORT`` (flushed), so scripts and tests can
start it with ``--port 0`` and read the port back. Logs go to stderr in the format of logsetup
(JSON lines, text on a terminal, --log-format), ``stopped`` (with the reason) last.
"""

from __future__ import annotations

import argparse
import signal
import sys
from typing import Any

from logsetup import add_log_options, log_stopped, setup_logging

#: The logger of `tdslite serve` (the server's own is "tdslite.server").
LOGGER = "tdslite"

EPILOG = """\
examples:
  # a throw-away server with the demo schema, on a free port
  edgetds tdslite serve --port 0 --db :memory: --users users.toml --seed sample

  # TLS (clients asking for encryption get TLS 1.2 inside PRELOGIN, as with SQL Server)
  edgetds tdslite serve --port 1433 --db demo.sqlite --users users.toml \\
      --tls-cert server.pem --tls-key server.key --statement-log statements.jsonl

  # accept Entra-style access tokens (python-tds access_token_callable)
  edgetds tdslite serve --port 1433 --db demo.sqlite --users users.toml \\
      --fedauth-issuer https://idp.example/ --fedauth-jwks https://idp.example/jwks.json \\
      --fedauth-audience api://tdslite --fedauth-login-claim preferred_username

  # accept Windows logins (windows = true in the users file) by NTLM and Kerberos
  edgetds tdslite serve --port 1433 --db demo.sqlite --users users.toml \\
      --ntlm-users ntlm.users --kerberos-keytab mssqlsvc.keytab

then, e.g.: tsql -H 127.0.0.1 -p PORT -U analyst -P secret
The users file format is in tdslite/README.md.
"""


def register(subparsers: Any) -> None:
    top = subparsers.add_parser(
        "tdslite",
        help="tdslite: a TDS (SQL Server protocol) server backed by SQLite, for tests and the demo",
        description="tdslite speaks TDS 7.4 like SQL Server and runs T-SQL on SQLite.",
    )
    sub = top.add_subparsers(title="commands", metavar="COMMAND")
    top.set_defaults(func=lambda _args: (top.print_help(sys.stderr), 2)[1])
    serve = sub.add_parser(
        "serve",
        help="run the server until Ctrl-C / SIGTERM",
        description="Run tdslite. Prints 'tdslite listening on HOST:PORT' first.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument("--port", type=int, required=True, help="TCP port (0: pick a free one)")
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default %(default)s)"
    )
    serve.add_argument("--db", required=True, help="SQLite database file, or :memory:")
    serve.add_argument("--users", required=True, help="users TOML file (logins, roles, grants)")
    serve.add_argument(
        "--seed", choices=["sample"], help="create the demo schema if the db is empty"
    )
    serve.add_argument("--tls-cert", help="PEM certificate chain: enables TLS (needs --tls-key)")
    serve.add_argument("--tls-key", help="PEM private key of --tls-cert")
    serve.add_argument("--statement-log", help="append one JSON line per statement to this file")
    serve.add_argument("--fedauth-issuer", help="accept access tokens from this issuer (iss)")
    serve.add_argument("--fedauth-jwks", help="JWKS of the issuer: a file or an http(s) URL")
    serve.add_argument("--fedauth-audience", help="required audience (aud) of access tokens")
    serve.add_argument(
        "--fedauth-login-claim",
        default="preferred_username",
        help="token claim whose value is the tdslite login (default %(default)s; e.g. oid, upn)",
    )
    serve.add_argument(
        "--ntlm-users",
        help="NTLM credentials file (DOMAIN:USER:PASSWORD lines) for Windows logins",
    )
    serve.add_argument(
        "--kerberos-keytab",
        help="keytab of the service principal (MSSQLSvc/HOST:PORT) for Kerberos logins",
    )
    add_log_options(serve)
    serve.add_argument(
        "--verbose",
        action="store_true",
        help="log every connection (the same as --log-level debug)",
    )
    serve.set_defaults(func=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    import trio

    from tdslite.server import FedAuthConfig, SspiConfig, open_server

    fedauth_args = (args.fedauth_issuer, args.fedauth_jwks, args.fedauth_audience)
    fedauth = None
    if any(fedauth_args):
        if not all(fedauth_args):
            print(
                "edgetds tdslite serve: --fedauth-issuer, --fedauth-jwks and --fedauth-audience "
                "go together; give all three",
                file=sys.stderr,
            )
            return 2
        fedauth = FedAuthConfig(
            issuer=args.fedauth_issuer,
            jwks=args.fedauth_jwks,
            audience=args.fedauth_audience,
            login_claim=args.fedauth_login_claim,
        )
    if bool(args.tls_cert) != bool(args.tls_key):
        print("edgetds tdslite serve: --tls-cert and --tls-key go together", file=sys.stderr)
        return 2

    sspi = None
    if args.ntlm_users or args.kerberos_keytab:
        sspi = SspiConfig(ntlm_users=args.ntlm_users, keytab=args.kerberos_keytab)

    setup_logging("debug" if args.verbose else args.log_level, args.log_format)
    reason = "served"

    async def main() -> None:
        nonlocal reason
        # the signal handler is in place before the address is printed: a parent that sends
        # SIGTERM as soon as it read the address stops the server cleanly
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            await serve(signals)

    async def serve(signals: Any) -> None:
        nonlocal reason
        async with open_server(
            db=args.db,
            users=args.users,
            host=args.host,
            port=args.port,
            seed=args.seed,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
            fedauth=fedauth,
            sspi=sspi,
            statement_log=args.statement_log,
        ) as server:
            print(f"tdslite listening on {server.address}", flush=True)
            async for signum in signals:
                reason = signal.Signals(signum).name
                break

    try:
        trio.run(main)
    except (OSError, ValueError) as exc:
        log_stopped(LOGGER, f"error: {exc}")
        return 1
    log_stopped(LOGGER, reason)
    return 0
