"""Durable Object lifecycle on the real runtime: hibernation between queries, and a reset.

Hibernation: workerd evicts an idle Durable Object whose only connections are hibernatable
WebSockets after about 10 s (as Cloudflare does), keeping the sockets open. The test hook
``_test/state`` reports the object's instance id (made in its constructor), so a new id with the
same connector socket still serving proves the object was rebuilt from the socket attachments.

Reset: ``_test/abort`` calls ``ctx.abort()`` inside the object, which is what a deploy or an
eviction does: every socket and request of the object dies.
"""

from __future__ import annotations

import httpx
import pytest
import trio

from edgetds.devidp import DevIdP
from protocol import events
from tests.support.protocol_peer import Peer
from tests.support.relays import post_streamed
from tests.support.worker_relay import WorkerRelay, idle_until_hibernated
from tests.worker.helpers import bearer, ndjson, peer, query_url

#: workerd hibernates an idle object after ~10 s; give it a margin.


async def run_query(client: httpx.AsyncClient, relay: WorkerRelay, token: str) -> list[object]:
    response = await client.post(query_url(relay), json={"sql": "select n"}, headers=bearer(token))
    assert response.status_code == 200, response.text
    return ndjson(response.text)


@pytest.mark.timeout(60)
async def test_hibernation_between_queries_keeps_the_connector(
    relay: WorkerRelay, idp: DevIdP, client: httpx.AsyncClient
) -> None:
    with trio.fail_after(40):
        async with peer(relay) as p:
            lines = await run_query(client, relay, idp.mint(sub="h"))
            assert lines[-1]["done"]["rows"] == 3  # type: ignore[index]
            before = await relay.do_state(client)
            await idle_until_hibernated()
            # A connector PING wakes the object first: answered from the attachment state.
            await p.send(events.Ping(b"12345678"))
            lines = await run_query(client, relay, idp.mint(sub="h"))
            after = await relay.do_state(client)
            assert after["instance"] != before["instance"], "the object was not rebuilt"
            assert after["connections"] == 1
            assert lines[-1]["done"]["rows"] == 3  # type: ignore[index]
            # The stream id continued from the attachment (1, then 2): ids never reused.
            assert [q.stream_id for q in p.queries] == [1, 2]
            assert p.attestation_errors == []


async def test_reset_mid_stream_gives_a_terminal_error_and_connector_reconnects(
    relay: WorkerRelay, idp: DevIdP, client: httpx.AsyncClient
) -> None:
    row_received = trio.Event()

    async def stalls(p: Peer, q: events.Query) -> None:
        await p.columns(q.stream_id)
        await p.rows(q.stream_id, [[1]])
        await trio.sleep_forever()

    async def abort_when_received() -> None:
        await row_received.wait()
        response = await client.post(relay.hook_url("abort"))
        assert response.status_code >= 500 or response.status_code == 200

    with trio.fail_after(30):
        async with peer(relay, handler=stalls) as p:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(abort_when_received)
                response = await post_streamed(
                    client, query_url(relay), json={"sql": "select n"},
                    headers=bearer(idp.mint(sub="r")), lines=2, received=row_received,
                )  # fmt: skip
            assert response.status_code == 200
            lines = ndjson(response.text)
            assert lines[1] == [1]
            assert lines[-1]["error"]["code"] == "transport.lost"
            await p.closed.wait()  # the reset closed the connector socket too
        # The connector reconnects (a fresh token; the object is new) and queries work again.
        async with peer(relay):
            lines = await run_query(client, relay, idp.mint(sub="r"))
            assert lines[-1]["done"]["rows"] == 3  # type: ignore[index]
