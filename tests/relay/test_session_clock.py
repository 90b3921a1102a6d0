"""The relay's timers under trio's MockClock (autojump): keepalive PINGs, the dead-peer deadline
and the expiry of a drain (relay/session.py), at the production defaults (15 s / 45 s), and the
admission wait of a full tunnel (relay/registry.py), in no real time.

The relay's `ConnectorSession` runs over an in-memory WebSocket (two trio memory channels carrying
the ASGI messages `WebSocketIO` speaks); the far end is a real `protocol.Connection` in the
connector role, which answers PINGs with PONGs by itself. Nothing else is involved, so every
deadline lands exactly where the session schedules it in virtual time.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
import trio
import trio.testing
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from protocol import CloseCode, Connection, ErrorCode, Role, events
from relay.config import Limits, TunnelConfig
from relay.registry import RouteRefused, TunnelState
from relay.session import ConnectorSession, WebSocketIO


@dataclass
class FarEnd:
    """The connector's end of the in-memory WebSocket: a real connector-role `Connection`."""

    to_relay: trio.MemorySendChannel[dict[str, Any]]
    from_relay: trio.MemoryReceiveChannel[dict[str, Any]]
    conn: Connection = field(default_factory=lambda: Connection(Role.CONNECTOR))
    #: the READY's max_streams
    max_streams: int = 16
    #: trio time of every PING the relay sent
    pings: list[float] = field(default_factory=list)
    goaways: list[events.GoAway] = field(default_factory=list)
    close_code: int | None = None
    #: while False the far end reads but sends nothing (a black-holed connector)
    answering: bool = True
    closed: trio.Event = field(default_factory=trio.Event)

    async def serve(self) -> None:
        """READY on HELLO, PONG on PING (while answering), until the relay closes the socket."""
        async for message in self.from_relay:
            if message["type"] == "websocket.close":
                self.close_code = message["code"]
                break
            self.conn.receive_data(message["bytes"])
            for event in self.conn.events():
                if isinstance(event, events.Hello):
                    self.conn.send(events.Ready("conn-1", self.max_streams))
                elif isinstance(event, events.Ping):
                    self.pings.append(trio.current_time())
                elif isinstance(event, events.GoAway):
                    self.goaways.append(event)
            data = self.conn.data_to_send()
            if data and self.answering:
                await self.to_relay.send({"type": "websocket.receive", "bytes": data})
        self.closed.set()


@asynccontextmanager
async def session_over_memory(
    limits: Limits, nursery: trio.Nursery, *, max_streams: int = 16, connector_key_hex: str = ""
) -> AsyncIterator[tuple[ConnectorSession, FarEnd]]:
    """A handshaken relay session serving in `nursery`, and its far end."""
    to_relay, relay_in = trio.open_memory_channel[dict[str, Any]](math.inf)
    relay_out, from_relay = trio.open_memory_channel[dict[str, Any]](math.inf)
    far = FarEnd(to_relay, from_relay, max_streams=max_streams)
    session = ConnectorSession(
        WebSocketIO(relay_in.receive, relay_out.send),
        tunnel="demo",
        connector_id="conn-1",
        nonce="nonce",
        relay_key=Ed25519PrivateKey.generate(),
        relay_key_id="relay-key",
        limits=limits,
        peer="127.0.0.1",
        connector_key_hex=connector_key_hex,
    )
    nursery.start_soon(far.serve)
    await session.handshake()
    nursery.start_soon(lambda: session.run(on_ready=lambda: None))
    yield session, far


DEFAULTS = Limits()


async def test_defaults_are_what_these_tests_assume() -> None:
    assert (DEFAULTS.ping_interval_s, DEFAULTS.dead_after_s) == (15.0, 45.0)


async def test_keepalive_pings_every_interval_and_pongs_keep_the_connection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(3600):
        async with trio.open_nursery() as nursery:
            async with session_over_memory(DEFAULTS, nursery) as (session, far):
                start = trio.current_time()
                await trio.sleep(607.5)  # virtual: ten minutes, far longer than dead_after_s
                assert not session.closed
                assert session.rtt_ms is not None  # PONGs came back and were matched
                assert [round(t - start, 6) for t in far.pings] == [15.0 * n for n in range(1, 41)]
                session.abort()
            await far.closed.wait()


async def test_a_silent_connector_is_declared_dead_after_dead_after_s(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    with trio.fail_after(3600):
        async with trio.open_nursery() as nursery:
            async with session_over_memory(DEFAULTS, nursery) as (session, far):
                far.answering = False  # a black hole: it reads the PINGs, answers nothing
                silent_since = trio.current_time()
                await far.closed.wait()
                dead_after = trio.current_time() - silent_since
    assert session.closed
    assert dead_after == pytest.approx(45.0)
    assert [round(t - silent_since, 6) for t in far.pings] == [15.0, 30.0]
    assert far.close_code == CloseCode.GOING_AWAY
    assert "connector.dead" in caplog.text


async def test_a_drained_connection_the_connector_keeps_open_is_closed_when_the_drain_expires(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    # The connector keeps answering PINGs (alive) but never closes: the relay closes it itself
    # close_after_s after the drain, with a GOAWAY saying why.
    with trio.fail_after(3600):
        async with trio.open_nursery() as nursery:
            async with session_over_memory(DEFAULTS, nursery) as (session, far):
                await trio.sleep(7)  # virtual: between two PINGs
                drained_at = trio.current_time()
                session.drain("key unregistered", close_after_s=35.5)
                await far.closed.wait()
                closed_after = trio.current_time() - drained_at
    assert session.draining
    assert session.closed
    assert closed_after == pytest.approx(35.5)
    assert [g.code for g in far.goaways] == [str(ErrorCode.AUTH_CONNECTOR_REJECTED)]
    assert "connector.drain_expired" in caplog.text


async def test_a_full_tunnel_admits_a_waiting_query_when_a_slot_frees_or_refuses_it_at_the_wait(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # One connection with one stream: the first query holds it, the next ones wait for it.
    key = Ed25519PrivateKey.generate().public_key()
    tunnel = TunnelState(
        TunnelConfig(name="demo", connectors={"conn-1": (key,)}), query_id_ttl_s=600
    )
    with trio.fail_after(3600):
        async with trio.open_nursery() as nursery:
            async with session_over_memory(
                DEFAULTS,
                nursery,
                max_streams=1,
                connector_key_hex=key.public_bytes(Encoding.Raw, PublicFormat.Raw).hex(),
            ) as (session, _far):
                tunnel.add(session)
                async with tunnel.slot("alice", wait_s=5.0) as first:
                    assert first.waited_s == 0
                    started = trio.current_time()
                    with pytest.raises(RouteRefused) as refused:
                        async with tunnel.slot("bob", wait_s=5.0):
                            pass  # pragma: no cover
                    assert trio.current_time() - started == pytest.approx(5.0)
                    assert refused.value.code == "limits.too_many_queries"
                # a query that waits gets the slot the moment the one holding it ends
                async with trio.open_nursery() as waiters:
                    waited: list[float] = []

                    async def wait_for_a_slot() -> None:
                        async with tunnel.slot("carol", wait_s=30.0) as slot:
                            waited.append(slot.waited_s)

                    async with tunnel.slot("alice", wait_s=5.0):
                        waiters.start_soon(wait_for_a_slot)
                        await trio.sleep(3.0)  # virtual: the next query waits meanwhile
                assert waited == [pytest.approx(3.0)]
                session.abort()
