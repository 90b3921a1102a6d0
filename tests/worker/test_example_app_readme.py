"""examples/worker-app as its README runs it: "Run it locally" followed as written, both ways.

1. workerd: the keys come from ``edgetds keygen`` as the README says, env.json is the README's
   JSON with those keys and the dev IdP's issuer filled in, and the relay Worker and the app run
   from ``npm run serve:worker -- --env env.json --app`` (the npm script of package.json, on the
   venv's Node after ``source .venv/bin/activate``).
2. wrangler dev: the relay Worker under ``wrangler dev`` from relay/worker/wrangler.toml (its
   bindings in an env file, as .dev.vars; tests/support/wrangler.py, for ``npm run dev:relay``
   in "terminal 1") and the app from
   ``npm run dev:app -- --port 8788``: the app's own wrangler.toml, its ``RELAY`` service binding
   connected through wrangler's dev registry.

Each way the database holds the README's schema (tdslite), a real connector serves the tunnel, and
the README's curl commands answer the signed-in user's rows, the same through Kysely, and a
committed transfer.

What the test changes: the ports (free ones, with the documented ``--address``/``--app-address``
and wrangler's ``--port``; ``--ip 127.0.0.1``, no inspector and no interactive session for
wrangler), env.json's location (a temporary directory), the IdP (the dev IdP) and ``$TOKEN`` (a
dev-IdP token: an analyst's for the reads, an admin's for the transfer).
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import trio

from connector.config import load_config
from connector.runtime import open_connector
from edgetds.devidp import DevIdP, open_dev_idp
from tdslite import open_server
from tests.support.connector_stack import write_connector_config
from tests.support.e2e_stack import TDSLITE_USERS, admin_batch, write_key
from tests.support.processes import bash, kill_group
from tests.support.waiting import eventually
from tests.support.worker_relay import ROOT
from tests.support.wrangler import open_wrangler_dev, wrangler_env

APP = ROOT / "examples" / "worker-app"
README = (APP / "README.md").read_text()
VENV_BIN = ROOT / ".venv" / "bin"
ALICES_ORDERS = [
    {"id": 1, "item": "book", "total": "12.5000"},
    {"id": 3, "item": "pen", "total": "1.2500"},
]


def fenced(readme: str, language: str) -> list[str]:
    """The bodies of the README's fenced blocks in ``language``, in order."""
    return re.findall(rf"```{language}\n(.*?)```", readme, re.DOTALL)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _commands(block: str) -> list[str]:
    """A shell block's commands, without comments or blank lines."""
    return [line for line in block.splitlines() if line.strip() and not line.startswith("#")]


async def _shell(command: str, env: dict[str, str], cwd: Path = ROOT) -> str:
    done = await bash(command, env=env, cwd=cwd)
    assert done.returncode == 0, f"{command}\n{done.stderr.decode()}"
    return str(done.stdout.decode())


@asynccontextmanager
async def foreground(command: str, env: dict[str, str], log: Path) -> AsyncIterator[trio.Process]:
    """A README command that runs in the foreground, until the block ends (then its whole
    process group, npm -> node -> workerd, is killed)."""
    with log.open("wb") as output:
        process = await trio.lowlevel.open_process(
            ["bash", "-euo", "pipefail", "-c", command],
            cwd=ROOT,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield process
    finally:
        await kill_group(process)


async def _answers(url: str, process: trio.Process, log: Path) -> bool:
    if process.returncode is not None:
        output = await trio.Path(log).read_text()
        raise AssertionError(f"the README's command exited:\n{output}")
    async with httpx.AsyncClient(timeout=2) as client:
        try:
            await client.get(url)
        except httpx.TransportError:
            return False
    return True


def _block(needle: str) -> str:
    """The README's sh block holding ``needle``."""
    return next(block for block in fenced(README, "sh") if needle in block)


def _with_flags(
    block: str, needle: str, replace: dict[str, str], flags: str, *, elsewhere: str = "\0"
) -> str:
    """The block's commands, the one holding ``needle`` with its comment dropped, ``replace``
    applied and ``flags`` appended; a command holding ``elsewhere`` is left out (the test runs
    it another way)."""
    lines = []
    for line in _commands(block):
        if elsewhere in line:
            continue
        if needle in line:
            line = line.split("#", 1)[0].strip()
            for old, new in replace.items():
                line = line.replace(old, new)
            line += flags
        lines.append(line)
    return "\n".join(lines)


@asynccontextmanager
async def database(tmp_path: Path) -> AsyncIterator[Any]:
    """tdslite with the README's schema."""
    (schema,) = fenced(README, "sql")
    users = tmp_path / "users.toml"
    users.write_text(TDSLITE_USERS)
    async with open_server(users=users, db=":memory:") as db:
        statements = [s.strip().rstrip(";") for s in schema.split(";\n") if s.strip()]
        await trio.to_thread.run_sync(admin_batch, db, statements)
        yield db


@asynccontextmanager
async def connector(
    tmp_path: Path, db: Any, *, relay_url: str, relay_key: str, key_file: Path, issuer: str
) -> AsyncIterator[None]:
    """A real connector serving the app's tunnel (``TUNNEL_NAME = "demo"``) until the block ends."""
    config = write_connector_config(
        tmp_path / "connector",
        relay_urls=[relay_url],
        relay_public_keys=[relay_key],
        private_key_file=key_file,
        issuer=issuer,
        db_host=db.host,
        db_port=db.port,
        database=db.engine.database,
        tunnel="demo",
    )
    async with open_connector(load_config(config)) as running:
        with trio.fail_after(30):
            await running.wait_ready()
        yield


async def the_curls(app_url: str, idp: DevIdP, env: dict[str, str]) -> None:
    """The README's curl commands against the app at ``app_url``: the user's rows, the same
    through Kysely, and a committed transfer."""
    analyst = idp.mint(sub="alice", groups=["analysts"])
    admin = idp.mint(sub="kim", groups=["admins"])
    answers = []
    for line in _commands(_block("curl ")):
        token = admin if "/api/transfer" in line else analyst
        line = line.replace("http://127.0.0.1:8788", app_url)
        answers.append(json.loads(await _shell(line, {**env, "TOKEN": token})))
    orders, kysely, transfer = answers
    assert orders["owner"] == "alice", orders
    assert orders["orders"] == ALICES_ORDERS
    assert kysely == {"owner": "alice", "orders": ALICES_ORDERS}
    assert transfer == {
        "moved": 3,
        "from": {"id": 1, "item": "apples", "qty": 7},
        "to": {"id": 2, "item": "pears", "qty": 3},
    }


def _env() -> dict[str, str]:
    return {**os.environ, "PATH": f"{VENV_BIN}:/usr/bin:/bin"}


async def test_the_readme_runs_the_app_on_workerd_and_answers_rows(tmp_path: Path) -> None:
    env = _env()
    # the keys, as the README names them: keys/relay.key (PEM) and conn-1's public key
    await _shell("edgetds keygen --out keys --name relay", env, cwd=tmp_path)
    await _shell("edgetds keygen --out keys --name conn-1", env, cwd=tmp_path)
    keys = tmp_path / "keys"
    relay_port, app_port = _free_port(), _free_port()
    async with open_dev_idp(key_dir=tmp_path / "idp") as idp, database(tmp_path) as db:
        # env.json: the README's, with the keys and the IdP filled in
        (env_shape,) = fenced(README, "json")
        bindings: dict[str, Any] = json.loads(env_shape)
        assert bindings["RELAY_PRIVATE_KEY"].startswith("-----BEGIN PRIVATE KEY-----")
        bindings["RELAY_PRIVATE_KEY"] = (keys / "relay.key").read_text()
        assert list(bindings["TUNNELS"]) == ["demo"]
        bindings["TUNNELS"]["demo"]["conn-1"] = (keys / "conn-1.pub").read_text().strip()
        bindings["ISSUERS"][0]["issuer"] = idp.issuer
        env_json = tmp_path / "env.json"
        env_json.touch(mode=0o600)
        env_json.write_text(json.dumps(bindings))
        command = _with_flags(
            _block("npm run serve:worker"),
            "npm run serve:worker",
            {"--env env.json": f"--env {env_json}"},
            f" --address 127.0.0.1:{relay_port} --app-address 127.0.0.1:{app_port}",
        )
        app_url = f"http://127.0.0.1:{app_port}"
        log = tmp_path / "serve.log"
        async with foreground(command, env, log) as process:
            with trio.fail_after(60):
                await eventually(lambda: _answers(app_url, process, log))
            async with connector(
                tmp_path,
                db,
                relay_url=f"ws://127.0.0.1:{relay_port}",
                relay_key=(keys / "relay.pub").read_text().strip(),
                key_file=keys / "conn-1.key",
                issuer=idp.issuer,
            ):
                await the_curls(app_url, idp, env)


async def test_the_readme_runs_the_app_under_wrangler_dev_and_answers_rows(tmp_path: Path) -> None:
    registry = tmp_path / "wrangler-registry"
    app_port = _free_port()
    command = _with_flags(
        _block("npm run dev:app"),
        "npm run dev:app",
        {"--port 8788": f"--port {app_port}"},
        " --ip 127.0.0.1 --inspector-port 0 --show-interactive-dev-session=false",
        elsewhere="npm run dev:relay",  # = open_wrangler_dev: wrangler dev of relay/worker/
    )
    env = {**wrangler_env(tmp_path, registry), "PATH": _env()["PATH"]}
    async with (
        open_dev_idp(key_dir=tmp_path / "idp") as idp,
        database(tmp_path) as db,
        open_wrangler_dev(
            tunnel="demo", connector_ids=["conn-1"], issuer=idp.issuer, registry=registry
        ) as relay,
    ):
        app_url = f"http://127.0.0.1:{app_port}"
        log = tmp_path / "dev-app.log"
        async with foreground(command, env, log) as process:
            with trio.fail_after(90):
                await eventually(lambda: _answers(app_url, process, log))
            bindings = (await trio.Path(log).read_text()).replace("\n", " ")
            assert re.search(
                r"env\.RELAY \(edgetds-relay\)\s+Worker\s+local \[connected\]", bindings
            ), bindings
            key_file = write_key(tmp_path / "conn-1.key", relay.connector_keys["conn-1"])
            async with connector(
                tmp_path,
                db,
                relay_url=relay.ws_url,
                relay_key=relay.relay_public_key,
                key_file=key_file,
                issuer=idp.issuer,
            ):
                await the_curls(app_url, idp, env)


def test_every_npm_script_the_readmes_name_exists() -> None:
    scripts = json.loads((ROOT / "package.json").read_text())["scripts"]
    named = {
        name
        for readme in (APP / "README.md", ROOT / "README.md", ROOT / "relay/worker/README.md")
        for name in re.findall(r"npm run ([\w:-]+)", readme.read_text())
    }
    assert {"serve:worker", "dev:app", "check:deploy", "deploy:app"} <= named
    assert named <= set(scripts), (
        f"npm scripts a README names but package.json lacks: {named - set(scripts)}"
    )
    assert scripts["dev:app"] == "cd examples/worker-app && wrangler dev"
