"""Small helpers shared by the Worker relay tests."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgetds.devidp import DevIdP, open_dev_idp
from tdslite import TdsServer, open_server
from tests.support.connector_stack import write_connector_config
from tests.support.e2e_stack import SETUP_SQL, TDSLITE_USERS, admin_batch, write_key
from tests.support.protocol_peer import open_peer
from tests.support.worker_relay import WorkerRelay

TUNNEL = "demo"
CONNECTORS = ("conn-1", "conn-2")


@asynccontextmanager
async def idp_and_db(
    tmp_path: Path, sql: Sequence[str] = SETUP_SQL
) -> AsyncIterator[tuple[DevIdP, TdsServer]]:
    """A dev IdP and a tdslite server (the test users, ``sql`` run as admin) for a real
    connector behind the Worker."""
    users = tmp_path / "users.toml"
    users.write_text(TDSLITE_USERS)
    async with (
        open_dev_idp(key_dir=tmp_path / "idp") as idp,
        open_server(users=users, db=":memory:") as db,
    ):
        await trio.to_thread.run_sync(admin_batch, db, sql)
        yield idp, db


def query_url(relay: WorkerRelay, tunnel: str | None = None) -> str:
    return f"{relay.handle.http_url}/v1/tunnels/{tunnel or relay.handle.tunnel}/query"


def connect_url(relay: WorkerRelay, tunnel: str | None = None) -> str:
    return f"{relay.handle.ws_url}/v1/tunnels/{tunnel or relay.handle.tunnel}/connect"


def peer(relay: WorkerRelay, connector_id: str = "conn-1", **options: Any) -> Any:
    """open_peer() for a registered connector of the relay's tunnel."""
    h = relay.handle
    key = h.connector_keys[connector_id]
    return open_peer(h.ws_url, h.tunnel, connector_id, key, h.relay_public_key, **options)


def shard_of(text: str, k: int) -> int:
    """The Worker's shardOf (FNV-1a over UTF-16 code units; ids are ASCII)."""
    h = 0x811C9DC5
    for ch in text:
        h = ((h ^ ord(ch)) * 0x01000193) & 0xFFFFFFFF
    return h % k


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def ndjson(text: str) -> list[Any]:
    return [json.loads(line) for line in text.splitlines()]


async def post_and_hang_up(
    http_url: str, tunnel: str, body: dict[str, Any], headers: dict[str, str], *, read: int
) -> bytes:
    """POST a query over a raw socket, read about ``read`` bytes, then close the connection
    (a client that goes away mid-stream; no HTTP client library state left behind)."""
    import trio

    payload = json.dumps(body).encode()
    port = int(http_url.rsplit(":", 1)[1])
    lines = [
        f"POST /v1/tunnels/{tunnel}/query HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Content-Type: application/json",
        f"Content-Length: {len(payload)}",
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    received = b""
    async with stream:
        await stream.send_all("\r\n".join(lines).encode() + b"\r\n\r\n" + payload)
        while len(received) < read:
            chunk = await stream.receive_some(65536)
            if not chunk:
                break
            received += chunk
    return received


def connector_config(
    directory: Path,
    relay: WorkerRelay,
    *,
    issuer: str,
    db: Any,
    key: Ed25519PrivateKey | None = None,
    connector_id: str = "conn-1",
    **options: Any,
) -> Path:
    """A real connector's config (and key file) in ``directory`` for the Worker ``relay`` and the
    tdslite server ``db``; ``key`` defaults to the key registered for ``connector_id``;
    ``options`` are more [connector] settings."""
    h = relay.handle
    directory.mkdir(parents=True, exist_ok=True)
    key_file = write_key(directory / f"{connector_id}.key", key or h.connector_keys[connector_id])
    return write_connector_config(
        directory,
        relay_urls=[h.ws_url],
        relay_public_keys=[h.relay_public_key],
        private_key_file=key_file,
        issuer=issuer,
        db_host=db.host,
        db_port=db.port,
        database=db.engine.database,
        connector_id=connector_id,
        **options,
    )
