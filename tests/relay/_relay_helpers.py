"""Small helpers shared by the Python relay tests."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from websockets.trio.client import connect

from identity.oidc import default_verify_context
from protocol import SUBPROTOCOL, Connection, Role, events, make_connector_token
from relay.server import RunningRelay
from tests.support.protocol_peer import Peer, QueryHandler, open_peer, rows_handler
from tests.support.relays import RelayHandle
from tests.support.waiting import eventually


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def query_url(relay: RelayHandle, tunnel: str | None = None) -> str:
    return f"{relay.http_url}/v1/tunnels/{tunnel or relay.tunnel}/query"


def ndjson(text: str) -> list[Any]:
    assert text.endswith("\n"), "an NDJSON body ends with a newline"
    return [json.loads(line) for line in text.splitlines()]


@asynccontextmanager
async def peer(
    relay: RelayHandle,
    connector_id: str = "conn-1",
    *,
    handler: QueryHandler | None = rows_handler,
    **options: Any,
) -> AsyncIterator[Peer]:
    """A protocol peer connected as `connector_id`, registered at the relay before it yields."""
    async with open_peer(
        relay.ws_url,
        relay.tunnel,
        connector_id,
        relay.connector_keys[connector_id],
        relay.relay_public_key,
        handler=handler,
        **options,
    ) as p:
        await wait_registered(relay, p.session_id)
        yield p


async def wait_registered(relay: RelayHandle, session_id: str) -> None:
    """Poll the relay's stats (loopback) until the session serves its tunnel."""
    async with httpx.AsyncClient(verify=default_verify_context()) as http:

        async def listed() -> bool:
            stats = (await http.get(f"{relay.http_url}/v1/relay/stats")).json()
            sessions = stats["tunnels"][relay.tunnel]["sessions"]
            return any(s["session_id"] == session_id for s in sessions)

        await eventually(listed, interval=0.01)


async def wait_connections(running: RunningRelay, tunnel: str, count: int) -> None:
    """Wait until `count` connections take queries on `tunnel` (registered, not draining)."""
    registered = running.app.registry.tunnels[tunnel]
    while True:
        status = registered.status()
        if status["connections"] - status["draining"] == count:
            return
        await registered.wait_changed()


async def read_until_closed(ws: Any) -> None:
    """Read a websockets connection until it closes (raises ConnectionClosed)."""
    while True:
        await ws.recv()


def connector_token(relay: RelayHandle, connector_id: str = "conn-1", **options: Any) -> str:
    """A fresh connector token (options: key, tunnel, now) for `connector_id`."""
    key = options.pop("key", None) or relay.connector_keys[connector_id]
    tunnel = options.pop("tunnel", relay.tunnel)
    now = options.pop("now", None)
    return make_connector_token(
        key, connector_id=connector_id, tunnel=tunnel, now=int(time.time()) if now is None else now
    )


@asynccontextmanager
async def raw_connector(
    relay: RelayHandle, connector_id: str = "conn-1", *, ready: bool = False
) -> AsyncIterator[tuple[Any, Connection]]:
    """An upgraded socket that read HELLO and, if `ready`, sent READY (nothing else)."""
    async with connect(
        f"{relay.ws_url}/v1/tunnels/{relay.tunnel}/connect",
        subprotocols=[SUBPROTOCOL],  # type: ignore[list-item]
        additional_headers=bearer(connector_token(relay, connector_id)),
    ) as ws:
        conn = Connection(Role.CONNECTOR)
        conn.receive_data(await ws.recv())
        assert isinstance(conn.events()[0], events.Hello)
        if ready:
            conn.send(events.Ready(connector_id, 16))
            await ws.send(conn.data_to_send())
        yield ws, conn
