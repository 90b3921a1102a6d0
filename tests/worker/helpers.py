"""Small helpers shared by the Worker relay tests."""

from __future__ import annotations

import json
from typing import Any

from tests.support.protocol_peer import open_peer
from tests.support.worker_relay import WorkerRelay


def query_url(relay: WorkerRelay, tunnel: str | None = None) -> str:
    return f"{relay.handle.http_url}/v1/tunnels/{tunnel or relay.handle.tunnel}/query"


def connect_url(relay: WorkerRelay, tunnel: str | None = None) -> str:
    return f"{relay.handle.ws_url}/v1/tunnels/{tunnel or relay.handle.tunnel}/connect"


def peer(relay: WorkerRelay, connector_id: str = "conn-1", **options: Any) -> Any:
    """open_peer() for a registered connector of the relay's tunnel."""
    h = relay.handle
    key = h.connector_keys[connector_id]
    return open_peer(h.ws_url, h.tunnel, connector_id, key, h.relay_public_key, **options)


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
