"""How fast is the Python relay for small queries and large results? (latency, throughput)

Everything runs in this process on 127.0.0.1 (port 0): the dev IdP, the Python relay (on
asgiapp.server), a minimal connector peer speaking protocol/ over websockets.trio (no
compression, as the real connector), and httpx as the client with one keep-alive connection.

1. baseline: `GET /healthz` round trips on the same relay and client (the HTTP floor: the relay's
   HTTP server + httpx + trio, no token, no connector).
2. small queries: N sequential `POST /query` (token verified, QUERY + attestation, COLUMNS/ROWS/
   DONE back) -> p50/p99, and the ratio to the baseline p50. A Nagle/delayed-ACK stall would show
   as ~40 ms; the relay sends each small response in one write.
3. large result: one query returning `--mib` MiB of 1 KB rows -> MiB/s through the relay.

Run: ``.venv/bin/python -m bench.relay_latency [--rounds N] [--mib M]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import trio
from websockets.trio.client import connect

from edgetds.devidp import open_dev_idp
from protocol import SUBPROTOCOL, Connection, Role, events, make_connector_token
from relay.config import RelayConfig, TunnelConfig, parse_limits
from relay.server import open_relay

ROW = json.dumps(["x" * 1000]).encode() + b"\n"
COLUMNS = b'{"columns":[{"name":"x","type":"nvarchar"}]}\n'


async def _serve_queries(ws: object, conn: Connection, chunks: int) -> None:
    """Answer every QUERY: small (one row) or, for sql 'big', `chunks` ROWS of 64 rows."""
    chunk = ROW * 64
    credit = trio.Event()
    async with trio.open_nursery() as nursery:

        async def flush() -> None:
            data = conn.data_to_send()
            if data:
                await ws.send(data)  # type: ignore[attr-defined]

        async def answer(q: events.Query) -> None:
            nonlocal credit
            conn.send(events.Columns(q.stream_id, COLUMNS))
            for _ in range(chunks if q.sql == "big" else 1):
                data = chunk if q.sql == "big" else ROW
                while conn.send_window(q.stream_id) < len(data):
                    await flush()
                    credit = trio.Event()
                    await credit.wait()
                conn.send(events.Rows(q.stream_id, data))
                if q.sql == "big":
                    await flush()
            conn.send(events.Done(q.stream_id, b'{"done":{"rows":1}}\n'))
            await flush()

        async for message in ws:  # type: ignore[attr-defined]
            conn.receive_data(message)
            for event in conn.events():
                if isinstance(event, events.Query):
                    nursery.start_soon(answer, event)
                elif isinstance(event, events.Credit):
                    credit.set()
            await flush()


@asynccontextmanager
async def _stack(chunks: int) -> AsyncIterator[tuple[str, str]]:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    async with open_dev_idp() as idp:
        key = Ed25519PrivateKey.generate()
        config = RelayConfig(
            listen="127.0.0.1:0",
            private_key=Ed25519PrivateKey.generate(),
            tunnels={"bench": TunnelConfig(name="bench", connectors={"c": (key.public_key(),)})},
            identity={"issuers": [{"issuer": idp.issuer, "audience": "edgetds"}]},
            limits=parse_limits({"query_burst": 10**6, "queries_per_second": 10**6}),
        )
        async with open_relay(config) as relay, trio.open_nursery() as nursery:
            token = make_connector_token(
                key, connector_id="c", tunnel="bench", now=int(time.time())
            )
            async with connect(
                f"{relay.ws_url}/v1/tunnels/bench/connect",
                subprotocols=[SUBPROTOCOL],  # type: ignore[list-item]
                additional_headers={"Authorization": f"Bearer {token}"},
                compression=None,
                max_size=None,
            ) as ws:
                conn = Connection(Role.CONNECTOR)
                conn.receive_data(await ws.recv())
                conn.events()
                conn.send(events.Ready("c", 128))
                await ws.send(conn.data_to_send())
                nursery.start_soon(_serve_queries, ws, conn, chunks)
                while not relay.app.registry.tunnels["bench"].sessions:  # noqa: ASYNC110
                    await trio.sleep(0.01)
                yield relay.http_url, idp.mint(sub="bench")
                nursery.cancel_scope.cancel()


def _ms(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered) * 1000, ordered[int(len(ordered) * 0.99) - 1] * 1000


async def main(rounds: int, mib: int) -> None:
    chunks = max(1, mib * 2**20 // (len(ROW) * 64))
    async with _stack(chunks) as (url, token), httpx.AsyncClient(timeout=120) as client:
        headers = {"Authorization": f"Bearer {token}"}
        query = f"{url}/v1/tunnels/bench/query"
        for _ in range(20):  # warm up both paths
            await client.get(f"{url}/healthz")
            await client.post(query, json={"sql": "small"}, headers=headers)
        base: list[float] = []
        small: list[float] = []
        for _ in range(rounds):
            start = time.perf_counter()
            await client.get(f"{url}/healthz")
            base.append(time.perf_counter() - start)
            start = time.perf_counter()
            response = await client.post(query, json={"sql": "small"}, headers=headers)
            small.append(time.perf_counter() - start)
            assert response.status_code == 200
        start = time.perf_counter()
        response = await client.post(query, json={"sql": "big"}, headers=headers)
        elapsed = time.perf_counter() - start
        assert response.content.endswith(b'{"done":{"rows":1}}\n')
    b50, b99 = _ms(base)
    s50, s99 = _ms(small)
    size = len(response.content) / 2**20
    print(f"baseline GET /healthz      p50 {b50:7.2f} ms  p99 {b99:7.2f} ms")
    print(
        f"small query (1 row)        p50 {s50:7.2f} ms  p99 {s99:7.2f} ms  ratio {s50 / b50:.2f}x"
    )
    print(f"large result {size:6.1f} MiB   {size / elapsed:7.1f} MiB/s ({elapsed:.2f} s)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--mib", type=int, default=32)
    args = parser.parse_args()
    trio.run(main, args.rounds, args.mib)
