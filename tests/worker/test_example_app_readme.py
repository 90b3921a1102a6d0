"""examples/worker-app as its README runs it: "Run it locally" followed as written.

The keys come from ``edgetds keygen`` as the README says, env.json is the README's JSON with those
keys and the dev IdP's issuer filled in, the database holds the README's schema (tdslite), the
relay Worker and the app run from ``npm run serve:worker -- --env env.json --app`` (the npm script
of package.json, on the venv's Node after ``source .venv/bin/activate``), a real connector serves
the tunnel, and the README's curl commands answer the signed-in user's rows.

What the test changes: the ports (free ones, with the script's documented ``--address`` and
``--app-address``), env.json's location (a temporary directory), the IdP (the dev IdP) and
``$TOKEN`` (a dev-IdP token: an analyst's for the reads, an admin's for the transfer).
"""

from __future__ import annotations

import json
import os
import re
import signal
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
from edgetds.devidp import open_dev_idp
from tdslite import open_server
from tests.support.connector_stack import write_connector_config
from tests.support.e2e_stack import TDSLITE_USERS, admin_batch
from tests.support.waiting import eventually
from tests.support.worker_relay import ROOT

APP = ROOT / "examples" / "worker-app"
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
    with trio.fail_after(60):
        done = await trio.run_process(
            ["bash", "-euo", "pipefail", "-c", command],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            cwd=cwd,
            env=env,
        )
    assert done.returncode == 0, f"{command}\n{done.stderr.decode()}"
    return str(done.stdout.decode())


@asynccontextmanager
async def serve_worker(command: str, env: dict[str, str], log: Path) -> AsyncIterator[trio.Process]:
    """The README's serve command in the foreground, until the block ends (then its whole
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
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:  # pragma: no cover - already gone
            pass
        with trio.CancelScope(shield=True):
            await process.wait()


async def _answers(url: str, process: trio.Process, log: Path) -> bool:
    if process.returncode is not None:
        output = await trio.Path(log).read_text()
        raise AssertionError(f"`npm run serve:worker` exited:\n{output}")
    async with httpx.AsyncClient(timeout=2) as client:
        try:
            await client.get(url)
        except httpx.TransportError:
            return False
    return True


async def test_the_readme_runs_the_app_locally_and_answers_rows(tmp_path: Path) -> None:
    readme = (APP / "README.md").read_text()
    (env_shape,) = fenced(readme, "json")
    (schema,) = fenced(readme, "sql")
    run_locally, _deploy_block, *_ = fenced(readme, "sh")
    curls = next(block for block in fenced(readme, "sh") if "curl" in block)
    assert any("npm run serve:worker" in line for line in _commands(run_locally))

    relay_port, app_port = _free_port(), _free_port()
    env = {
        **os.environ,
        "PATH": f"{VENV_BIN}:/usr/bin:/bin",
    }
    # the keys, as the README names them: keys/relay.key (PEM) and conn-1's public key
    await _shell("edgetds keygen --out keys --name relay", env, cwd=tmp_path)
    await _shell("edgetds keygen --out keys --name conn-1", env, cwd=tmp_path)
    keys = tmp_path / "keys"
    users = tmp_path / "users.toml"
    users.write_text(TDSLITE_USERS)
    async with (
        open_dev_idp(key_dir=tmp_path / "idp") as idp,
        open_server(users=users, db=":memory:") as db,
    ):
        statements = [s.strip() for s in schema.split(";\n") if s.strip()]
        await trio.to_thread.run_sync(admin_batch, db, [s.rstrip(";") for s in statements])
        # env.json: the README's, with the keys and the IdP filled in
        bindings: dict[str, Any] = json.loads(env_shape)
        assert bindings["RELAY_PRIVATE_KEY"].startswith("-----BEGIN PRIVATE KEY-----")
        bindings["RELAY_PRIVATE_KEY"] = (keys / "relay.key").read_text()
        assert list(bindings["TUNNELS"]) == ["demo"]
        bindings["TUNNELS"]["demo"]["conn-1"] = (keys / "conn-1.pub").read_text().strip()
        bindings["ISSUERS"][0]["issuer"] = idp.issuer
        env_json = tmp_path / "env.json"
        env_json.touch(mode=0o600)
        env_json.write_text(json.dumps(bindings))

        ports = f" --address 127.0.0.1:{relay_port} --app-address 127.0.0.1:{app_port}"
        command = "\n".join(
            line.split("#", 1)[0].strip().replace("--env env.json", f"--env {env_json}") + ports
            if "npm run serve:worker" in line
            else line
            for line in _commands(run_locally)
        )
        app_url = f"http://127.0.0.1:{app_port}"
        log = tmp_path / "serve.log"
        async with serve_worker(command, env, log) as process:
            with trio.fail_after(60):
                await eventually(lambda: _answers(app_url, process, log))
            config = write_connector_config(
                tmp_path / "connector",
                relay_urls=[f"ws://127.0.0.1:{relay_port}"],
                relay_public_keys=[(keys / "relay.pub").read_text().strip()],
                private_key_file=keys / "conn-1.key",
                issuer=idp.issuer,
                db_host=db.host,
                db_port=db.port,
                database=db.engine.database,
                tunnel="demo",
            )
            async with open_connector(load_config(config)) as connector:
                with trio.fail_after(30):
                    await connector.wait_ready()
                analyst = idp.mint(sub="alice", groups=["analysts"])
                admin = idp.mint(sub="kim", groups=["admins"])
                answers = []
                for line in _commands(curls):
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
