"""Prisma Client through the tunnel: a Prisma Client generated from tests/prisma/app/schema.prisma
(generator ``prisma-client``, SQL Server's query compiler in WebAssembly, no Rust query engine)
runs tests/prisma/app/suite.mjs in Node with the PrismaEdgeTds adapter (relay/worker/src/prisma.js)
against the real stack: TunnelClient -> relay (Python, or the Worker under workerd) -> connector ->
tdslite, with dev-IdP tokens. Nothing of ours is mocked.

The client is generated offline into a temp dir (``prisma generate`` needs no schema engine:
PRISMA_SCHEMA_ENGINE_BINARY=/bin/false); the tables are created with app/schema.sql (``prisma
migrate`` would need the schema engine)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import trio

from connector.config import load_config
from connector.runtime import open_connector
from edgetds.devidp import DevIdP, open_dev_idp
from tdslite import TdsServer, open_server
from tests.support.e2e_stack import TDSLITE_USERS, Stack, admin_batch
from tests.support.relays import RelayHandle
from tests.support.worker_relay import ROOT, WORKERD, _listener, open_worker_relay
from tests.support.wrangler import NODE
from tests.worker.helpers import connector_config

APP = Path(__file__).parent / "app"
PRISMA = ROOT / "node_modules" / "prisma" / "build" / "index.js"
#: every test of suite.mjs, so a run that silently lost some fails
SUITE_TESTS = 18


@asynccontextmanager
async def open_workerd(config: Path) -> AsyncIterator[str]:
    """Run ``workerd serve config`` on a socket bound here (127.0.0.1, port 0); yield its URL."""
    sock = _listener()
    command = [str(WORKERD), "serve", str(config), f"--socket-fd=http={sock.fileno()}"]
    log = config.parent / "workerd.log"
    with log.open("wb") as out:
        process = await trio.lowlevel.open_process(
            command, pass_fds=[sock.fileno()], stdout=out, stderr=subprocess.STDOUT
        )
        try:
            yield f"http://127.0.0.1:{sock.getsockname()[1]}"
        finally:
            process.kill()
            with trio.CancelScope(shield=True):
                await process.wait()
            sock.close()


def schema_batches() -> list[str]:
    text = (APP / "schema.sql").read_text()
    return [batch.strip() for batch in re.split(r"^GO$", text, flags=re.MULTILINE) if batch.strip()]


def generate(work: Path, runtime: str) -> Path:
    """``prisma generate`` of app/schema.prisma (its generator's ``runtime`` set to ``runtime``)
    into ``work``; returns the generated client.ts."""
    work.mkdir(parents=True, exist_ok=True)
    schema = (APP / "schema.prisma").read_text()
    (work / "schema.prisma").write_text(
        schema.replace('runtime  = "nodejs"', f'runtime  = "{runtime}"')
    )
    shutil.copy(APP / "prisma.config.ts", work / "prisma.config.ts")
    (work / "node_modules").symlink_to(ROOT / "node_modules")  # the generated code's imports
    env = {
        **os.environ,
        "PRISMA_SCHEMA_ENGINE_BINARY": "/bin/false",  # offline: generate needs no schema engine
        "PRISMA_ENGINES_CHECKSUM_IGNORE_MISSING": "1",
        "PRISMA_HIDE_UPDATE_MESSAGE": "1",
        "CHECKPOINT_DISABLE": "1",
    }
    result = subprocess.run(
        [str(NODE), str(PRISMA), "generate"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    client = work / "generated" / "client.ts"
    assert client.exists(), result.stdout
    return client


@pytest.fixture(scope="module")
def prisma_client(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Prisma Client for Node (generator runtime "nodejs"): its client.ts."""
    return generate(tmp_path_factory.mktemp("prisma"), "nodejs")


async def run_suite(client: Path, url: str, tunnel: str, idp: DevIdP, *, kind: str) -> None:
    """Run app/suite.mjs (node:test) against the relay (``kind``) at ``url``; check its summary,
    and that no test was skipped."""
    env = {
        **os.environ,
        "TZ": "Pacific/Chatham",  # +13:45/+12:45: a value read as local time instead of UTC shows
        "PRISMA_CLIENT": str(client),
        "EDGETDS_URL": url,
        "EDGETDS_TUNNEL": tunnel,
        "EDGETDS_TOKEN": idp.mint(sub="ada", groups=["admins"]),
        "EDGETDS_READER_TOKEN": idp.mint(sub="rita", groups=["analysts"]),
    }
    result = await trio.run_process(
        [str(NODE), "--test", "--test-reporter=tap", str(APP / "suite.mjs")],
        cwd=APP,
        env=env,
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    out = result.stdout.decode()
    summary = {k: int(v) for k, v in re.findall(r"^# (\w+) (\d+)$", out, re.MULTILINE)}
    assert result.returncode == 0, out[-6000:] + result.stderr.decode()[-3000:]
    assert summary.get("tests") == SUITE_TESTS, summary
    assert summary.get("fail") == 0, summary
    assert summary.get("skipped") == 0, summary


async def _create_schema(db: TdsServer) -> None:
    await trio.to_thread.run_sync(admin_batch, db, schema_batches())


async def test_prisma_client_through_the_python_relay(stack: Stack, prisma_client: Path) -> None:
    await _create_schema(stack.db)
    with trio.fail_after(180):
        await run_suite(
            prisma_client,
            stack.relay.http_url,
            stack.relay.tunnel,
            stack.idp,
            kind="python",
        )
    # the statements Prisma generated ran on tdslite, with @P1.. parameters
    assert any("@P1" in s and "[dbo].[User]" in s for s in stack.statements())


@asynccontextmanager
async def worker_stack(tmp_path: Path) -> AsyncIterator[tuple[DevIdP, RelayHandle]]:
    """The Worker relay under workerd -> a real connector -> tdslite with the tables of
    app/schema.sql, and the dev IdP."""
    users = tmp_path / "users.toml"
    users.write_text(TDSLITE_USERS)
    async with (
        open_dev_idp(key_dir=tmp_path / "idp") as idp,
        open_server(users=users, db=":memory:") as db,
    ):
        await _create_schema(db)
        async with open_worker_relay(
            tunnel="demo", connector_ids=["conn-1"], issuer=idp.issuer
        ) as relay:
            path = connector_config(tmp_path / "connector", relay, issuer=idp.issuer, db=db)
            async with open_connector(load_config(path)) as connector:
                await connector.wait_ready()
                yield idp, relay.handle


async def test_prisma_client_through_the_worker_relay(tmp_path: Path, prisma_client: Path) -> None:
    with trio.fail_after(240):
        async with worker_stack(tmp_path) as (idp, relay):
            await run_suite(prisma_client, relay.http_url, relay.tunnel, idp, kind="worker")


async def test_prisma_client_on_workerd(tmp_path: Path) -> None:
    """Prisma Client generated for Cloudflare Workers (runtime "workerd": the query compiler is a
    WebAssembly module import) in a Worker under workerd, bundled with esbuild as wrangler does,
    querying the Worker relay through a service binding (its only way out: no global outbound);
    the Worker takes the user's token from the request and sends it with every query."""
    client = await trio.to_thread.run_sync(generate, tmp_path / "gen", "workerd")
    with trio.fail_after(240):
        async with (
            worker_stack(tmp_path) as (idp, relay),
            httpx.AsyncClient(timeout=60) as http,
        ):
            out = tmp_path / "worker"
            out.mkdir()
            build = [str(NODE), str(APP / "build-worker.mjs"), "--client", str(client)]
            build += ["--out", str(out), "--relay-url", relay.http_url, "--tunnel", relay.tunnel]
            build += ["--sessions"]
            await trio.run_process(build, cwd=ROOT)
            async with open_workerd(out / "config.capnp") as url:
                token = idp.mint(sub="ada", groups=["admins"])
                response = await http.get(
                    f"{url}/report", headers={"Authorization": f"Bearer {token}"}
                )
    assert response.status_code == 200, response.text
    report = response.json()
    assert report.pop("inserted") == 2
    assert report.pop("users") == [
        {
            "name": "Grace",
            "balance": "1.00",
            "visits": "1",
            "birthday": None,
            "posts": ["Grace post"],
        },
        {
            "name": "Ada",
            "balance": "12.50",
            "visits": "9007199254740993",
            "birthday": "1815-12-10T00:00:00.000Z",
            "posts": ["Ada post"],
        },
    ]
    assert report.pop("updated") == 1
    assert report.pop("raw") == "1"
    assert report.pop("duplicate") == "P2002"
    assert report.pop("transaction") == "9007199254740994"
    assert report.pop("created") == ["Alan", "On Computable Numbers"]
    assert report == {}
