"""Relay lifecycle: graceful shutdown (DRAIN to connectors), GOAWAY, protocol errors, TLS."""

from __future__ import annotations

import functools
import ssl
import time
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
import trio
import trustme
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.trio.client import connect

from edgetds.devidp import DevIdP
from identity.keys import encode_public_key
from protocol import SUBPROTOCOL, CloseCode, Connection, Role, events, make_connector_token
from relay.server import RunningRelay, open_relay, serve_relay
from tests.relay._relay_helpers import (
    bearer,
    ndjson,
    peer,
    query_url,
    raw_connector,
    read_until_closed,
    wait_connections,
)
from tests.support.protocol_peer import Peer
from tests.support.relays import RelayHandle, open_python_relay, relay_config


async def test_shutdown_drains_connectors_and_lets_queries_finish(
    idp: DevIdP, client: httpx.AsyncClient
) -> None:
    config, keys = relay_config(tunnel="demo", connector_ids=["conn-1"], issuer=idp.issuer)
    stop = trio.Event()
    finish = trio.Event()

    async def slow(p: Peer, q: events.Query) -> None:
        await p.columns(q.stream_id)
        await finish.wait()
        await p.rows(q.stream_id, [[7]])
        await p.done(q.stream_id, rows=1, query_id=q.query_id)

    results: list[httpx.Response] = []
    answered = trio.Event()

    async def ask() -> None:
        results.append(
            await client.post(
                query_url(handle), json={"sql": "select 7"}, headers=bearer(idp.mint(sub="a"))
            )
        )
        answered.set()

    with trio.fail_after(15):
        async with trio.open_nursery() as nursery:
            running: RunningRelay = await nursery.start(
                functools.partial(serve_relay, config, shutdown_trigger=stop.wait, grace_s=10)
            )
            handle = RelayHandle(
                "python",
                running.http_url,
                running.ws_url,
                "demo",
                encode_public_key(config.private_key),
                keys,
            )
            async with peer(handle, handler=slow) as p:
                nursery.start_soon(ask)
                await p.wait_query()
                stop.set()  # SIGTERM in the CLI
                (session,) = running.app.registry.tunnels["demo"].sessions
                await session.wait_draining()
                # The connector was told (DRAIN crossed the wire) and gets no new query.
                await p.drained.wait()
                refused = await client.post(
                    query_url(handle), json={"sql": "select 1"}, headers=bearer(idp.mint(sub="b"))
                )
                assert refused.status_code == 503
                assert refused.json()["error"]["code"] == "connector.draining"
                # A connector reconnecting to this relay now is sent elsewhere.
                with pytest.raises(InvalidStatus) as info:
                    async with peer(handle):
                        pass  # pragma: no cover
                assert info.value.response.status_code == 503
                finish.set()
                await answered.wait()
            # serve_relay returned once the in-flight query ended (well before grace_s).
    (done,) = results
    assert done.status_code == 200
    assert ndjson(done.text)[1] == [7]
    assert len(p.queries) == 1


async def test_goaway_from_the_connector_stops_routing_to_it(
    relay: RelayHandle, running: RunningRelay, idp: DevIdP, client: httpx.AsyncClient
) -> None:
    with trio.fail_after(10):
        async with peer(relay) as p:
            await p.send(events.GoAway("connector.draining", "restarting", 0))
            await wait_connections(running, "demo", 0)
            response = await client.post(
                query_url(relay), json={"sql": "select 1"}, headers=bearer(idp.mint(sub="a"))
            )
    assert response.status_code == 503
    assert p.queries == []


async def test_a_broken_frame_gets_goaway_and_close_1002(
    relay: RelayHandle, running: RunningRelay
) -> None:
    with trio.fail_after(10):
        async with raw_connector(relay, ready=True) as (ws, conn):
            await wait_connections(running, "demo", 1)
            await ws.send(bytes([2, 0x31, 0, 0, 0, 0, 0, 0, 0, 0, 0, 8]) + b"12345678")
            goaway = await ws.recv()
            with pytest.raises(ConnectionClosed) as info:
                await ws.recv()
    conn.receive_data(goaway)
    (event,) = [e for e in conn.events() if isinstance(e, events.GoAway)]
    assert event.code == "protocol.error"
    assert info.value.rcvd is not None
    assert info.value.rcvd.code == CloseCode.PROTOCOL_ERROR
    assert running.app.registry.tunnels["demo"].sessions == []


async def test_tls_serves_https_and_wss(idp: DevIdP, tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "relay.pem"))
    config, keys = relay_config(tunnel="demo", connector_ids=["conn-1"], issuer=idp.issuer)
    config = replace(
        config, tls_cert_file=str(tmp_path / "relay.pem"), tls_key_file=str(tmp_path / "relay.pem")
    )
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    with trio.fail_after(15):
        async with open_relay(config) as running:
            assert running.http_url.startswith("https://127.0.0.1:")
            assert running.ws_url.startswith("wss://127.0.0.1:")
            token = make_connector_token(
                keys["conn-1"], connector_id="conn-1", tunnel="demo", now=int(time.time())
            )
            async with connect(
                f"{running.ws_url}/v1/tunnels/demo/connect",
                subprotocols=[SUBPROTOCOL],  # type: ignore[list-item]
                additional_headers=bearer(token),
                ssl=client_ctx,
            ) as ws:
                conn = Connection(Role.CONNECTOR)
                conn.receive_data(await ws.recv())
                assert isinstance(conn.events()[0], events.Hello)
            async with httpx.AsyncClient(verify=client_ctx) as client:
                health = await client.get(f"{running.http_url}/healthz")
                assert health.status_code == 200
            async with httpx.AsyncClient(verify=ssl.create_default_context()) as untrusting:
                with pytest.raises(httpx.ConnectError):
                    await untrusting.get(f"{running.http_url}/healthz")


async def test_a_connector_that_never_answers_gets_cancelled_and_504(
    idp: DevIdP, client: httpx.AsyncClient
) -> None:
    async def mute(p: Peer, q: events.Query) -> None:
        await trio.sleep_forever()

    async def stall_mid_stream(p: Peer, q: events.Query) -> None:
        await p.columns(q.stream_id)
        await trio.sleep_forever()

    limits = {"deadline_grace_ms": 200}
    async with open_python_relay(
        tunnel="demo", connector_ids=["conn-1"], issuer=idp.issuer, limits=limits
    ) as (relay, _running):
        with trio.fail_after(10):
            async with peer(relay, handler=mute) as p:
                started = trio.current_time()
                response = await client.post(
                    query_url(relay),
                    json={"sql": "waitfor delay '1:00'", "timeout_ms": 300},
                    headers=bearer(idp.mint(sub="a")),
                )
                assert trio.current_time() - started < 3
                assert response.status_code == 504
                assert response.json()["error"]["code"] == "query.timeout"
                await p.wait_cancels(1)
                p.handler = stall_mid_stream
                response = await client.post(
                    query_url(relay),
                    json={"sql": "select slowly", "timeout_ms": 300},
                    headers=bearer(idp.mint(sub="a")),
                )
                assert response.status_code == 200
                assert ndjson(response.text)[-1]["error"]["code"] == "query.timeout"
                await p.wait_cancels(2)


async def test_garbage_from_a_connector_never_takes_the_relay_down(
    relay: RelayHandle, running: RunningRelay, idp: DevIdP, client: httpx.AsyncClient
) -> None:
    import random

    rng = random.Random(7)
    blobs = [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64))) for _ in range(12)]
    # Valid headers with hostile payloads / types / streams, too.
    blobs += [
        bytes([1, 0x20, 0, 0, 0, 0, 0, 9, 0, 0, 0, 2]) + b"{}",  # COLUMNS on a stream never opened
        bytes([1, 0x7F, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),  # unknown type
        bytes([1, 0x31, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF]),  # PING claiming 4 GiB
        bytes([1, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]) + b"{}",  # a second READY
    ]
    with trio.fail_after(30):
        for blob in blobs:
            async with raw_connector(relay, "conn-2", ready=True) as (ws, _conn):
                await wait_connections(running, "demo", 1)
                await ws.send(blob)
                with pytest.raises(ConnectionClosed):
                    await read_until_closed(ws)
            await wait_connections(running, "demo", 0)
        # Still serving, with a well-behaved connector.
        async with peer(relay) as p:
            response = await client.post(
                query_url(relay), json={"sql": "select 1"}, headers=bearer(idp.mint(sub="a"))
            )
    assert response.status_code == 200
    assert len(p.queries) == 1


async def test_a_ping_flood_is_cut_off(relay: RelayHandle, running: RunningRelay) -> None:
    with trio.fail_after(10):
        async with raw_connector(relay, ready=True) as (ws, conn):
            await wait_connections(running, "demo", 1)
            # A few PINGs are answered with PONGs ...
            for i in range(3):
                conn.send(events.Ping(b"%08d" % i))
            await ws.send(conn.data_to_send())
            pongs: list[events.Event] = []
            while len(pongs) < 3:
                conn.receive_data(await ws.recv())
                pongs += [e for e in conn.events() if isinstance(e, events.Pong)]
            # ... a flood (each PING would cost the relay a queued PONG) is refused.
            for i in range(10_000):
                conn.send(events.Ping(b"%08d" % i))
            await ws.send(conn.data_to_send())
            with pytest.raises(ConnectionClosed) as info:
                await read_until_closed(ws)
    assert info.value.rcvd is not None
    assert info.value.rcvd.code == CloseCode.PROTOCOL_ERROR
    await wait_connections(running, "demo", 0)
