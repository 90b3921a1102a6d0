"""The connector WebSocket: token checked before the upgrade, HELLO/READY, keepalive, refusals.

Every refusal must happen BEFORE the upgrade (an HTTP status with a JSON error body), so a client
without a valid connector token never gets a WebSocket to speak to.
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.trio.client import connect

from edgetds.devidp import DevIdP
from protocol import SUBPROTOCOL, CloseCode, Connection, Role, events
from relay.server import RunningRelay
from tests.relay._relay_helpers import (
    bearer,
    connector_token,
    peer,
    query_url,
    raw_connector,
    read_until_closed,
    wait_connections,
)
from tests.support.relays import RelayHandle, open_python_relay


def connect_url(relay: RelayHandle, tunnel: str = "demo") -> str:
    return f"{relay.ws_url}/v1/tunnels/{tunnel}/connect"


token_for = connector_token


async def refused(url: str, token: str | None, *, subprotocols: list[str] | None = None) -> Any:
    """Try the upgrade; return the refusal response (fails if the upgrade was accepted)."""
    headers = {} if token is None else bearer(token)
    with pytest.raises(InvalidStatus) as info:
        async with connect(
            url,
            subprotocols=[SUBPROTOCOL] if subprotocols is None else subprotocols,  # type: ignore[list-item]
            additional_headers=headers,
        ):
            pass  # pragma: no cover - the upgrade must be refused
    return info.value.response


@pytest.mark.parametrize(
    ("case", "status", "code"),
    [
        ("wrong_key", 401, "auth.invalid_token"),
        ("expired", 401, "auth.expired"),
        ("wrong_tunnel_audience", 401, "auth.wrong_audience"),
        ("unknown_connector", 401, "auth.unknown_issuer"),
        ("missing", 401, "auth.missing_token"),
        ("garbage", 401, "auth.invalid_token"),
    ],
)
async def test_bad_connector_tokens_are_refused_before_the_upgrade(
    relay: RelayHandle, running: RunningRelay, case: str, status: int, code: str
) -> None:
    tokens = {
        "wrong_key": lambda: token_for(relay, key=Ed25519PrivateKey.generate()),
        "expired": lambda: token_for(relay, now=int(time.time()) - 600),
        "wrong_tunnel_audience": lambda: token_for(relay, tunnel="other"),
        "unknown_connector": lambda: token_for(relay, "conn-9", key=Ed25519PrivateKey.generate()),
        "missing": lambda: None,
        "garbage": lambda: "not.a.jwt",
    }
    with trio.fail_after(10):
        response = await refused(connect_url(relay), tokens[case]())
    assert response.status_code == status
    assert json.loads(response.body)["error"]["code"] == code
    assert running.app.counters.refused[code] == 1
    assert running.app.registry.tunnels["demo"].sessions == []


async def test_replayed_connector_token_is_refused(relay: RelayHandle) -> None:
    token = token_for(relay)
    with trio.fail_after(10):
        async with connect(
            connect_url(relay),
            subprotocols=[SUBPROTOCOL],
            additional_headers=bearer(token),  # type: ignore[list-item]
        ) as ws:
            hello = Connection(Role.CONNECTOR)
            hello.receive_data(await ws.recv())
            assert isinstance(hello.events()[0], events.Hello)
        response = await refused(connect_url(relay), token)
    assert response.status_code == 401
    assert json.loads(response.body)["error"]["code"] == "auth.replay"


async def test_no_common_subprotocol_is_426(relay: RelayHandle) -> None:
    with trio.fail_after(10):
        response = await refused(connect_url(relay), token_for(relay), subprotocols=["chat"])
    assert response.status_code == 426
    assert SUBPROTOCOL in json.loads(response.body)["error"]["message"]


async def test_unknown_tunnel_and_path_are_404(relay: RelayHandle) -> None:
    with trio.fail_after(10):
        unknown_tunnel = await refused(connect_url(relay, "nope"), token_for(relay))
        unknown_path = await refused(f"{relay.ws_url}/ws", token_for(relay))
    assert unknown_tunnel.status_code == 404
    assert json.loads(unknown_tunnel.body)["error"]["code"] == "tunnel.unknown"
    assert unknown_path.status_code == 404


async def test_hello_is_signed_and_ready_registers(
    relay: RelayHandle, running: RunningRelay
) -> None:
    # open_peer verifies HELLO with protocol.verify_hello against the relay's public key.
    with trio.fail_after(10):
        async with peer(relay, "conn-2") as p:
            (session,) = running.app.registry.tunnels["demo"].sessions
            assert session.connector_id == "conn-2"
            assert session.session_id == p.session_id
        await wait_connections(running, "demo", 0)


async def test_ready_for_another_connector_is_refused(
    relay: RelayHandle, running: RunningRelay
) -> None:
    with trio.fail_after(10):
        async with raw_connector(relay, "conn-1") as (ws, conn):
            conn.send(events.Ready("conn-2", 16))
            await ws.send(conn.data_to_send())
            with pytest.raises(ConnectionClosed) as info:
                await read_until_closed(ws)
    assert info.value.rcvd is not None
    assert info.value.rcvd.code == CloseCode.AUTH_FAILED
    assert running.app.registry.tunnels["demo"].sessions == []
    assert running.app.counters.refused["connector.handshake_failed"] == 1


async def test_text_message_closes_with_1003(relay: RelayHandle) -> None:
    with trio.fail_after(10):
        async with raw_connector(relay) as (ws, conn):
            conn.send(events.Ready("conn-1", 16))
            await ws.send(conn.data_to_send())
            await ws.send("hello?")
            with pytest.raises(ConnectionClosed) as info:
                await read_until_closed(ws)
    assert info.value.rcvd is not None
    assert info.value.rcvd.code == CloseCode.UNSUPPORTED_DATA


QUICK = {
    "auth_failure_burst": 10_000,
    "ping_interval_s": 0.1,
    "dead_after_s": 0.5,
    "handshake_timeout_s": 0.5,
}


async def test_no_ready_within_the_handshake_timeout(idp: DevIdP) -> None:
    async with open_python_relay(
        tunnel="demo", connector_ids=["conn-1"], issuer=idp.issuer, limits=QUICK
    ) as (relay, running):
        with trio.fail_after(10):
            async with raw_connector(relay) as (ws, _conn):
                with pytest.raises(ConnectionClosed):
                    await read_until_closed(ws)
        assert running.app.registry.tunnels["demo"].sessions == []


async def test_silent_connector_is_declared_dead_and_its_query_ends(
    idp: DevIdP, client: httpx.AsyncClient
) -> None:
    # A connector that completed the handshake, then went silent without closing (a black hole):
    # the relay pings, hears nothing for dead_after_s, drops it, and the query in flight ends
    # with transport.lost instead of hanging.
    async with open_python_relay(
        tunnel="demo", connector_ids=["conn-1"], issuer=idp.issuer, limits=QUICK
    ) as (relay, running):
        with trio.fail_after(10):
            async with raw_connector(relay) as (ws, conn):
                conn.send(events.Ready("conn-1", 16))
                await ws.send(conn.data_to_send())
                await wait_connections(running, "demo", 1)
                started = trio.current_time()
                response = await client.post(
                    query_url(relay), json={"sql": "select 1"}, headers=bearer(idp.mint(sub="a"))
                )
                waited = trio.current_time() - started
                assert running.app.registry.tunnels["demo"].sessions == []
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "transport.lost"
    assert waited < 5
