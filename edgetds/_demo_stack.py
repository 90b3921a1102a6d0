"""The demo's stack: its state directory, the configuration files, and the processes it runs.

`edgetds demo` starts every part as a real subprocess of the ``edgetds`` command (tdslite, the dev
IdP, the relay, the connector), each in its own session so a Ctrl-C in the terminal reaches only
the demo, which then stops them in order (connector first, so it never logs a lost relay). Each
child also gets ``PR_SET_PDEATHSIG`` (Linux), so even a SIGKILLed demo leaves no orphan.

Why files rather than pipes for the children's output: a pipe nobody reads fills up and blocks
its writer, and reading it needs a thread (and threads make ``preexec_fn`` unsafe). Each part's
stdout goes to ``logs/NAME.out`` (its first line names its address, which we poll for) and its
stderr to ``logs/NAME.log``.

Ctrl-C (and SIGTERM/SIGHUP) are blocked while a part is forked and recorded: after ``fork()``
Python runs at-fork hooks in the parent (logging releases its locks there), and a
``KeyboardInterrupt`` raised inside such a hook is printed as "Exception ignored" and lost -- the
demo then carried on as if nobody had pressed Ctrl-C. Blocked, the signal waits until the new part
is in the group, so the stop that follows also stops it.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "DemoError",
    "Layout",
    "Part",
    "PartGroup",
    "edgetds_argv",
    "prepare_state",
]

#: The marker that says "this directory is a demo state directory, safe to wipe".
MARKER = "EDGETDS-DEMO-STATE"
TUNNEL = "demo"
CONNECTOR_ID = "conn-1"
AUDIENCE = "edgetds"

#: The demo's policy: analysts read through a read-only login, admins write through a read-write
#: one, anyone else is refused. Roles are tried in file order, least privileged first.
POLICY = """\
# The demo's policy (connector/policy.py documents every key).
# deny rules beat roles; roles are tried in file order, least privileged first.

[[deny]]
match = { groups = ["contractors"] }
reason = "contractors have no database access"

[roles.analyst]
match = { groups = ["analysts"] }
login = "reader"            # [logins.reader] in connector.toml: tdslite's read-only login
read_only = true            # only one plain SELECT, checked before anything reaches the database
allow_sql = true
max_rows = 10000
timeout_ms = 10000

[roles.analyst.queries.customer_orders]
sql = "SELECT o.id, o.status, o.amount FROM orders o WHERE o.customer_id = @customer_id"
params = { customer_id = "int" }

[roles.admin]
match = { groups = ["admins"] }
login = "writer"            # tdslite's read-write login
read_only = false
allow_sql = true
timeout_ms = 10000
"""

#: tdslite's logins; the passwords also go into files the connector reads (never into its TOML).
LOGINS = {"reader": ("read-only", "demo-reader-pw"), "writer": ("read-write", "demo-writer-pw")}


class DemoError(Exception):
    """The demo cannot go on; the message says which part failed and where its log is."""


@dataclass(frozen=True)
class Layout:
    """Where everything lives inside the state directory (see `edgetds demo --help`)."""

    root: Path

    @property
    def idp_dir(self) -> Path:
        return self.root / "idp"

    @property
    def keys_dir(self) -> Path:
        return self.root / "keys"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    @property
    def secrets_dir(self) -> Path:
        return self.root / "secrets"

    @property
    def database(self) -> Path:
        return self.root / "demo.sqlite"

    @property
    def users_file(self) -> Path:
        return self.root / "tdslite-users.toml"

    @property
    def statement_log(self) -> Path:
        return self.root / "statements.jsonl"

    @property
    def relay_config(self) -> Path:
        return self.root / "relay.toml"

    @property
    def connector_config(self) -> Path:
        return self.root / "connector.toml"

    @property
    def policy_file(self) -> Path:
        return self.root / "policy.toml"

    @property
    def audit_log(self) -> Path:
        return self.root / "audit.jsonl"

    @property
    def pids_file(self) -> Path:
        return self.root / "pids"


def prepare_state(layout: Layout) -> None:
    """Recreate the state directory, keeping ``idp/`` (so minted tokens stay valid).

    Raises:
        DemoError: the directory holds files the demo did not create (we never wipe those).
    """
    root = layout.root
    if root.exists():
        if not root.is_dir():
            raise DemoError(f"{root} exists and is not a directory; pass another --state-dir")
        entries = {p.name for p in root.iterdir()}
        if entries and MARKER not in entries and not entries <= {"idp"}:
            raise DemoError(
                f"{root} is not empty and was not made by `edgetds demo` (no {MARKER} file); "
                "pass an empty or new --state-dir, the demo wipes it on every run"
            )
        running = _running_parts(layout)
        if running:
            raise DemoError(
                f"another `edgetds demo` is using {root} ({', '.join(running)} still running); "
                "stop it (Ctrl-C in its terminal) or pass another --state-dir"
            )
        for entry in root.iterdir():
            if entry.name == "idp":
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    root.mkdir(parents=True, exist_ok=True)
    (root / MARKER).write_text(
        "Made by `edgetds demo`; everything here except idp/ is recreated on every run.\n"
    )
    for directory in (layout.logs_dir, layout.keys_dir, layout.secrets_dir):
        directory.mkdir(mode=0o700, exist_ok=True)
    users = []
    for login, (role, password) in LOGINS.items():
        users += [f"[users.{login}]", f"password = {json.dumps(password)}", f'role = "{role}"', ""]
        secret = layout.secrets_dir / f"{login}.password"
        fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(password + "\n")
    layout.users_file.write_text("# tdslite logins (tdslite/README.md)\n" + "\n".join(users))
    layout.policy_file.write_text(POLICY)


def _running_parts(layout: Layout) -> list[str]:
    """'NAME (pid N)' for each process in the pids file that still runs with this state dir."""
    try:
        words = layout.pids_file.read_text().split()
    except OSError:
        return []
    running = []
    for name, pid in zip(words[::2], words[1::2], strict=False):
        try:
            cmdline = Path(f"/proc/{int(pid)}/cmdline").read_bytes()
        except (OSError, ValueError):
            continue
        if os.fsencode(layout.root) in cmdline:
            running.append(f"{name} (pid {pid})")
    return running


def _q(value: str) -> str:
    return json.dumps(value)  # a TOML basic string is a JSON string for our values


def write_relay_config(layout: Layout, *, issuer: str, connector_public_key: str) -> None:
    """relay.toml: one tunnel served by conn-1, client tokens from the dev IdP."""
    layout.relay_config.write_text(
        "# The demo relay (examples/relay.toml documents every key).\n"
        "[relay]\n"
        'listen = "127.0.0.1:0"\n'
        'private_key_file = "keys/relay.key"\n\n'
        f"[tunnels.{TUNNEL}]\n"
        f"connectors = {{ {_q(CONNECTOR_ID)} = {_q(connector_public_key)} }}\n\n"
        "[[issuers]]\n"
        f"issuer = {_q(issuer)}\n"
        f"audience = {_q(AUDIENCE)}\n"
    )


def write_connector_config(
    layout: Layout, *, relay_url: str, relay_public_key: str, issuer: str, db_port: int
) -> None:
    """connector.toml: dial the relay, log in to tdslite, verify dev IdP tokens, audit."""
    lines = [
        "# The demo connector (connector/config.py documents every key).",
        "[connector]",
        f"id = {_q(CONNECTOR_ID)}",
        f"tunnel = {_q(TUNNEL)}",
        f"relay_urls = [{_q(relay_url)}]",
        'private_key_file = "keys/conn-1.key"',
        f"relay_public_keys = [{_q(relay_public_key)}]",
        "ha_connections = 2",
        "stagger_s = 0.2",
        "backoff_base_s = 0.1",
        "backoff_cap_s = 1.0",
        "drain_grace_s = 2",
        "",
        "[database]",
        'host = "127.0.0.1"',
        f"port = {db_port}",
        'database = "sample"  # tdslite names a --seed sample database "sample"',
        "login_timeout_s = 5",
    ]
    for login in LOGINS:
        lines += [
            "",
            f"[logins.{login}]",
            f"user = {_q(login)}",
            f'password_file = "secrets/{login}.password"',
            "pool_size = 4",
        ]
    lines += [
        "",
        "[[issuers]]",
        f"issuer = {_q(issuer)}",
        f"audience = {_q(AUDIENCE)}",
        "",
        "[policy]",
        'file = "policy.toml"',
        "",
        "[audit]",
        'file = "audit.jsonl"',
    ]
    layout.connector_config.write_text("\n".join(lines) + "\n")


def edgetds_argv() -> list[str]:
    """How to run this same ``edgetds`` (the venv's Python, or the single-file binary)."""
    if getattr(sys, "frozen", False):
        return [sys.executable]
    return [sys.executable, "-m", "edgetds"]


#: What stops the demo; blocked while a part is forked (see the module's docstring).
STOP_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM, signal.SIGHUP})


def _child_setup(parent: int) -> None:  # pragma: no cover - runs in the child before exec
    """Unblock the stop signals the parent blocked around the fork; on Linux, also ask the kernel
    to SIGTERM this child when the demo dies, even by SIGKILL."""
    if sys.platform == "linux":
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
        if os.getppid() != parent:  # the demo died before prctl: no signal will come
            os._exit(1)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


@dataclass
class Part:
    """One running part: its process, where its output goes, and the address it printed."""

    name: str
    label: str
    process: subprocess.Popen[bytes]
    out_path: Path
    log_path: Path
    address: str = ""

    def wait_for_line(self, prefix: str, *, timeout_s: float) -> str:
        """The rest of the first stdout line, which must start with ``prefix``.

        Raises:
            DemoError: the part exited, printed something else, or said nothing in time.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            text = self.out_path.read_text(errors="replace") if self.out_path.exists() else ""
            if "\n" in text:
                first = text.split("\n", 1)[0].strip()
                if first.startswith(prefix):
                    self.address = first[len(prefix) :].strip()
                    return self.address
                raise DemoError(
                    f"{self.label} printed {first!r} instead of {prefix!r}...; see {self.log_path}"
                )
            code = self.process.poll()
            if code is not None:
                raise DemoError(
                    f"{self.label} exited with status {code} before it was ready; its log: "
                    f"{self.log_path}{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise DemoError(
                    f"{self.label} did not print its address within {timeout_s:.0f} s; its log: "
                    f"{self.log_path}{self.log_tail()}"
                )
            time.sleep(0.02)

    def log_tail(self, lines: int = 8) -> str:
        """The last lines of the part's log, indented, to show with an error."""
        try:
            text = self.log_path.read_text(errors="replace").strip()
        except OSError:
            return ""
        if not text:
            return ""
        tail = text.splitlines()[-lines:]
        return "\n  last lines of the log:\n" + "\n".join(f"    {line}" for line in tail)


@dataclass
class PartGroup:
    """The processes the demo started; `stop_all` ends every one of them (also on errors)."""

    layout: Layout
    parts: list[Part] = field(default_factory=list)

    def start(self, name: str, label: str, args: Sequence[str]) -> Part:
        """Start ``edgetds ARGS`` as part ``name`` (output in logs/NAME.out and logs/NAME.log)."""
        out_path = self.layout.logs_dir / f"{name}.out"
        log_path = self.layout.logs_dir / f"{name}.log"
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            with out_path.open("wb") as out, log_path.open("wb") as log:
                process = subprocess.Popen(
                    [*edgetds_argv(), *args],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=log,
                    env=env,
                    start_new_session=True,
                    preexec_fn=functools.partial(_child_setup, os.getpid()),
                )
            part = Part(name, label, process, out_path, log_path)
            self.parts.append(part)
            self._write_pids()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # a pending Ctrl-C lands here
        return part

    def _write_pids(self) -> None:
        """Replace the pids file whole (a reader never sees it truncated or half written)."""
        lines = [f"{p.name} {p.process.pid}" for p in self.parts]
        pending = self.layout.pids_file.with_name("pids.new")
        pending.write_text("\n".join(lines) + "\n")
        os.replace(pending, self.layout.pids_file)

    def dead(self) -> list[Part]:
        """Parts whose process has exited."""
        return [p for p in self.parts if p.process.poll() is not None]

    def stop_all(self, *, grace_s: float = 5.0) -> list[str]:
        """SIGTERM every part (the connector first), SIGKILL what is still up after ``grace_s``.

        Returns:
            One line per part that had to be killed or had already died (empty: all clean).
        """
        notes: list[str] = []
        order = sorted(self.parts, key=lambda p: p.name != "connector")  # connector first
        for index, part in enumerate(order):
            if part.process.poll() is None:
                _signal(part, signal.SIGTERM)
            if index == 0 and part.name == "connector":
                notes += _reap(part, grace_s)  # it drains before the relay goes away
        for part in order:
            if part.process.returncode is None:
                notes += _reap(part, grace_s)
        return notes


def _signal(part: Part, signum: int) -> None:
    try:
        os.killpg(part.process.pid, signum)  # its own session: the whole group
    except ProcessLookupError:
        pass


def _reap(part: Part, grace_s: float) -> list[str]:
    try:
        part.process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        _signal(part, signal.SIGKILL)
        part.process.wait()
        return [f"{part.label} did not stop within {grace_s:.0f} s of SIGTERM; killed it"]
    return []
