"""The whole demo stack on 127.0.0.1 for load tests and benchmarks, all real parts:

tdslite (a ``digits`` table 0..9 that cross joins into any number of rows, and optionally the
``sample`` seed, slow to load) + dev IdP (keys in a directory, so
`edgetds loadtest --dev-idp-key-dir` works) + the Python relay + a connector, in this Trio run
or as a subprocess (``edgetds connector run``; the memory benchmark samples its RSS from /proc).

    async with open_demo_stack(tmp_path) as stack:
        stack.relay.http_url, stack.direct (a DirectSpec for python-tds), stack.idp.mint(...)

It only wires the owners' starters together (tdslite.open_server, edgetds.devidp.open_dev_idp,
tests.support.relays.start_python_relay, tests.support.connector_stack, connector.runtime).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import trio

import tdslite
from connector.config import load_config
from connector.keys import GeneratedKey, generate_key_files, load_private_key
from connector.runtime import open_connector
from edgetds.devidp import DevIdP, open_dev_idp
from edgetds.loadtest.targets import DirectSpec
from tests.support.connector_stack import TDSLITE_USERS, write_connector_config
from tests.support.relays import RelayHandle, start_python_relay

__all__ = ["NO_RATE_LIMITS", "DemoStack", "open_demo_stack"]

#: an admin login to create the benchmark tables (the connector only has reader and writer)
USERS = TDSLITE_USERS + '\n[users.owner]\npassword = "owner-pw"\nrole = "admin"\n'
SETUP_SQL = (
    "CREATE TABLE digits (d int PRIMARY KEY)",
    "INSERT INTO digits (d) VALUES (0),(1),(2),(3),(4),(5),(6),(7),(8),(9)",
)
#: a load test sends many queries as few identities: switch the relay's per-identity limiter off
NO_RATE_LIMITS = {"queries_per_second": 0, "query_burst": 0, "auth_failures_per_second": 0}
TUNNEL = "demo"


@dataclass(frozen=True)
class DemoStack:
    relay: RelayHandle
    idp: DevIdP
    idp_key_dir: Path
    direct: DirectSpec  # the connector's "reader" login, straight to tdslite
    connector_config: Path
    #: the connector subprocess (connector="subprocess"), else None
    connector_process: trio.Process | None


async def _wait_connected(relay: RelayHandle, idp: DevIdP, timeout_s: float = 20) -> None:
    """Wait until the relay reports a connector for the tunnel (GET .../status)."""
    import httpx

    token = idp.mint(sub="stack-probe", groups=["analysts"])
    url = f"{relay.http_url}/v1/tunnels/{relay.tunnel}/status"
    with trio.fail_after(timeout_s):
        async with httpx.AsyncClient(trust_env=False) as client:
            while True:
                resp = await client.get(url, headers={"authorization": f"Bearer {token}"})
                if resp.status_code == 200 and resp.json().get("connectors", 0) > 0:
                    return
                await trio.sleep(0.05)


def _prepare(workdir: Path) -> tuple[Path, GeneratedKey]:
    workdir.mkdir(parents=True, exist_ok=True)
    users = workdir / "tdslite-users.toml"
    users.write_text(USERS)
    return users, generate_key_files(workdir / "keys", "conn-1", overwrite=True)


def _set_pool_size(config: Path, pool_size: int) -> None:
    text = config.read_text().replace("pool_size = 16", f"pool_size = {pool_size}")
    config.write_text(text)


def _setup(host: str, port: int, database: str) -> None:
    import pytds

    with pytds.connect(
        dsn=host, port=port, user="owner", password="owner-pw", database=database, autocommit=True
    ) as conn:
        with conn.cursor() as cursor:
            for sql in SETUP_SQL:
                cursor.execute(sql)


@asynccontextmanager
async def open_demo_stack(
    workdir: Path,
    *,
    connector: str = "inprocess",
    pool_size: int = 16,
    relay_limits: dict[str, Any] | None = None,
    db: str = ":memory:",
    seed: str | None = None,
    **connector_options: Any,
) -> AsyncIterator[DemoStack]:
    """Run the stack until the block exits. ``connector``: "inprocess" | "subprocess" | "none"."""
    users, key = _prepare(workdir)
    idp_dir = workdir / "idp"
    async with (
        tdslite.open_server(db=db, users=users, seed=seed) as tds,
        open_dev_idp(key_dir=idp_dir) as idp,
        start_python_relay(
            tunnel=TUNNEL,
            connector_ids=["conn-1"],
            issuer=idp.issuer,
            limits={**NO_RATE_LIMITS, **(relay_limits or {})},
            connector_keys={"conn-1": load_private_key(key.private_path)},
        ) as relay,
    ):
        database = tds.engine.database
        await trio.to_thread.run_sync(_setup, tds.host, tds.port, database)
        config = write_connector_config(
            workdir / "connector",
            relay_urls=[relay.ws_url],
            relay_public_keys=[relay.relay_public_key],
            private_key_file=key.private_path,
            issuer=idp.issuer,
            db_host=tds.host,
            db_port=tds.port,
            database=database,
            audit=False,
            **connector_options,
        )
        if pool_size != 16:
            _set_pool_size(config, pool_size)
        direct = DirectSpec(tds.host, tds.port, "reader", "reader-pw", database)

        def stack(process: trio.Process | None) -> DemoStack:
            return DemoStack(relay, idp, idp_dir, direct, config, process)

        if connector == "none":
            yield stack(None)
        elif connector == "inprocess":
            async with open_connector(load_config(config)) as conn:
                await conn.wait_ready()
                await _wait_connected(relay, idp)
                yield stack(None)
        else:
            async with trio.open_nursery() as nursery:
                cmd = [sys.executable, "-m", "edgetds", "connector", "run", "--config", str(config)]
                log = open(workdir / "connector.log", "wb")  # noqa: SIM115, ASYNC230
                process: trio.Process = await nursery.start(
                    partial(
                        trio.run_process,
                        cmd,
                        check=False,
                        stdout=subprocess.DEVNULL,
                        stderr=log,
                        env={**os.environ, "PYTHONUNBUFFERED": "1"},
                    )
                )
                try:
                    await _wait_connected(relay, idp, timeout_s=30)
                    yield stack(process)
                finally:
                    process.terminate()
                    with trio.move_on_after(10):
                        await process.wait()
                    process.kill()
                    log.close()
