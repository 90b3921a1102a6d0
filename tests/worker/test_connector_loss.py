"""In-flight outcomes when the connector goes away, and spreading over two connectors."""

from __future__ import annotations

import functools

import httpx
import trio

from edgetds.devidp import DevIdP
from protocol import events
from tests.support.protocol_peer import Peer
from tests.support.relays import post_streamed
from tests.support.worker_relay import TEST_LIMITS, WorkerRelay, open_worker_relay
from tests.worker.helpers import bearer, ndjson, peer, post_and_hang_up, query_url


async def black_hole() -> None:
    """A peer's flush that sends nothing: what it queues never leaves (a black-holed network)."""


class StallAfterColumns:
    """A query handler that starts the result (COLUMNS), sets `started`, then stalls."""

    def __init__(self) -> None:
        self.started = trio.Event()

    async def __call__(self, p: Peer, q: events.Query) -> None:
        await p.columns(q.stream_id)
        self.started.set()
        await trio.sleep_forever()


async def test_drop_mid_stream_ends_with_transport_lost(
    relay: WorkerRelay, idp: DevIdP, client: httpx.AsyncClient
) -> None:
    rows_received = trio.Event()

    async def half_then_vanish(p: Peer, q: events.Query) -> None:
        await p.columns(q.stream_id)
        await p.rows(q.stream_id, [[1], [2]])
        await rows_received.wait()
        await p.drop()

    with trio.fail_after(20):
        async with peer(relay, handler=half_then_vanish):
            response = await post_streamed(
                client, query_url(relay), json={"sql": "select n"},
                headers=bearer(idp.mint(sub="a")), lines=3, received=rows_received,
            )  # fmt: skip
    assert response.status_code == 200  # the status went out with the first bytes
    lines = ndjson(response.text)
    assert lines[1:3] == [[1], [2]]
    assert lines[-1]["error"]["code"] == "transport.lost"
    assert lines[-1]["error"]["query_id"]
    assert len(lines) == 4  # exactly one terminal record


async def test_drop_before_first_frame_is_502(
    relay: WorkerRelay, idp: DevIdP, client: httpx.AsyncClient
) -> None:
    async def vanish(p: Peer, q: events.Query) -> None:
        await p.drop()

    with trio.fail_after(20):
        async with peer(relay, handler=vanish):
            response = await client.post(
                query_url(relay), json={"sql": "select n"}, headers=bearer(idp.mint(sub="a"))
            )
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "transport.lost"


async def test_queries_spread_over_two_connectors(
    relay: WorkerRelay, idp: DevIdP, client: httpx.AsyncClient
) -> None:
    release = trio.Event()
    all_placed = trio.Event()
    placed: list[int] = []

    async def slow(p: Peer, q: events.Query) -> None:
        placed.append(q.stream_id)
        if len(placed) == 6:
            all_placed.set()
        await release.wait()
        await p.columns(q.stream_id)
        await p.rows(q.stream_id, [[q.stream_id]])
        await p.done(q.stream_id, rows=1, query_id=q.query_id)

    results: list[int] = []

    async def one() -> None:
        response = await client.post(
            query_url(relay), json={"sql": "select 1"}, headers=bearer(idp.mint(sub="s"))
        )
        assert response.status_code == 200
        results.append(len(ndjson(response.text)))

    with trio.fail_after(20):
        async with (
            peer(relay, "conn-1", handler=slow) as p1,
            peer(relay, "conn-2", handler=slow) as p2,
        ):
            async with trio.open_nursery() as nursery:
                for _ in range(6):
                    nursery.start_soon(one)
                await all_placed.wait()
                # Least-loaded placement: three concurrent queries on each connector.
                assert (len(p1.queries), len(p2.queries)) == (3, 3)
                release.set()
    assert results == [3] * 6


async def test_client_going_away_cancels_the_stream(
    relay: WorkerRelay, idp: DevIdP, client: httpx.AsyncClient
) -> None:
    stop = trio.Event()

    async def endless(p: Peer, q: events.Query) -> None:
        await p.columns(q.stream_id)
        while q.stream_id not in p.cancels:
            await p.rows(q.stream_id, [["y" * 100] for _ in range(100)])
            await trio.sleep(0.01)
        await p.error(q.stream_id, "query.cancelled", "cancelled", q.query_id)
        stop.set()

    with trio.fail_after(20):
        async with peer(relay, handler=endless) as p:
            head = await post_and_hang_up(
                relay.handle.http_url,
                relay.handle.tunnel,
                {"sql": "select *"},
                bearer(idp.mint(sub="c")),
                read=2000,
            )
            assert head.startswith(b"HTTP/1.1 200")
            await stop.wait()
            assert p.cancels == [1]  # exactly one CANCEL


async def post_with_timeout(
    client: httpx.AsyncClient, relay: WorkerRelay, idp: DevIdP, sub: str, timeout_ms: int
) -> httpx.Response:
    """A query (for a connector that never answers) with the timeout `timeout_ms`."""
    return await client.post(
        query_url(relay),
        json={"sql": "waitfor delay '01:00'", "timeout_ms": timeout_ms},
        headers=bearer(idp.mint(sub=sub)),
    )


async def test_relay_deadline_cancels_a_silent_query(
    relay: WorkerRelay, idp: DevIdP, client: httpx.AsyncClient
) -> None:
    async def silent(p: Peer, q: events.Query) -> None:
        await trio.sleep_forever()

    with trio.fail_after(20):
        async with peer(relay, handler=silent) as p:
            response = await post_with_timeout(client, relay, idp, "t", 100)
            assert response.status_code == 504
            assert response.json()["error"]["code"] == "query.timeout"
            await p.wait_cancel(1)


async def test_a_short_deadline_sent_after_a_long_one_fires_on_time(
    relay: WorkerRelay, idp: DevIdP, client: httpx.AsyncClient
) -> None:
    """The object's one timer (keepalive and deadlines) is armed again for a new stream whose
    deadline comes before it: the short query times out at its own deadline while the long one
    sent before it stays open."""
    sent: list[int] = []
    long_sent = trio.Event()

    async def silent(p: Peer, q: events.Query) -> None:
        sent.append(q.stream_id)
        long_sent.set()
        await trio.sleep_forever()

    with trio.fail_after(10):  # the keepalive alone would fire after ping_interval_s (15 s)
        async with peer(relay, handler=silent) as p, trio.open_nursery() as nursery:
            nursery.start_soon(post_with_timeout, client, relay, idp, "long", 60_000)
            await long_sent.wait()
            response = await post_with_timeout(client, relay, idp, "short", 200)
            assert response.status_code == 504
            assert response.json()["error"]["code"] == "query.timeout"
            long_stream, short_stream = sent
            await p.wait_cancel(short_stream)
            assert long_stream not in p.cancels  # its deadline is a minute away
            nursery.cancel_scope.cancel()


async def test_a_silent_connection_is_closed_once_its_connector_reconnects(
    relay: WorkerRelay, idp: DevIdP, client: httpx.AsyncClient
) -> None:
    """F5: a black-holed link (the connector gave up on it, the runtime did not) is probed with a
    PING when the connector opens another; silent, it is closed and its query ends transport.lost
    at once, not at its deadline. A live link answers the probe and stays."""
    stalls = StallAfterColumns()

    answers: list[httpx.Response] = []

    async def run_query() -> None:
        answers.append(
            await client.post(
                query_url(relay), json={"sql": "select n"}, headers=bearer(idp.mint(sub="f5"))
            )
        )

    with trio.fail_after(30):
        async with peer(relay, handler=stalls) as old:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(run_query)
                await stalls.started.wait()
                old.flush = black_hole  # type: ignore[method-assign]
                async with peer(relay) as live, peer(relay):
                    await old.closed.wait()  # probed by the first reconnect, closed ~3 s later
                    await trio.sleep(3.5)  # past the probe of the live one too (3 s)
                    assert (await relay.do_state(client))["connections"] == 2
                    assert not live.closed.is_set()  # probed by the second, answered, kept
    (response,) = answers
    assert ndjson(response.text)[-1]["error"]["code"] == "transport.lost"


async def test_a_link_that_dies_mid_query_is_closed_by_the_keepalive(idp: DevIdP) -> None:
    """F5, no reconnect: while a query is in flight the object PINGs a connection silent for
    ping_interval_s; one that stays silent is closed 3 s later and the query ends transport.lost
    long before its deadline. A live connection carrying a silent query answers and is kept."""
    stalls = StallAfterColumns()

    limits = {**TEST_LIMITS, "ping_interval_s": 0.3, "query_timeout_ms": 30_000}
    with trio.fail_after(30):
        async with (
            open_worker_relay(
                tunnel="demo", connector_ids=["conn-1"], issuer=idp.issuer, limits=limits
            ) as relay,
            httpx.AsyncClient(timeout=20) as client,
            peer(relay, handler=stalls) as p,
        ):
            url, headers = query_url(relay), bearer(idp.mint(sub="k"))
            async with trio.open_nursery() as nursery:
                nursery.start_soon(
                    functools.partial(client.post, url, json={"sql": "x"}, headers=headers)
                )
                await stalls.started.wait()
                await trio.sleep(1.5)  # several ping intervals: answered, the link is kept
                assert not p.closed.is_set()
                assert (await relay.do_state(client))["connections"] == 1
                p.flush = black_hole  # type: ignore[method-assign]
                t0 = trio.current_time()
                response = await client.post(url, json={"sql": "select 2"}, headers=headers)
                nursery.cancel_scope.cancel()
            assert response.status_code == 502  # nothing of it was streamed yet
            assert response.json()["error"]["code"] == "transport.lost"
            assert trio.current_time() - t0 < 5.0  # probe after 0.3 s, closed 3 s later
            assert (await relay.do_state(client))["connections"] == 0
