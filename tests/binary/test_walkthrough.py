"""README "Run it in production", followed top to bottom with the single binary.

The section's shell blocks marked ``<!-- walkthrough: NAME -->`` (an HTML comment right before
the block, invisible once rendered) run as written, with bash in a checkout of the repository on
the connector's host (a temporary directory with the repository's dist/ and examples/), in the
order of :data:`BLOCKS`; step 2 once by enrolment (``relay-enroll`` in the relay operator's
directory, its token copied to the connector's host, ``enrol``), once by hand
(``keys-by-hand``). A marked block that disappears, a command that fails as written, and a
step the test had to guess all fail the test. The section installs and runs the shipped
examples/connector.toml, examples/policy.toml and examples/systemd/edgetds-connector.service; the
relay runs examples/relay.toml.

What the test changes, and nothing else:

- The host's paths, in the commands and in the files they install (the config, the unit):
  :data:`PATHS` maps each to a variable naming a temporary directory (``/etc/edgetds`` ->
  ``$EDGETDS_ETC``, ...).
- Your relay, IdP and SQL Server: a Python relay (``edgetds relay serve`` of the binary with
  examples/relay.toml, enrolment on, or the connector registered by hand the way step 2 says),
  the dev IdP, and tdslite with the logins of examples/sql/create-logins.sql. The config
  block's ``# edit`` comment names the keys a reader edits; the test edits exactly those
  (:data:`EDITS`) to point at them. ``$TOKEN`` is a dev-IdP token, the query's relay URL the
  Python relay's, and the fixed ops port a free one.
- The commands a test cannot run on a shared machine (:data:`STAND_INS`): ``make binary`` (the
  session's binary fixture runs the same build), ``useradd``/``chown`` (the test runs as itself),
  ``systemctl enable --now`` (the installed unit's ExecStartPre and ExecStart, started as systemd
  does: its StateDirectory, a clean environment, ``$NOTIFY_SOCKET``, started once READY=1
  arrives) and ``journalctl -f`` (the connector's stderr, which the unit sends to the journal).
  ``systemctl stop`` is SIGTERM: STOPPING=1 and exit 0.
"""

from __future__ import annotations

import json
import re
import shlex
import signal
import socket
import subprocess
import tomllib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

import tdslite
from edgetds.devidp import DevIdP, open_dev_idp
from tests.support.binary import BUILD_TIMEOUT_S, ROOT
from tests.support.processes import bash, first_line, kill_group
from tests.support.waiting import eventually

README = ROOT / "README.md"
SECTION = "## Run it in production"
#: The marked blocks, in the order a reader meets them.
BLOCKS = (
    "binary",
    "relay-enroll",
    "enrol",
    "keys-by-hand",
    "config",
    "check",
    "systemd",
    "query",
    "ready",
)
_MARKED = re.compile(r"<!-- walkthrough: ([\w-]+) -->\n\n((?:(?:    .*)?\n)+)")

#: The host paths of the section -> the variable naming the test's temporary directory.
PATHS = {
    "/etc/systemd/system": "EDGETDS_UNITS",
    "/etc/edgetds": "EDGETDS_ETC",
    "/var/lib/edgetds": "EDGETDS_STATE",
    "/usr/local/bin": "EDGETDS_BIN",
}
#: Addresses of the reader's own systems -> the test's (variables set per run).
ADDRESSES = {
    "https://relay.example.com": "$EDGETDS_RELAY_URL",
    "127.0.0.1:9464": "127.0.0.1:$EDGETDS_OPS_PORT",
}

#: Commands a test cannot run as written: regex of the command -> what runs instead ("" = the
#: rest of the line as written; a name = the test's step of that name), and why.
STAND_INS: dict[str, tuple[str, str]] = {
    r"^make binary\b.*$": (":", "the session's binary fixture ran the same PyInstaller build"),
    r"^useradd --system .* edgetds$": (":", "the test runs the service as its own user"),
    r"^chown -R edgetds:edgetds \S+ && ": ("", "files stay the test user's; the chmod runs"),
    r"^systemctl daemon-reload && systemctl enable --now edgetds-connector$": (
        "start_unit",
        "the installed unit's ExecStartPre and ExecStart, started as systemd does",
    ),
    r"^journalctl -u edgetds-connector -f\b.*$": (
        "follow_journal",
        "the connector's stderr, which the unit sends to the journal",
    ),
}

#: The keys a reader edits in the installed connector.toml (the config block's `# edit` comment
#: names every one): (table, key) -> what the test's systems need. Enrolment sets the relay's URL
#: and key; registered by hand, step 2's text names them and the test sets them.
EDITS: dict[tuple[str, str], str] = {
    ("database", "host"): "db_host",
    ("database", "port"): "db_port",
    ("database", "database"): "database",
    ("issuers", "issuer"): "issuer",
    ("issuers", "audience"): "audience",
}

#: The logins of examples/sql/create-logins.sql, in tdslite (the passwords typed at the prompts).
#: tdslite's users file beside create-logins.sql: the logins step 3 makes, with their passwords
TDS_USERS = ROOT / "examples" / "sql" / "tdslite-users.toml"
PASSWORDS = {
    user: entry["password"] for user, entry in tomllib.loads(TDS_USERS.read_text())["users"].items()
}
UNIT = "edgetds-connector.service"


def production_section(text: str) -> str:
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    return text[start : end if end != -1 else len(text)]


def marked_blocks(text: str) -> dict[str, list[str]]:
    """name -> the block's commands (indentation removed, `\\` continuations joined)."""
    blocks: dict[str, list[str]] = {}
    for name, body in _MARKED.findall(production_section(text)):
        assert name not in blocks, f"two README blocks are marked {name!r}"
        joined = re.sub(r"\\\n\s*", "", "\n".join(line[4:] for line in body.splitlines()))
        blocks[name] = [line for line in joined.splitlines() if line.strip()]
    return blocks


def localise(text: str, env: dict[str, str]) -> str:
    """The section's host paths and addresses -> the test's (values, for files and argv)."""
    for path, variable in PATHS.items():
        text = text.replace(path, env[variable])
    for address, replacement in ADDRESSES.items():
        text = text.replace(address, re.sub(r"\$(\w+)", lambda m: env[m[1]], replacement))
    return text


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def set_key(text: str, table: str, key: str, value: Any) -> str:
    """``key = value`` (TOML) in the first ``[table]`` / ``[[table]]`` of ``text``."""
    lines = text.splitlines(keepends=True)
    current = None
    for i, line in enumerate(lines):
        bare = line.split("#", 1)[0].strip()
        if bare.startswith("["):
            current = bare.strip("[]")
        elif current == table and re.match(rf"{re.escape(key)}\s*=", bare):
            lines[i] = f"{key} = {json.dumps(value)}\n"
            return "".join(lines)
    raise AssertionError(f"[{table}] {key} is not in the installed connector.toml")


@dataclass
class Walk:
    """One walk through the section: the temporary host, the stand-in systems, what ran."""

    tmp: Path
    binary: Path
    checkout: Path  # the connector host's checkout of the repository, where the blocks run
    env: dict[str, str] = field(default_factory=dict)
    used: set[str] = field(default_factory=set)
    outputs: dict[str, str] = field(default_factory=dict)
    unit_process: trio.Process | None = None
    notify: trio.socket.SocketType | None = None
    journal_file: Path | None = None

    async def run(
        self, name: str, commands: list[str], *, stdin: bytes = b"", cwd: Path | None = None
    ) -> str:
        """Run one block's commands (in the checkout, or ``cwd``); a Python stand-in step runs
        where its command stood."""
        script: list[str] = []
        output = ""
        for command in commands:
            step = None
            for pattern, (replacement, _why) in STAND_INS.items():
                if re.search(pattern, command):
                    self.used.add(pattern)
                    if replacement in ("start_unit", "follow_journal"):
                        step = replacement
                    else:
                        command = re.sub(pattern, replacement, command)
            if step is None:
                script.append(command)
                continue
            output += await self._shell(name, script, stdin, cwd or self.checkout)
            script, stdin = [], b""
            await getattr(self, step)()
        output += await self._shell(name, script, stdin, cwd or self.checkout)
        self.outputs[name] = output
        return output

    async def _shell(self, name: str, script: list[str], stdin: bytes, cwd: Path) -> str:
        if not script:
            return ""
        text = "\n".join(script)
        for path, variable in PATHS.items():
            text = text.replace(path, f"${variable}")
        for address, replacement in ADDRESSES.items():
            text = text.replace(address, replacement)
        done = await bash(text, env=self.env, cwd=cwd, stdin=stdin)
        out, err = done.stdout.decode(), done.stderr.decode()
        assert done.returncode == 0, (
            f"README block {name!r} failed (exit {done.returncode}) as written:\n{text}\n"
            f"--- stdout\n{out[-3000:]}\n--- stderr\n{err[-3000:]}"
        )
        return out

    async def start_unit(self) -> None:
        """`systemctl enable --now`: the installed unit, as systemd starts it."""
        unit = (Path(self.env["EDGETDS_UNITS"]) / UNIT).read_text()
        settings: dict[str, list[str]] = {}
        for line in unit.splitlines():
            if "=" in line and not line.startswith(("#", "[")):
                key, value = line.split("=", 1)
                settings.setdefault(key.strip(), []).append(value.strip())
        assert settings["Type"] == ["notify"]
        assert settings["StateDirectory"] == ["edgetds"]  # = /var/lib/edgetds
        state = trio.Path(self.env["EDGETDS_STATE"])
        await state.mkdir(mode=int(settings["StateDirectoryMode"][0], 8), exist_ok=True)
        self.notify = trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        await self.notify.bind(str(self.tmp / "notify"))
        # PrivateTmp=yes: the unit's own /tmp, where the onefile launcher unpacks itself
        assert settings["PrivateTmp"] == ["yes"]
        private_tmp = self.tmp / "unit-tmp"
        private_tmp.mkdir()
        service_env = {
            "PATH": "/usr/bin:/bin",
            "NOTIFY_SOCKET": str(self.tmp / "notify"),
            "TMPDIR": str(private_tmp),
        }
        (pre,) = settings["ExecStartPre"]
        with trio.fail_after(60):
            check = await trio.run_process(
                shlex.split(localise(pre, self.env)),
                capture_stdout=True,
                capture_stderr=True,
                check=False,
                env=service_env,
            )
        assert check.returncode == 0, f"ExecStartPre failed:\n{check.stderr.decode()}"
        (start,) = settings["ExecStart"]
        self.journal_file = self.tmp / "journal.log"
        with self.journal_file.open("wb") as log:
            self.unit_process = await trio.lowlevel.open_process(
                shlex.split(localise(start, self.env)),
                stdout=log,
                stderr=subprocess.STDOUT,
                env=service_env,
                start_new_session=True,  # the unit's cgroup: launcher and child
            )
        with trio.fail_after(60):
            await self.notified("READY=1")

    async def follow_journal(self) -> None:
        """`journalctl -f`: the unit's output (checked once the walk ends)."""
        assert self.journal_file is not None

    async def notified(self, line: str) -> None:
        """Until the service sends ``line`` on $NOTIFY_SOCKET (STATUS= updates may come first)."""
        assert self.notify is not None
        while line not in (await self.notify.recv(4096)).decode().splitlines():
            pass

    async def stop_unit(self) -> int:
        """`systemctl stop`: SIGTERM, then STOPPING=1; returns the exit code."""
        assert self.unit_process is not None
        assert self.notify is not None
        self.unit_process.send_signal(signal.SIGTERM)
        with trio.fail_after(45):
            await self.notified("STOPPING=1")
            return await self.unit_process.wait()


@dataclass
class Relay:
    """The Python relay of the walk (the binary's ``relay serve``)."""

    directory: Path  # where its operator works: relay.toml, keys/
    url: str  # http://127.0.0.1:PORT
    public_key: str  # keys/relay.pub


@asynccontextmanager
async def python_relay(walk: Walk, idp: DevIdP, tunnel_table: str) -> AsyncIterator[Relay]:
    """examples/relay.toml with ``tunnel_table`` for its tunnel, enrolment on (``enrollment_file``
    and ``public_url``, as README step 2 says), the dev IdP as its issuer; the binary serves it."""
    relay_dir = walk.tmp / "relay"
    keygen = [str(walk.binary), "keygen", "--out", str(relay_dir / "keys"), "--name", "relay"]
    with trio.fail_after(60):
        await trio.run_process(keygen, capture_stdout=True, env=walk.env)
    url = f"http://127.0.0.1:{_free_port()}"
    text = (ROOT / "examples" / "relay.toml").read_text()
    text = re.sub(r"(?m)^\[tunnels\.\w+\]\nconnectors = .*$", lambda _: tunnel_table, text)
    text = set_key(text, "relay", "listen", url.removeprefix("http://"))
    text = set_key(text, "relay", "public_url", url)
    text = set_key(text, "relay", "enrollment_file", "enrolled.json")
    text = set_key(text, "issuers", "issuer", idp.issuer)
    (relay_dir / "relay.toml").write_text(text)
    with (walk.tmp / "relay.log").open("wb") as log:
        process = await trio.lowlevel.open_process(
            [str(walk.binary), "relay", "serve", "--config", str(relay_dir / "relay.toml")],
            stdout=subprocess.PIPE,
            stderr=log,
            env=walk.env,
            start_new_session=True,  # the onefile launcher and its child: killed together
        )
    try:
        with trio.fail_after(60):
            line = await first_line(process)
        assert line == f"relay listening on {url}", line
        public_key = (relay_dir / "keys" / "relay.pub").read_text().strip()
        yield Relay(relay_dir, url, public_key)
    finally:
        await kill_group(process)


def _ndjson(text: str) -> list[Any]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _prose(section: str, heading: str) -> str:
    """The text of the ``####`` subsection ``heading`` of ``section``."""
    start = section.index(f"#### {heading}\n")
    end = re.search(r"\n###", section[start + 5 :])
    assert end is not None, heading
    return section[start : start + 5 + end.start()]


@asynccontextmanager
async def registered(
    walk: Walk, idp: DevIdP, section: str, blocks: dict[str, list[str]], *, by_hand: bool
) -> AsyncIterator[Relay]:
    """Step 2 one way or the other, with the relay running; yields the relay."""
    if by_hand:
        await walk.run("keys-by-hand", blocks["keys-by-hand"])
        prose = _prose(section, "Or register the keys by hand")
        found = re.search(
            r'`(\[tunnels\.\w+\] connectors = \{ "conn-1" = "ed25519:\.\.\." \})`', prose
        )
        assert found is not None, "step 2 no longer says how relay.toml registers conn-1"
        pub = Path(walk.env["EDGETDS_ETC"]) / "conn-1.pub"
        assert pub.exists(), "step 2 made no conn-1.pub in /etc/edgetds to register at the relay"
        table = found[1].replace('"ed25519:..."', json.dumps(pub.read_text().strip()))
        async with python_relay(walk, idp, table.replace("] ", "]\n", 1)) as relay:
            # what the prose says to set in connector.toml by hand
            edits = {"relay_public_keys": [relay.public_key], "relay_urls": [_ws(relay.url)]}
            config = Path(walk.env["EDGETDS_ETC"]) / "connector.toml"
            text = config.read_text()
            for key, value in edits.items():
                assert f"`{key}" in prose, f"step 2 by hand does not say to set {key}"
                text = set_key(text, "connector", key, value)
            config.write_text(text)
            yield relay
        return
    tunnel = re.search(r"--tunnel (\w+)", " ".join(blocks["relay-enroll"]))
    assert tunnel is not None, blocks["relay-enroll"]
    async with python_relay(walk, idp, f"[tunnels.{tunnel[1]}]\nconnectors = {{}}") as relay:
        # where the relay's key is: its operator's directory
        await walk.run("relay-enroll", blocks["relay-enroll"], cwd=relay.directory)
        tokens = list(relay.directory.glob("*.token"))
        assert len(tokens) == 1, tokens
        (walk.checkout / tokens[0].name).write_bytes(tokens[0].read_bytes())  # "copy it"
        await walk.run("enrol", blocks["enrol"])
        assert not (walk.checkout / tokens[0].name).exists(), "the used token stays behind"
        yield relay


def _ws(url: str) -> str:
    return "ws://" + url.removeprefix("http://")


async def walk_the_section(binary: Path, tmp_path: Path, readme: str, *, by_hand: bool) -> Walk:
    """The marked blocks of ``readme``'s production section, in order, against the stand-ins;
    step 2 by enrolment or ``by_hand``."""
    blocks = marked_blocks(readme)
    assert list(blocks) == list(BLOCKS), f"marked README blocks: {list(blocks)}"
    section = production_section(readme)
    walk = Walk(tmp_path, binary, tmp_path / "checkout")
    # a checkout of the repository on the connector's host: its dist/ and examples/
    walk.checkout.mkdir()
    for name in ("dist", "examples"):
        (walk.checkout / name).symlink_to(ROOT / name)
    for path, variable in PATHS.items():
        walk.env[variable] = str(tmp_path / path.strip("/").replace("/", "-"))
    (tmp_path / "usr-local-bin").mkdir()
    (tmp_path / "etc-systemd-system").mkdir()
    (tmp_path / "tmp").mkdir()
    walk.env |= {
        "PATH": f"{walk.env['EDGETDS_BIN']}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "TMPDIR": str(
            tmp_path / "tmp"
        ),  # the relay is killed at the end: its unpacked copy stays here
        "EDGETDS_OPS_PORT": str(_free_port()),
    }
    users = tmp_path / "tds-users.toml"
    users.write_bytes(TDS_USERS.read_bytes())
    async with (
        open_dev_idp(key_dir=tmp_path / "idp") as idp,
        tdslite.open_server(users=users) as tds,
    ):
        token = idp.mint(sub="alice", groups=["analysts"])
        walk.env["TOKEN"] = token
        version = await walk.run("binary", blocks["binary"])
        assert version.strip() == "edgetds 0.1.0", version
        async with registered(walk, idp, section, blocks, by_hand=by_hand) as relay:
            walk.env["EDGETDS_RELAY_URL"] = relay.url
            passwords = "".join(f"{pw}\n" for pw in PASSWORDS.values()).encode()
            await walk.run("config", blocks["config"], stdin=passwords)
            edit_comment = " ".join(c for c in blocks["config"] if c.lstrip().startswith("#"))
            values = {
                "db_host": "127.0.0.1",
                "db_port": tds.port,
                "database": tds.engine.database,
                "issuer": idp.issuer,
                "audience": "edgetds",
            }
            config = Path(walk.env["EDGETDS_ETC"]) / "connector.toml"
            text = localise(config.read_text(), walk.env)
            for (table, key), what in EDITS.items():
                assert key in edit_comment, f"the config block does not say to edit [{table}] {key}"
                text = set_key(text, table, key, values[what])
            config.write_text(text)
            checked = await walk.run("check", blocks["check"])
            assert "ok: connector 'conn-1' for tunnel 'sales'" in checked, checked
            assert "role analyst: MATCH via groups" in checked, checked  # examples/policy.toml
            assert "all checks passed" in checked, checked
            try:
                await walk.run("systemd", blocks["systemd"])
                with trio.fail_after(60):
                    await eventually(lambda: _connected(relay.url, token))
                answer = _ndjson(await walk.run("query", blocks["query"]))
                ready = json.loads(await walk.run("ready", blocks["ready"]))
                code = await walk.stop_unit()
            finally:
                if walk.unit_process is not None:  # what systemd's KillMode ends with
                    await kill_group(walk.unit_process)
                if walk.notify is not None:
                    walk.notify.close()
    assert set(STAND_INS) == walk.used, (
        f"stand-ins for no README command: {set(STAND_INS) - walk.used}"
    )
    assert walk.journal_file is not None
    journal = walk.journal_file.read_text()
    assert answer[0]["columns"][0]["name"] == "one", answer
    assert answer[1] == [1], answer
    assert answer[-1]["done"]["rows"] == 1, answer
    assert ready["ready"] is True, ready
    assert code == 0, journal[-3000:]
    # a clean stop removes what the launcher unpacked (a SIGKILL would leave ~90 MB behind)
    assert list((tmp_path / "unit-tmp").iterdir()) == []
    assert token not in journal  # never a token in the journal
    return walk


async def _connected(relay_url: str, token: str) -> bool:
    """The relay lists the connector's connection (READY=1 goes out as READY leaves)."""
    async with httpx.AsyncClient(timeout=5) as client:
        response = await client.get(
            f"{relay_url}/v1/tunnels/sales/status", headers={"Authorization": f"Bearer {token}"}
        )
    return response.status_code == 200 and bool(response.json().get("connections"))


@pytest.mark.timeout(BUILD_TIMEOUT_S + 240)
@pytest.mark.parametrize("by_hand", [False, True], ids=["enrolment", "keys-by-hand"])
async def test_the_production_section_runs_top_to_bottom(
    binary: Path, tmp_path: Path, by_hand: bool
) -> None:
    walk = await walk_the_section(binary, tmp_path, README.read_text(), by_hand=by_hand)
    etc, state = Path(walk.env["EDGETDS_ETC"]), Path(walk.env["EDGETDS_STATE"])
    assert (state / "audit.jsonl").exists(), "the audit line of the query is in /var/lib/edgetds"
    key = etc / ("conn-1.key" if by_hand else "connector.key")
    assert key.stat().st_mode & 0o077 == 0


def test_every_marked_block_is_there() -> None:
    readme = README.read_text()
    assert list(marked_blocks(readme)) == list(BLOCKS)
    # a block whose marker went (or whose indentation broke) is noticed
    unmarked = readme.replace("<!-- walkthrough: systemd -->", "", 1)
    assert "systemd" not in marked_blocks(unmarked)
    # the commands, as the test runs them: continuations joined, no indentation
    (query,) = marked_blocks(readme)["query"]
    assert query.startswith('curl -s -H "Authorization: Bearer $TOKEN" -d ')
    assert query.split("#")[0].rstrip().endswith("https://relay.example.com/v1/tunnels/sales/query")
