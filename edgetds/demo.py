"""`edgetds demo`: the whole stack on 127.0.0.1 as real processes, and a scripted story.

The newcomer's first command (``make demo``), and a smoke test: it exits 0 only when every step of
the story went as the script expects. The parts are started as ``edgetds`` subprocesses
(edgetds/_demo_stack.py), the story talks to the relay's HTTP API (edgetds/_demo_story.py).
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

# cheap (standard library only): safe to import when the CLI builds its parsers
from edgetds._demo_output import Output, self_command, show_path
from edgetds._demo_stack import (
    CONNECTOR_ID,
    TUNNEL,
    DemoError,
    Layout,
    Part,
    PartGroup,
    prepare_state,
    write_connector_config,
    write_relay_config,
)

if TYPE_CHECKING:
    from edgetds.devidp import DevIdP

__all__ = ["register", "run"]

DEFAULT_STATE_DIR = Path(".demo")

DESCRIPTION = """\
Start every part of edgetds on 127.0.0.1 as real processes, then tell a short story through the
relay's HTTP API, exactly as an app would:

  tdslite    a TDS server backed by SQLite standing in for SQL Server, with the sample database
             and two logins: 'reader' (read-only) and 'writer' (read-write)
  dev IdP    an OIDC issuer with real keys that mints the users' tokens
  relay      the self-hosted Python relay (the HTTP API; connectors dial in to it)
  connector  dials OUT to the relay, verifies every user's token itself, maps it to a role by
             policy (group 'analysts' -> read-only login, 'admins' -> read-write login) and
             appends a hash-chained audit line per query

The story:
  1. alice (analysts) runs a SELECT with parameters: rows come back; then asks who SQL Server
     thinks she is: the read-only login 'reader', with 'alice' in SESSION_CONTEXT
  2. alice tries a DELETE: refused by policy (403 policy.not_read_only); tdslite's statement log
     shows it never reached the database
  3. bob (admins) runs an UPDATE (1 row affected), then a SELECT shows the change; then he moves
     2 units from one order to another in one transaction (POST .../transaction) whose second
     UPDATE fails: nothing of it stays, as a SELECT after it shows
  4. mallory sends an expired token: 401 auth.expired, refused at the relay
  5. carol (no group) is denied: 403 policy.denied
  6. the audit lines of these queries, and their hash chain verified

The exit status is 0 only when every step went as written (so the demo doubles as a smoke test).
Every process it started is stopped on exit, on Ctrl-C and on failure.
"""

EPILOG = """\
files (in the state directory, .demo/ unless --state-dir; recreated on every run except idp/):
  idp/                   the dev IdP's signing keys (kept, so `edgetds dev-idp token` keeps working)
  keys/                  relay.key/.pub and conn-1.key/.pub (Ed25519, new on every run)
  relay.toml             the relay's config
  connector.toml         the connector's config; policy.toml its policy; secrets/ its DB passwords
  tdslite-users.toml     tdslite's logins; demo.sqlite its database
  statements.jsonl       every statement tdslite ran (no parameter values)
  audit.jsonl            the connector's audit log (edgetds audit verify .demo/audit.jsonl)
  logs/NAME.log          each part's log (stderr); logs/NAME.out its stdout (the address line)
  pids                   'NAME PID' of every process the demo started

examples:
  edgetds demo                    # start, tell the story, stop everything; exit 0 if all went well
  edgetds demo --serve            # ... then keep the stack up and print a curl command to poke it
  edgetds dev-idp token --sub dave --groups analysts    # a token for the running --serve stack
"""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run tdslite + dev IdP + relay + connector locally and tell a short story",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--serve",
        action="store_true",
        help="after the story, keep the stack up until Ctrl-C and print how to query it",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=DEFAULT_STATE_DIR,
        help="where keys, configs, the database and logs go (default: %(default)s)",
    )
    parser.add_argument(
        "--start-timeout",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="how long each part may take to start (default: %(default)s)",
    )
    parser.set_defaults(func=run)


class _Stop(Exception):
    """SIGTERM/SIGHUP: stop like Ctrl-C does."""


def _on_signal(signum: int, frame: FrameType | None) -> None:
    raise _Stop(signal.Signals(signum).name)


@dataclass(frozen=True)
class Stack:
    """The running parts' addresses, and the dev IdP's keys to mint tokens with."""

    relay_url: str
    issuer: str
    db_address: str
    idp: DevIdP


def run(args: argparse.Namespace) -> int:
    out = Output()
    layout = Layout(args.state_dir.absolute())
    group = PartGroup(layout)
    previous = {s: signal.signal(s, _on_signal) for s in (signal.SIGTERM, signal.SIGHUP)}
    progress: dict[str, bool] = {"story_ok": False}
    try:
        code = _run(args, layout, group, out, progress)
    except DemoError as exc:
        out.say()
        out.say(f"edgetds demo: {exc}")
        code = 1
    except (KeyboardInterrupt, _Stop) as exc:
        why = "Ctrl-C" if isinstance(exc, KeyboardInterrupt) else str(exc)
        out.say()
        out.say(f"edgetds demo: stopping ({why})")
        # --serve ends with Ctrl-C by design: that is success when the story went well
        code = 0 if args.serve and progress["story_ok"] else 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip cleanup
        for signum in previous:
            signal.signal(signum, signal.SIG_IGN)
        if group.parts:
            out.partial(f"stopping {len(group.parts)} processes ... ")
            notes = group.stop_all()
            out.say("done" if not notes else "done, but:")
            for note in notes:
                out.say(note, indent=2)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return code


def _run(
    args: argparse.Namespace,
    layout: Layout,
    group: PartGroup,
    out: Output,
    progress: dict[str, bool],
) -> int:
    from edgetds._demo_story import DemoClient, Story

    out.title("edgetds demo: the whole stack on 127.0.0.1, then a short story")
    out.say(f"state directory: {show_path(layout.root)} (see `edgetds demo --help` for its layout)")
    prepare_state(layout)
    stack = _start(group, layout, out, timeout_s=args.start_timeout)
    client = DemoClient(stack.relay_url, tunnel=TUNNEL)
    try:
        story = Story(client, stack.idp, layout, out)
        ok = story.run()
        out.heading("the end")
        if ok:
            out.say("every step went as the script says.", indent=2)
        else:
            out.say("the story did NOT go as written:", indent=2)
            for failure in story.failures:
                out.say(f"- step {failure}", indent=4)
            out.say(f"logs: {show_path(layout.logs_dir)}", indent=2)
            return 1
        progress["story_ok"] = True
        if args.serve:
            _serve(group, layout, stack, out)
        return 0
    finally:
        client.close()


def _start(group: PartGroup, layout: Layout, out: Output, *, timeout_s: float) -> Stack:
    """Start the four parts in dependency order; the connector is up when the relay says so."""
    from edgetds.devidp import DevIdP
    from identity.keys import generate_key_files

    relay_key = generate_key_files(layout.keys_dir, "relay")
    connector_key = generate_key_files(layout.keys_dir, CONNECTOR_ID)
    out.say()
    tdslite = group.start(
        "tdslite",
        "tdslite",
        [
            "tdslite",
            "serve",
            "--port",
            "0",
            "--db",
            str(layout.database),
            "--users",
            str(layout.users_file),
            "--seed",
            "sample",
            "--statement-log",
            str(layout.statement_log),
        ],
    )
    idp_part = group.start(
        "idp", "the dev IdP", ["dev-idp", "serve", "--port", "0", "--key-dir", str(layout.idp_dir)]
    )

    def wait(part: Part, prefix: str, what: str) -> str:
        out.partial(_starting(what))
        try:
            address = part.wait_for_line(prefix, timeout_s=timeout_s)
        except DemoError:
            out.say("FAILED")
            raise
        out.say(f"ok ({address})")
        return address

    db_address = wait(
        tdslite, "tdslite listening on ", "tdslite (SQL Server stand-in, sample data)"
    )
    issuer = wait(idp_part, "dev IdP issuer: ", "the dev IdP (OIDC issuer)")
    write_relay_config(layout, issuer=issuer, connector_public_key=connector_key.public_key)
    relay = group.start(
        "relay",
        "the relay",
        ["relay", "serve", "--config", str(layout.relay_config), "--grace", "2"],
    )
    relay_url = wait(relay, "relay listening on ", "the relay")
    write_connector_config(
        layout,
        relay_url="ws://" + relay_url.split("://", 1)[1],
        relay_public_key=relay_key.public_key,
        issuer=issuer,
        db_port=int(db_address.rsplit(":", 1)[1]),
    )
    connector = group.start(
        "connector", "the connector", ["connector", "run", "--config", str(layout.connector_config)]
    )
    idp = DevIdP.from_key_dir(layout.idp_dir)
    out.partial(_starting(f"the connector {CONNECTOR_ID} (dials out to the relay)"))
    try:
        status = _wait_connected(relay_url, idp, connector, TUNNEL, timeout_s=timeout_s)
    except DemoError:
        out.say("FAILED")
        raise
    out.say(f"ok (tunnel '{TUNNEL}' is served: {status['connections']} connection(s))")
    return Stack(relay_url=relay_url, issuer=issuer, db_address=db_address, idp=idp)


def _starting(what: str) -> str:
    return f"  starting {what} ".ljust(60, ".") + " "


def _wait_connected(
    relay_url: str, idp: DevIdP, connector: Part, tunnel: str, *, timeout_s: float
) -> dict[str, Any]:
    """Poll GET /v1/tunnels/{tunnel}/status until the relay has a connector serving it."""
    import httpx

    from edgetds._demo_story import DemoClient

    client = DemoClient(relay_url, tunnel=tunnel, timeout_s=5)
    token = idp.mint(sub="demo-probe", groups=[], expires_in=int(timeout_s) + 60)
    deadline = time.monotonic() + timeout_s
    last = "no answer yet"
    try:
        while True:
            if connector.process.poll() is not None:
                raise DemoError(
                    f"the connector exited with status {connector.process.returncode}; its log: "
                    f"{connector.log_path}{connector.log_tail()}"
                )
            try:
                status = client.status(token)
            except (httpx.HTTPError, ValueError) as exc:
                last = str(exc)
            else:
                if status.get("connectors", 0) >= 1:
                    return status
                last = f"status {status}"
            if time.monotonic() > deadline:
                raise DemoError(
                    f"the connector did not reach the relay within {timeout_s:.0f} s ({last}); "
                    f"its log: {connector.log_path}{connector.log_tail()}"
                )
            time.sleep(0.1)
    finally:
        client.close()


def _serve(group: PartGroup, layout: Layout, stack: Stack, out: Output) -> None:
    """Print how to poke the running stack, then wait for Ctrl-C (or a part dying)."""
    import json

    relay_url = stack.relay_url
    token = stack.idp.mint(sub="alice", groups=["analysts"], expires_in=3600)
    body = json.dumps(
        {
            "sql": "SELECT TOP 5 name, region FROM customers WHERE region = @region ORDER BY name",
            "params": {"region": "west"},
        }
    )
    key_dir = "" if layout.idp_dir == DEFAULT_STATE_DIR.absolute() / "idp" else layout.idp_dir
    mint = f"{self_command()} dev-idp token" + (
        f" --key-dir {show_path(key_dir)}" if key_dir else ""
    )
    out.heading("the stack stays up until Ctrl-C")
    out.say(f"relay:      {relay_url}   (tunnel 'demo', HTTP API in SPEC.md)", indent=2)
    out.say("a token for alice (analysts), valid for an hour:", indent=2)
    out.say(f"TOKEN={token}", indent=4)
    out.say("query (NDJSON comes back):", indent=2)
    out.say(
        "curl -sN -H \"Authorization: Bearer $TOKEN\" -H 'content-type: application/json' "
        f"-d '{body}' {relay_url}/v1/tunnels/demo/query",
        indent=4,
    )
    out.say("mint more tokens:", indent=2)
    out.say(
        f"TOKEN=$({mint} --sub bob --groups admins [--aud edgetds] [--expires-in 300])", indent=4
    )
    out.say(f"audit log:       {show_path(layout.audit_log)}", indent=2)
    out.say(
        f"  check it:      {self_command()} audit verify {show_path(layout.audit_log)}", indent=2
    )
    out.say(
        f"statement log:   {show_path(layout.statement_log)} (what tdslite really ran)", indent=2
    )
    out.say(f"logs:            {show_path(layout.logs_dir)}/", indent=2)
    out.say("press Ctrl-C to stop everything", indent=2)
    while True:
        dead = group.dead()
        if dead:
            part = dead[0]
            raise DemoError(
                f"{part.label} stopped (status {part.process.returncode}) while serving; its "
                f"log: {part.log_path}{part.log_tail()}"
            )
        time.sleep(0.25)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run(argparse.Namespace(serve=False, state_dir=DEFAULT_STATE_DIR, start_timeout=30.0)))
