"""A tunnel split over K Durable Objects (TUNNEL_SHARDS), connector DRAIN, and the handshake
deadline."""

from __future__ import annotations

import httpx
import trio

from edgetds.devidp import DevIdP
from protocol import events
from tests.support.protocol_peer import Peer
from tests.support.waiting import eventually
from tests.support.worker_relay import open_worker_relay
from tests.worker.helpers import CONNECTORS, TUNNEL, bearer, ndjson, peer, query_url


async def test_two_shards_serve_every_query_and_status_aggregates(
    idp: DevIdP, client: httpx.AsyncClient
) -> None:
    async with open_worker_relay(
        tunnel=TUNNEL, connector_ids=CONNECTORS, issuer=idp.issuer, shards=2
    ) as relay:
        with trio.fail_after(40):
            # Each connection lands on the shard its token's jti hashes to; open connections until
            # both shards hold one (what HA connections do in production), then query many times:
            # a shard without a connector hands the query to the other one.
            states: list[dict[str, int]] = []
            async with peer(relay, "conn-1") as p1:
                for shard in (0, 1):
                    states.append(await relay.do_state(client, shard=shard))
                codes = []
                for _ in range(8):
                    response = await client.post(
                        query_url(relay),
                        json={"sql": "select 1"},
                        headers=bearer(idp.mint(sub="k")),
                    )
                    codes.append(response.status_code)
                    assert ndjson(response.text)[-1]["done"]["rows"] == 3
                assert codes == [200] * 8
                assert len(p1.queries) == 8
                assert sorted(s["connections"] for s in states) == [0, 1]
                async with peer(relay, "conn-2"):
                    status = await client.get(
                        f"{relay.handle.http_url}/v1/tunnels/demo/status",
                        headers=bearer(idp.mint(sub="ops")),
                    )
                    body = status.json()
                    assert (body["connectors"], body["connections"], body["shards"]) == (2, 2, 2)


async def test_drained_connector_gets_no_new_queries_and_refusals_are_replaced(
    idp: DevIdP, client: httpx.AsyncClient
) -> None:
    async def refuse_draining(p: Peer, q: events.Query) -> None:
        # The query raced the DRAIN: refuse it unexecuted, as SPEC 6.4 says.
        await p.error(q.stream_id, "connector.draining", "draining", q.query_id)

    async with open_worker_relay(
        tunnel=TUNNEL, connector_ids=CONNECTORS, issuer=idp.issuer
    ) as relay:
        with trio.fail_after(30):
            async with (
                peer(relay, "conn-1", handler=refuse_draining) as p1,
                peer(relay, "conn-2") as p2,
            ):
                for _ in range(4):
                    response = await client.post(
                        query_url(relay),
                        json={"sql": "select 1"},
                        headers=bearer(idp.mint(sub="d")),
                    )
                    assert response.status_code == 200, response.text
                    assert ndjson(response.text)[-1]["done"]["rows"] == 3
                # conn-1 refused at most one (then it is marked draining); conn-2 ran all four.
                assert len(p1.queries) <= 1
                assert len(p2.queries) == 4
                await p2.send(events.Drain("maintenance"))

                async def conn_2_draining() -> bool:  # conn-1 too if it refused one
                    state = await relay.do_state(client)
                    return bool(state["draining"] == 1 + len(p1.queries))

                await eventually(conn_2_draining)
                response = await client.post(
                    query_url(relay), json={"sql": "select 1"}, headers=bearer(idp.mint(sub="d"))
                )
                assert response.status_code == 503
                assert response.json()["error"]["code"] == "connector.draining"


async def test_connector_that_never_sends_ready_is_closed(idp: DevIdP) -> None:
    from websockets.trio.client import connect

    from protocol import make_connector_token

    async with open_worker_relay(
        tunnel=TUNNEL,
        connector_ids=CONNECTORS,
        issuer=idp.issuer,
        limits={"handshake_timeout_s": 1},
    ) as relay:
        h = relay.handle
        import time

        token = make_connector_token(
            h.connector_keys["conn-1"], connector_id="conn-1", tunnel=TUNNEL, now=int(time.time())
        )
        with trio.fail_after(8):
            async with connect(
                f"{h.ws_url}/v1/tunnels/{TUNNEL}/connect",
                subprotocols=["edgetds.v1"],  # type: ignore[list-item]
                additional_headers={"Authorization": f"Bearer {token}"},
                close_timeout=0.5,
            ) as ws:
                await ws.recv()  # HELLO; then stay silent
                goaway = await ws.recv()
                # GOAWAY protocol.error within the deadline. (workerd delivers a close() made in
                # an alarm handler only when the object is next evicted, ~10 s later; the GOAWAY
                # already told the connector the connection is over, so it closes itself.)
                assert isinstance(goaway, bytes)
                assert goaway[1] == 0x34
                assert b"protocol.error" in goaway
