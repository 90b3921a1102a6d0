"""A scripted edgetds/1 connector peer for relay tests (Python, protocol/ over websockets.trio).

It is the far end of the relay's connector socket, not a stand-in for the connector product: it
speaks the real protocol (``protocol.Connection(Role.CONNECTOR)``), checks the relay's HELLO and
every QUERY attestation with protocol/'s verifiers (so a relay that signs wrong fails the test),
honours credit, and lets a test decide what each query answers: rows, an ERROR first, a stall,
or a dropped socket. Use the real connector (connector/) for end-to-end tests.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from websockets.trio.client import connect

from protocol import (
    DEFAULT_STATEMENT_BYTES,
    SUBPROTOCOL,
    AuthError,
    Connection,
    ReplayCache,
    Role,
    events,
    make_connector_token,
    verify_attestation,
    verify_hello,
)
from protocol import key_id as protocol_key_id

__all__ = ["Peer", "QueryHandler", "key_id", "open_peer", "parse_public_key", "rows_handler"]

QueryHandler = Callable[["Peer", events.Query], Awaitable[None]]


def parse_public_key(text: str) -> Ed25519PublicKey:
    raw = base64.urlsafe_b64decode(text.removeprefix("ed25519:") + "==")
    return Ed25519PublicKey.from_public_bytes(raw)


def key_id(text: str) -> str:
    return protocol_key_id(parse_public_key(text))


def line(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


COLUMNS = [
    {"name": "n", "type": "int", "nullable": False, "precision": 10, "scale": 0, "length": 4}
]


@dataclass
class Peer:
    """One connected peer. ``queries`` and ``cancels`` record what the relay sent."""

    connector_id: str
    conn: Connection
    ws: Any
    session_id: str
    handler: QueryHandler | None
    queries: list[events.Query] = field(default_factory=list)
    cancels: list[int] = field(default_factory=list)
    credits: list[events.Credit] = field(default_factory=list)
    attestation_errors: list[str] = field(default_factory=list)
    credit_changed: trio.Event = field(default_factory=trio.Event)
    query_arrived: trio.Event = field(default_factory=trio.Event)
    cancel_arrived: trio.Event = field(default_factory=trio.Event)
    #: set when the relay's DRAIN arrived
    drained: trio.Event = field(default_factory=trio.Event)
    closed: trio.Event = field(default_factory=trio.Event)
    _lock: trio.Lock = field(default_factory=trio.Lock)

    async def flush(self) -> None:
        async with self._lock:
            data = self.conn.data_to_send()
            if data:
                await self.ws.send(data)

    async def send(self, event: events.Event) -> None:
        self.conn.send(event)
        await self.flush()

    async def columns(self, stream_id: int, columns: Sequence[dict[str, Any]] = COLUMNS) -> None:
        await self._flowed(events.Columns(stream_id, line({"columns": list(columns)})))

    async def rows(self, stream_id: int, rows: Sequence[Sequence[Any]]) -> None:
        await self._flowed(events.Rows(stream_id, b"".join(line(list(r)) for r in rows)))

    async def done(self, stream_id: int, *, rows: int, query_id: str | None = None) -> None:
        record = {"rows": rows, "result_sets": 1, "elapsed_ms": 1, "query_id": query_id}
        await self.send(events.Done(stream_id, line({"done": record})))

    async def error(self, stream_id: int, code: str, message: str, query_id: str | None) -> None:
        record = {"code": code, "message": message, "query_id": query_id}
        await self.send(events.Error(stream_id, line({"error": record})))

    async def _flowed(self, event: events.Columns | events.Rows) -> None:
        while self.conn.send_window(event.stream_id) < len(event.data):
            self.credit_changed = trio.Event()
            await self.credit_changed.wait()
        await self.send(event)

    async def wait_query(self, count: int = 1) -> events.Query:
        while len(self.queries) < count:
            self.query_arrived = trio.Event()
            await self.query_arrived.wait()
        return self.queries[count - 1]

    async def wait_cancel(self, stream_id: int) -> None:
        while stream_id not in self.cancels:
            self.cancel_arrived = trio.Event()
            await self.cancel_arrived.wait()

    async def wait_cancels(self, count: int) -> None:
        """Return once the relay sent `count` CANCELs (of any streams)."""
        while len(self.cancels) < count:
            self.cancel_arrived = trio.Event()
            await self.cancel_arrived.wait()

    async def drop(self) -> None:
        """Vanish without a close frame (a crashed connector / cut network)."""
        await self.ws.stream.aclose()


async def rows_handler(peer: Peer, query: events.Query, *, count: int = 3) -> None:
    """Default handler: one result set of ``count`` int rows, then DONE."""
    await peer.columns(query.stream_id)
    await peer.rows(query.stream_id, [[i] for i in range(count)])
    await peer.done(query.stream_id, rows=count, query_id=query.query_id)


async def _reader(peer: Peer, relay_keys: dict[str, Ed25519PublicKey], nursery: Any) -> None:
    replay = ReplayCache(ttl=120)
    try:
        while True:  # recv(), not `async for`: a cancelled generator warns when collected
            message = await peer.ws.recv()  # a close (clean or not) raises: caught below
            peer.conn.receive_data(message)
            for event in peer.conn.events():
                if isinstance(event, events.Query):
                    try:
                        verify_attestation(
                            event,
                            relay_keys,
                            session_id=peer.session_id,
                            now=time.time(),
                            replay=replay,
                        )
                    except AuthError as exc:
                        peer.attestation_errors.append(f"{exc.error_code}: {exc}")
                    peer.queries.append(event)
                    peer.query_arrived.set()
                    if peer.handler is not None:
                        nursery.start_soon(peer.handler, peer, event)
                elif isinstance(event, events.Cancel):
                    peer.cancels.append(event.stream_id)
                    peer.cancel_arrived.set()
                elif isinstance(event, events.Credit):
                    peer.credits.append(event)
                    peer.credit_changed.set()
                elif isinstance(event, events.Drain):
                    peer.drained.set()
            await peer.flush()
    except Exception:  # noqa: BLE001 - the socket dropped: the test asserts on relay behaviour
        pass
    finally:
        peer.closed.set()


@asynccontextmanager
async def open_peer(
    ws_url: str,
    tunnel: str,
    connector_id: str,
    key: Ed25519PrivateKey,
    relay_public_key: str,
    *,
    handler: QueryHandler | None = rows_handler,
    max_streams: int = 16,
    max_statement_bytes: int = DEFAULT_STATEMENT_BYTES,
    token: str | None = None,
    caps: tuple[str, ...] = (),
) -> AsyncIterator[Peer]:
    """Connect, check HELLO, send READY; serve queries with ``handler`` until the block exits."""
    nonce = base64.urlsafe_b64encode(secrets.token_bytes(16)).rstrip(b"=").decode()
    if token is not None:  # the HELLO must echo the given token's nonce
        claims = token.split(".")[1]
        nonce = json.loads(base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4)))["nonce"]
    else:
        token = make_connector_token(
            key, connector_id=connector_id, tunnel=tunnel, now=int(time.time()), nonce=nonce
        )
    url = f"{ws_url}/v1/tunnels/{tunnel}/connect"
    async with connect(
        url,
        subprotocols=[SUBPROTOCOL],  # type: ignore[list-item]
        additional_headers={"Authorization": f"Bearer {token}"},
        max_size=32 * 1024 * 1024,
    ) as ws:
        conn = Connection(Role.CONNECTOR)
        conn.receive_data(await ws.recv())
        (hello,) = conn.events()
        assert isinstance(hello, events.Hello)
        relay_keys = {key_id(relay_public_key): parse_public_key(relay_public_key)}
        verify_hello(hello, relay_keys, nonce=nonce, tunnel=tunnel, connector_id=connector_id)
        peer = Peer(connector_id, conn, ws, hello.session_id, handler)
        ready = events.Ready(
            connector_id, max_streams, caps, max_statement_bytes=max_statement_bytes
        )
        await peer.send(ready)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_reader, peer, relay_keys, nursery)
            try:
                yield peer
            finally:
                nursery.cancel_scope.cancel()
