"""Conformance: one credit policy and one draining policy at both relays (Python and Worker under
workerd), the ones of the sans-I/O connection both run (protocol/_connection.py and
relay/worker/src/connection.js; protocol/vectors/sequences.json checks the two agree). The
connector's side is a protocol peer that records every CREDIT and QUERY it receives.

- Credit: CREDIT re-grants bytes once half a window was consumed (SPEC 7.x "Flow control"); a
  connection that carried a small result gets no connection credit when the stream ends (the
  window stays smaller until half of it was consumed), and a large one gets it in half-window
  increments.
- Draining: an ERROR connector.draining before any result is the connector refusing the query
  unexecuted (SPEC 6.4): that connection gets no further QUERY, and the query is placed on another
  connection (the refusal is the answer when none is left).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import httpx
import pytest
import trio

from edgetds.devidp import DevIdP, open_dev_idp
from protocol import Limits, events
from tests.conformance.test_sizes import BASE_LIMITS, peer, start
from tests.support.conformance import RELAYS
from tests.support.protocol_peer import Peer, QueryHandler, open_peer, rows_handler
from tests.support.relays import RelayHandle

WINDOW = Limits().connection_window
ROW = ["x" * 1000]


@pytest.fixture
async def idp() -> AsyncIterator[DevIdP]:
    async with open_dev_idp() as idp:
        yield idp


async def kilobytes_handler(peer: Peer, query: events.Query) -> None:
    """Answer `select <n>` with n rows of about 1 KB each, in frames of about 100 KB."""
    assert query.sql is not None
    n = int(query.sql.split()[1])
    await peer.columns(query.stream_id)
    for start_row in range(0, n, 100):
        await peer.rows(query.stream_id, [ROW] * min(100, n - start_row))
    await peer.done(query.stream_id, rows=n, query_id=query.query_id)


async def refuse(p: Peer, q: events.Query) -> None:
    """Refuse every query unexecuted: the connector drains (SPEC 6.4)."""
    await p.error(q.stream_id, "connector.draining", "draining", q.query_id)


async def run(
    client: httpx.AsyncClient, relay: RelayHandle, idp: DevIdP, sql: str
) -> httpx.Response:
    url = f"{relay.http_url}/v1/tunnels/{relay.tunnel}/query"
    headers = {"Authorization": f"Bearer {idp.mint(sub='alice')}"}
    return await client.post(url, json={"sql": sql}, headers=headers)


@pytest.mark.parametrize("kind", ["python", "worker"])
async def test_connection_credit_comes_in_half_window_increments(kind: str, idp: DevIdP) -> None:
    with trio.fail_after(60):
        async with (
            start(kind, idp) as relay,
            peer(relay, handler=kilobytes_handler) as p,
            httpx.AsyncClient(timeout=30) as client,
        ):
            small = await run(client, relay, idp, "select 600")  # ~600 KB: below half a window
            assert small.status_code == 200
            assert small.text.count("\n") == 602
            # Frames reach the peer in order: every CREDIT the relay sent for the first query's
            # bytes (the client read them all) was read before the second QUERY.
            second = await run(client, relay, idp, "select 1")
            assert second.status_code == 200
            await p.wait_query(2)
            assert [c for c in p.credits if c.stream_id == 0] == []
            large = await run(client, relay, idp, "select 6000")  # ~6 MB: beyond half a window
            assert large.status_code == 200
            assert large.text.count("\n") == 6002
            await run(client, relay, idp, "select 1")
            await p.wait_query(4)
            granted = [c.increment for c in p.credits if c.stream_id == 0]
            assert granted, "the connection window was re-granted"
            assert all(increment >= WINDOW // 2 for increment in granted), granted


@pytest.mark.parametrize("kind", ["python", "worker"])
async def test_a_draining_refusal_ends_queries_on_that_connection(kind: str, idp: DevIdP) -> None:
    with trio.fail_after(60):
        async with (
            start(kind, idp) as relay,
            peer(relay, handler=refuse) as p,
            httpx.AsyncClient(timeout=30) as client,
        ):
            for _ in range(3):
                response = await run(client, relay, idp, "select 1")
                assert response.status_code == 503, response.text
                assert response.json()["error"]["code"] == "connector.draining"
            assert len(p.queries) == 1  # the refusal counts as the connector's DRAIN


@pytest.mark.parametrize("kind", ["python", "worker"])
async def test_a_draining_refusal_is_placed_on_another_connector(kind: str, idp: DevIdP) -> None:
    with trio.fail_after(60):
        async with (
            two_connector_relay(kind, idp) as relay,
            two_peers(relay, refuse) as (refusing, serving),
            httpx.AsyncClient(timeout=30) as client,
        ):
            for _ in range(4):
                response = await run(client, relay, idp, "select 1")
                assert response.status_code == 200, response.text
            # conn-1 refused at most one (then it counts as draining); conn-2 ran the rest
            assert len(refusing.queries) <= 1
            assert len(serving.queries) == 4


def two_connector_relay(kind: str, idp: DevIdP) -> AbstractAsyncContextManager[RelayHandle]:
    """A relay of tunnel "demo" with the connectors conn-1 and conn-2 registered."""
    return RELAYS[kind](
        tunnel="demo", connector_ids=["conn-1", "conn-2"], issuer=idp.issuer,
        limits=BASE_LIMITS[kind],
    )  # fmt: skip


@asynccontextmanager
async def two_peers(relay: RelayHandle, first: QueryHandler) -> AsyncIterator[tuple[Peer, Peer]]:
    keys, options = relay.connector_keys, (relay.tunnel, relay.relay_public_key)
    async with (
        open_peer(
            relay.ws_url, options[0], "conn-1", keys["conn-1"], options[1], handler=first
        ) as refusing,
        open_peer(relay.ws_url, options[0], "conn-2", keys["conn-2"], options[1]) as serving,
    ):
        yield refusing, serving


@pytest.mark.parametrize("kind", ["python", "worker"])
async def test_a_draining_refusal_is_the_answer_when_the_other_connector_is_full(
    kind: str, idp: DevIdP
) -> None:
    """conn-2 takes one stream and holds it; conn-1 refuses unexecuted. A second query goes to
    conn-1 (the only one with room), is refused, and no connection is left to place it on: the
    refusal is its answer (503 connector.draining), not a full tunnel's 429."""
    release = trio.Event()

    async def hold(p: Peer, q: events.Query) -> None:
        await release.wait()
        await rows_handler(p, q)

    with trio.fail_after(60):
        async with (
            two_connector_relay(kind, idp) as relay,
            httpx.AsyncClient(timeout=30) as client,
        ):
            keys = relay.connector_keys
            held: list[httpx.Response] = []

            async def first() -> None:
                held.append(await run(client, relay, idp, "select 1"))

            where = (relay.ws_url, relay.tunnel)
            async with (
                open_peer(*where, "conn-2", keys["conn-2"], relay.relay_public_key, handler=hold,
                          max_streams=1) as serving,
                trio.open_nursery() as nursery,
            ):  # fmt: skip
                nursery.start_soon(first)
                await serving.wait_query(1)
                conn_1 = (*where, "conn-1", keys["conn-1"], relay.relay_public_key)
                async with open_peer(*conn_1, handler=refuse) as refusing:
                    response = await run(client, relay, idp, "select 1")
                    assert response.status_code == 503, response.text
                    assert response.json()["error"]["code"] == "connector.draining"
                    assert len(refusing.queries) == 1
                    assert len(serving.queries) == 1
                    release.set()
            assert [r.status_code for r in held] == [200]
