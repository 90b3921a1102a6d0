"""How many instructions does the Python relay spend per query? (callgrind, deterministic)

The relay alone under ``valgrind --tool=callgrind`` (``edgetds relay serve`` from ``--server-dir``,
its own process, instrumentation switched on only around the measured queries with
``callgrind_control -i on|off``); in this process a dev IdP, a minimal connector peer speaking
protocol/ over websockets.trio (one COLUMNS, one ROWS and a DONE per QUERY) and one keep-alive
httpx client sending ``SELECT @n AS n`` with a parameter, one query at a time (concurrency 1).
Prints the instructions per query (and the relay's Trio-independent totals are the same each run:
``PYTHONHASHSEED=0``).

Run: ``.venv/bin/python -m bench.relay_callgrind [--count 300] [--server-dir TREE]``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import httpx
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from websockets.trio.client import connect

from bench.relay_latency import _serve_queries
from bench.stack import (
    NO_RATE_LIMITS,
    TUNNEL,
    _write_relay_config,
    listening_address,
    relay_handle,
    wait_connected,
)
from bench.tdslite_replay import _callgrind, _instructions
from edgetds.devidp import open_dev_idp
from protocol import SUBPROTOCOL, Connection, Role, events, make_connector_token
from tests.support.relays import RelayHandle


async def measure(server_dir: Path, workdir: Path, count: int, warmup: int) -> float:
    """Instructions per query of the relay run from ``server_dir``."""
    async with open_dev_idp() as idp:
        relay_key, conn_key = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
        config = _write_relay_config(workdir, idp.issuer, NO_RATE_LIMITS, relay_key, conn_key)
        out = workdir / "callgrind.out"
        cmd = [
            "valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
            str(server_dir / ".venv" / "bin" / "python"), "-m", "edgetds", "relay", "serve",
            "--config", str(config), "--log-level", "warning",
        ]  # fmt: skip
        env = {**os.environ, "PYTHONHASHSEED": "0"}
        async with trio.open_nursery() as nursery:
            proc: trio.Process = await nursery.start(
                partial(
                    trio.run_process,
                    cmd,
                    cwd=server_dir,
                    env=env,
                    check=False,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                )
            )
            try:
                url = await listening_address(proc, "the relay", timeout_s=300)
                relay = relay_handle(url, relay_key, conn_key)
                return await _queries(relay, idp, conn_key, proc.pid, out, count, warmup)
            finally:
                proc.terminate()
                nursery.cancel_scope.cancel()
    raise AssertionError("unreachable")


async def _queries(
    relay: RelayHandle,
    idp: object,
    conn_key: Ed25519PrivateKey,
    pid: int,
    out: Path,
    count: int,
    warmup: int,
) -> float:
    token = make_connector_token(
        conn_key, connector_id="conn-1", tunnel=TUNNEL, now=int(time.time())
    )
    async with (
        trio.open_nursery() as nursery,
        connect(
            f"{relay.ws_url}/v1/tunnels/{TUNNEL}/connect",
            subprotocols=[SUBPROTOCOL],  # type: ignore[list-item]
            additional_headers={"Authorization": f"Bearer {token}"},
            compression=None,
            max_size=None,
            open_timeout=120,
        ) as ws,
    ):
        conn = Connection(Role.CONNECTOR)
        hello = await ws.recv()
        assert isinstance(hello, bytes)
        conn.receive_data(hello)
        conn.events()
        conn.send(events.Ready("conn-1", 128))
        await ws.send(conn.data_to_send())
        nursery.start_soon(_serve_queries, ws, conn, 1)
        await wait_connected(relay, idp, timeout_s=120)  # type: ignore[arg-type]
        headers = {"Authorization": f"Bearer {idp.mint(sub='bench')}"}  # type: ignore[attr-defined]
        url = f"{relay.http_url}/v1/tunnels/{TUNNEL}/query"
        async with httpx.AsyncClient(timeout=120, trust_env=False) as client:

            async def query(n: int) -> None:
                body = {"sql": "SELECT @n AS n", "params": {"n": n}}
                response = await client.post(url, json=body, headers=headers)
                assert response.status_code == 200, response.text
                assert response.content.endswith(b"\n")

            for i in range(warmup):
                await query(1000 + i)
            await trio.to_thread.run_sync(_callgrind, pid, "-z")
            await trio.to_thread.run_sync(_callgrind, pid, "-i", "on")
            for i in range(count):
                await query(100000 + i)
            await trio.to_thread.run_sync(_callgrind, pid, "-i", "off")
            await trio.to_thread.run_sync(_callgrind, pid, "-d")
        nursery.cancel_scope.cancel()
    return _instructions(out) / count


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=300, help="measured queries")
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument(
        "--server-dir", type=Path, default=Path.cwd(), help="the tree whose relay runs"
    )
    args = parser.parse_args(argv)
    for _ in range(args.rounds):
        with tempfile.TemporaryDirectory() as tmp:
            value = trio.run(measure, args.server_dir.resolve(), Path(tmp), args.count, args.warmup)
        print(f"relay instructions per query {value:14,.0f}  ({args.count} queries)", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
