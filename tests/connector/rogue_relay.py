"""A scripted relay for connector tests: a real WebSocket server speaking protocol/ as the relay.

It checks the connector's upgrade token with protocol/'s verifier, signs HELLO with whatever key
the test chooses (the pinned one, or a wrong one), and lets the test send QUERY frames with good,
tampered or replayed attestations and good or bad user tokens, acting as a rogue relay that holds
the pinned key. Results are collected per stream with credit granted as bytes are read, so flow
control is exercised as with the real relay. It is a test peer, not a stand-in for relay/.
"""

from __future__ import annotations

import functools
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from websockets.datastructures import Headers
from websockets.http11 import Response
from websockets.trio.server import ServerConnection, serve

from identity.keys import key_id
from protocol import (
    SESSION_CAP,
    SUBPROTOCOL,
    AuthError,
    Connection,
    Limits,
    RemoteProtocolError,
    Role,
    events,
    make_attestation,
    sign_hello,
    verify_connector_token,
)


@dataclass
class StreamResult:
    stream_id: int
    query_id: str
    query: events.Query
    chunks: list[tuple[str, bytes]] = field(default_factory=list)
    done: trio.Event = field(default_factory=trio.Event)

    @property
    def body(self) -> bytes:
        return b"".join(data for _, data in self.chunks)

    @property
    def terminal(self) -> str:
        return self.chunks[-1][0] if self.chunks else ""


class RogueSession:
    """One accepted connector connection, seen from the relay side."""

    def __init__(self, relay: RogueRelay, ws: ServerConnection, nonce: str) -> None:
        self.relay = relay
        self.ws = ws
        self.nonce = nonce
        self.session_id = str(uuid.uuid4())
        self.conn = Connection(Role.RELAY, limits=relay.limits)
        self.ready = trio.Event()
        self.closed = trio.Event()
        self.streams: dict[int, StreamResult] = {}
        self.received: list[events.Event] = []
        #: (event type, stream id or 0) of each WebSocket message received, in order
        self.messages: list[list[tuple[str, int]]] = []
        self.close_code: int | None = None
        self.read_delay = 0.0  # seconds to wait before granting credit for each chunk
        self.grant_credit = True  # False: a client that never reads (no CREDIT ever)
        self._lock = trio.Lock()

    async def flush(self) -> None:
        async with self._lock:
            data = self.conn.data_to_send()
            if data:
                await self.ws.send(data)

    async def send(self, event: events.Event) -> None:
        async with self._lock:
            self.conn.send(event)
            data = self.conn.data_to_send()
            await self.ws.send(data)

    async def query(
        self,
        *,
        token: str,
        sql: str | None = None,
        query: str | None = None,
        params: Mapping[str, Any] | None = None,
        options: Mapping[str, Any] | None = None,
        query_id: str | None = None,
        attestation: Mapping[str, Any] | None = None,
        tamper: Mapping[str, Any] | None = None,
        key: Ed25519PrivateKey | None = None,
        now: float | None = None,
        session_id: str | None = None,
        session: Mapping[str, Any] | None = None,
    ) -> StreamResult:
        """Open a stream with a QUERY; by default correctly attested with the relay key."""
        params = dict(params or {})
        options = dict(options or {"max_rows": None, "timeout_ms": None})
        query_id = query_id or str(uuid.uuid4())
        signing_key = key or self.relay.relay_key
        if attestation is None:
            attestation = make_attestation(
                signing_key,
                relay_key_id=key_id(signing_key),
                session_id=session_id or self.session_id,
                query_id=query_id,
                token=token,
                sql=sql,
                query=query,
                params=params,
                options=options,
                now=time.time() if now is None else now,
                session=session,
            )
        q = events.Query(
            stream_id=self.conn.next_stream_id,
            query_id=query_id,
            token=token,
            sql=sql,
            query=query,
            params=params,
            options=options,
            attestation=dict(attestation),
            session=dict(session) if session is not None else None,
        )
        if tamper:
            q = events.Query(**{**q.__dict__, **tamper})
        result = StreamResult(q.stream_id, query_id, q)
        self.streams[q.stream_id] = result
        await self.send(q)
        return result

    async def cancel(self, stream_id: int, reason: str = "client went away") -> None:
        await self.send(events.Cancel(stream_id, reason))

    async def run(self) -> None:
        limits = self.relay.limits
        hello = sign_hello(
            self.relay.hello_key or self.relay.relay_key,
            relay_key_id=key_id(self.relay.hello_key or self.relay.relay_key),
            session_id=self.session_id,
            tunnel=self.relay.hello_tunnel or self.relay.tunnel,
            connector_id=self.relay.hello_connector_id or self.relay.connector_id,
            nonce=self.relay.hello_nonce or self.nonce,
            limits=limits,
            caps=(SESSION_CAP,),
        )
        await self.send(events.Hello(fields=hello))
        try:
            while True:
                message = await self.ws.recv()
                assert isinstance(message, bytes)
                try:
                    self.conn.receive_data(message)
                except RemoteProtocolError:
                    await self.flush()
                    raise
                received = self.conn.events()
                self.messages.append(
                    [(type(e).__name__, getattr(e, "stream_id", 0)) for e in received]
                )
                for event in received:
                    self.received.append(event)
                    await self._on_event(event)
                await self.flush()
        except Exception:  # the connection ended; the test inspects what was received
            pass
        finally:
            self.close_code = self.ws.close_code
            self.closed.set()
            for result in self.streams.values():
                result.done.set()

    async def _on_event(self, event: events.Event) -> None:
        if isinstance(event, events.Ready):
            self.ready.set()
            return
        kinds = {events.Columns: "columns", events.Rows: "rows", events.Done: "done"}
        kind = kinds.get(type(event), "error" if isinstance(event, events.Error) else None)
        if kind is None:
            return
        sid = event.stream_id  # type: ignore[attr-defined]
        data = event.data  # type: ignore[attr-defined]
        result = self.streams[sid]
        result.chunks.append((kind, data))
        if kind in ("columns", "rows"):
            if not self.grant_credit:
                return
            if self.read_delay:
                await trio.sleep(self.read_delay)
            self.conn.consumed(sid, len(data))
        else:
            result.done.set()


class RogueRelay:
    def __init__(
        self,
        *,
        tunnel: str,
        connector_id: str,
        connector_public_key: Ed25519PublicKey,
        relay_key: Ed25519PrivateKey,
        limits: Limits,
    ) -> None:
        self.tunnel = tunnel
        self.connector_id = connector_id
        self.connector_public_key = connector_public_key
        self.relay_key = relay_key
        self.limits = limits
        self.ws_url = ""
        # knobs to make the HELLO wrong
        self.hello_key: Ed25519PrivateKey | None = None
        self.hello_nonce: str | None = None
        self.hello_tunnel: str | None = None
        self.hello_connector_id: str | None = None
        self.sessions: list[RogueSession] = []
        self.upgrades_refused = 0
        self._new_session = trio.Event()
        self._nonces: dict[int, str] = {}

    async def wait_session(self, count: int = 1) -> RogueSession:
        while len(self.sessions) < count:
            await self._new_session.wait()
        return self.sessions[count - 1]

    def _check_upgrade(self, connection: ServerConnection, request: Any) -> Response | None:
        auth = request.headers.get("Authorization", "")
        try:
            claims = verify_connector_token(
                auth.removeprefix("Bearer "),
                {self.connector_id: self.connector_public_key},
                tunnel=self.tunnel,
                now=time.time(),
            )
        except AuthError as exc:
            self.upgrades_refused += 1
            body = f'{{"error": {{"code": "{exc.error_code}"}}}}'.encode()
            return Response(
                401, "Unauthorized", Headers({"Content-Type": "application/json"}), body
            )
        self._nonces[id(connection)] = claims.nonce
        return None

    async def _handler(self, ws: ServerConnection) -> None:
        session = RogueSession(self, ws, self._nonces.pop(id(ws)))
        self.sessions.append(session)
        self._new_session.set()
        self._new_session = trio.Event()
        await session.run()


@asynccontextmanager
async def open_rogue_relay(
    *,
    tunnel: str,
    connector_id: str,
    connector_public_key: Ed25519PublicKey,
    relay_key: Ed25519PrivateKey,
    limits: Limits | None = None,
    port: int = 0,
) -> AsyncIterator[RogueRelay]:
    relay = RogueRelay(
        tunnel=tunnel,
        connector_id=connector_id,
        connector_public_key=connector_public_key,
        relay_key=relay_key,
        limits=limits or Limits(),
    )
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            lambda task_status: serve(
                relay._handler,
                port,
                host="127.0.0.1",
                subprotocols=[SUBPROTOCOL],  # type: ignore[list-item]
                process_request=relay._check_upgrade,
                compression=None,
                max_size=4 * 1024 * 1024,
                task_status=task_status,
            )
        )
        port = server.listeners[0].socket.getsockname()[1]
        relay.ws_url = f"ws://127.0.0.1:{port}"
        try:
            yield relay
        finally:
            await server.aclose()
            nursery.cancel_scope.cancel()


class FreezableProxy:
    """A TCP proxy on 127.0.0.1 that can black-hole traffic without closing the sockets (a
    network cut that neither side is told about)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.frozen = False
        self._thaw = trio.Event()
        self.connections = 0

    def freeze(self) -> None:
        self.frozen = True
        self._thaw = trio.Event()

    def thaw(self) -> None:
        self.frozen = False
        self._thaw.set()

    async def _pump(self, src: trio.SocketStream, dst: trio.SocketStream) -> None:
        try:
            while True:
                data = await src.receive_some(65536)
                if not data:
                    break
                while self.frozen:
                    await self._thaw.wait()  # the bytes are swallowed by the "network"
                    data = b""
                if data:
                    await dst.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            with trio.CancelScope(shield=True):
                await dst.aclose()

    async def _handle(self, client: trio.SocketStream) -> None:
        self.connections += 1
        try:
            upstream = await trio.open_tcp_stream("127.0.0.1", self.target_port)
        except OSError:
            await client.aclose()
            return
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._pump, client, upstream)
            nursery.start_soon(self._pump, upstream, client)


@asynccontextmanager
async def open_proxy(target_port: int) -> AsyncIterator[FreezableProxy]:
    proxy = FreezableProxy(target_port)
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, proxy._handle, 0, host="127.0.0.1")
        )
        proxy.port = listeners[0].socket.getsockname()[1]
        try:
            yield proxy
        finally:
            nursery.cancel_scope.cancel()
