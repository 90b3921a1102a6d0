"""Streams under pressure: credit, cancel on client disconnect, connector loss, spreading, drain."""

from __future__ import annotations

import functools
from contextlib import aclosing

import httpx
import pytest
import trio

from edgetds.devidp import DevIdP
from logsetup import record_fields
from protocol import events
from relay.server import RunningRelay
from tests.relay._relay_helpers import bearer, ndjson, peer, query_url, wait_connections
from tests.support.protocol_peer import Peer, line, rows_handler
from tests.support.relays import RelayHandle, post_streamed
from tests.support.waiting import eventually

CHUNK_ROWS = 64
ROW = ["x" * 1000]


async def test_large_result_is_streamed_with_bounded_buffering(
    relay: RelayHandle, idp: DevIdP, client: httpx.AsyncClient
) -> None:
    # 16 MiB of rows. While the client reads nothing, the connector may only get ahead by the
    # stream window (1 MiB) plus socket buffers, never by the whole result (measured: ~1 MiB).
    chunk = b"".join(line(ROW) for _ in range(CHUNK_ROWS))
    chunks = (16 * 1024 * 1024) // len(chunk)
    produced = [0]

    async def big(p: Peer, q: events.Query) -> None:
        await p.columns(q.stream_id)
        for _ in range(chunks):
            await p._flowed(events.Rows(q.stream_id, chunk))
            produced[0] += len(chunk)
        await p.done(q.stream_id, rows=chunks * CHUNK_ROWS, query_id=q.query_id)

    with trio.fail_after(60):
        async with peer(relay, handler=big):
            async with client.stream(
                "POST",
                query_url(relay),
                json={"sql": "select big"},
                headers=bearer(idp.mint(sub="c")),
            ) as response:
                assert response.status_code == 200
                await trio.sleep(1.0)  # the client reads nothing for a while
                stalled_at = produced[0]
                assert stalled_at < 6 * 1024 * 1024, f"connector ran {stalled_at} bytes ahead"
                rows = 0
                last = b""
                async with aclosing(response.aiter_lines()) as lines:
                    async for text in lines:
                        if text.startswith("["):
                            assert text == '["' + "x" * 1000 + '"]'
                            rows += 1
                        else:
                            last = text.encode()
    assert rows == chunks * CHUNK_ROWS
    assert b'"done"' in last


async def test_a_completed_streamed_query_is_logged_done(
    relay: RelayHandle, idp: DevIdP, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    """The server's http.disconnect after a complete answer is not a client that went away."""
    caplog.set_level("DEBUG", logger="edgetds.relay")

    async def chunked(p: Peer, q: events.Query) -> None:
        await p.columns(q.stream_id)
        for _ in range(4):  # more than one write (MAX_WRITE), so the answer is streamed
            await p.rows(q.stream_id, [ROW] * 100)
            await trio.sleep(0.01)
        await p.done(q.stream_id, rows=400, query_id=q.query_id)

    with trio.fail_after(20):
        async with peer(relay, handler=chunked):
            for _ in range(5):
                response = await client.post(
                    query_url(relay), json={"sql": "select"}, headers=bearer(idp.mint(sub="o"))
                )
                assert response.status_code == 200
                assert "done" in ndjson(response.text)[-1]
    outcomes = [
        record_fields(r).get("outcome") for r in caplog.records if r.getMessage() == "query"
    ]
    assert outcomes == ["done"] * 5


async def post_and_hang_up(relay: RelayHandle, token: str, body: bytes) -> None:
    """POST by hand, read until the first NDJSON line arrived, then close the socket."""
    host, port = relay.http_url.removeprefix("http://").rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    request = (
        f"POST /v1/tunnels/{relay.tunnel}/query HTTP/1.1\r\nHost: {host}\r\n"
        f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    async with stream:
        await stream.send_all(request)
        received = b""
        while b'"columns"' not in received:
            received += await stream.receive_some(65536)
        assert received.startswith(b"HTTP/1.1 200")


async def test_client_disconnect_cancels_the_stream(
    relay: RelayHandle,
    running: RunningRelay,
    idp: DevIdP,
    client: httpx.AsyncClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("DEBUG", logger="edgetds.relay")
    stop = trio.Event()

    async def endless(p: Peer, q: events.Query) -> None:
        await p.columns(q.stream_id)
        while not stop.is_set() and not p.cancels:
            await p.rows(q.stream_id, [[1]] * 100)
            await trio.sleep(0.01)

    with trio.fail_after(10):
        async with peer(relay, handler=endless) as p:
            await post_and_hang_up(relay, idp.mint(sub="d"), b'{"sql": "select *"}')
            await p.wait_cancels(1)
            (query,) = p.queries
            assert p.cancels == [query.stream_id]
            tunnel = running.app.registry.tunnels["demo"]
            (session,) = tunnel.sessions
            while session.in_flight:  # the stream ends once the CANCEL is through
                await tunnel.wait_changed()
            # The connection still serves, with its credit returned.
            stop.set()
            p.handler = None
            assert session.accepting
            await eventually(
                lambda: any(record_fields(r).get("outcome") == "cancelled" for r in caplog.records),
                interval=0.01,
            )


async def test_client_that_hangs_up_before_any_answer_gets_its_query_cancelled(
    relay: RelayHandle, running: RunningRelay, idp: DevIdP
) -> None:
    """Before the first event the handler itself watches for the client's disconnect."""
    received = trio.Event()

    async def silent(p: Peer, q: events.Query) -> None:
        received.set()  # and no answer until the CANCEL

    with trio.fail_after(10):
        async with peer(relay, handler=silent) as p:
            host, port = relay.http_url.removeprefix("http://").rsplit(":", 1)
            body = b'{"sql": "select 1"}'
            async with await trio.open_tcp_stream(host, int(port)) as stream:
                await stream.send_all(
                    f"POST /v1/tunnels/{relay.tunnel}/query HTTP/1.1\r\nHost: {host}\r\n"
                    f"Authorization: Bearer {idp.mint(sub='h')}\r\n"
                    f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
                    .encode() + body
                )  # fmt: skip
                await received.wait()
            await p.wait_cancels(1)
            (query,) = p.queries
            assert p.cancels == [query.stream_id]
            (session,) = running.app.registry.tunnels["demo"].sessions
            assert session.accepting


class SpawnedTasks(trio.abc.Instrument):
    """The names of the tasks spawned while it is installed."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def task_spawned(self, task: trio.lowlevel.Task) -> None:
        self.names.append(task.name)


async def test_a_small_answer_costs_the_relay_no_task_of_its_own(
    relay: RelayHandle, idp: DevIdP, client: httpx.AsyncClient
) -> None:
    """No watcher task per query: a small answer's handler watches its client itself."""

    async def one_message(p: Peer, q: events.Query) -> None:
        # a small result in one WebSocket message, as the connector sends it
        p.conn.send(events.Columns(q.stream_id, line({"columns": [{"name": "n", "type": "int"}]})))
        p.conn.send(events.Rows(q.stream_id, line([1])))
        p.conn.send(events.Done(q.stream_id, line({"done": {"rows": 1, "query_id": q.query_id}})))
        await p.flush()

    with trio.fail_after(10):
        async with peer(relay, handler=one_message):
            token = idp.mint(sub="s")
            spawned = SpawnedTasks()
            trio.lowlevel.add_instrument(spawned)
            try:
                for _ in range(3):
                    response = await client.post(
                        query_url(relay), json={"sql": "select"}, headers=bearer(token)
                    )
                    assert response.status_code == 200, response.text
            finally:
                trio.lowlevel.remove_instrument(spawned)
    assert "done" in ndjson(response.text)[-1]
    assert (
        spawned.names
    )  # the instrument saw the tasks spawned meanwhile (the peer's, the server's)
    assert [name for name in spawned.names if name.startswith("relay.")] == []


async def test_connector_drop_mid_stream_ends_with_transport_lost(
    relay: RelayHandle, idp: DevIdP, client: httpx.AsyncClient
) -> None:
    rows_received = trio.Event()

    async def crash(p: Peer, q: events.Query) -> None:
        await p.columns(q.stream_id)
        await p.rows(q.stream_id, [[1], [2]])
        await rows_received.wait()
        await p.drop()

    with trio.fail_after(10):
        async with peer(relay, handler=crash):
            response = await post_streamed(
                client, query_url(relay), json={"sql": "select n"},
                headers=bearer(idp.mint(sub="e")), lines=3, received=rows_received,
            )  # fmt: skip
    assert response.status_code == 200  # bytes were already streamed
    records = ndjson(response.text)
    assert records[1:3] == [[1], [2]]
    error = records[-1]["error"]
    assert error["code"] == "transport.lost"
    assert error["query_id"] == response.headers["x-edgetds-query-id"]


async def test_two_connectors_share_the_load(
    relay: RelayHandle, idp: DevIdP, client: httpx.AsyncClient
) -> None:
    release = trio.Event()

    async def slow(p: Peer, q: events.Query) -> None:
        await release.wait()
        await p.done(q.stream_id, rows=0, query_id=q.query_id)

    statuses: list[int] = []

    async def one() -> None:
        response = await client.post(
            query_url(relay), json={"sql": "select 1"}, headers=bearer(idp.mint(sub="f"))
        )
        statuses.append(response.status_code)

    with trio.fail_after(15):
        async with (
            peer(relay, "conn-1", handler=slow) as a,
            peer(relay, "conn-2", handler=slow) as b,
        ):
            async with trio.open_nursery() as nursery:
                for _ in range(10):
                    nursery.start_soon(one)
                # least in flight first: the ten concurrent queries split five and five
                await a.wait_query(5)
                await b.wait_query(5)
                release.set()
            # Sequential queries alternate too (least in flight, then round-robin).
            for _ in range(4):
                await one()
    assert statuses == [200] * 14
    assert (len(a.queries), len(b.queries)) == (7, 7)


async def test_connector_drain_gets_no_new_queries(
    relay: RelayHandle, running: RunningRelay, idp: DevIdP, client: httpx.AsyncClient
) -> None:
    with trio.fail_after(10):
        async with peer(relay, "conn-1") as a, peer(relay, "conn-2") as b:
            await a.send(events.Drain("restarting"))
            await wait_connections(running, "demo", 1)
            for _ in range(3):
                response = await client.post(
                    query_url(relay), json={"sql": "select 1"}, headers=bearer(idp.mint(sub="g"))
                )
                assert response.status_code == 200
            assert (len(a.queries), len(b.queries)) == (0, 3)
            await b.send(events.Drain("restarting too"))
            await wait_connections(running, "demo", 0)
            response = await client.post(
                query_url(relay), json={"sql": "select 1"}, headers=bearer(idp.mint(sub="g"))
            )
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "connector.draining"


async def test_reconnect_with_the_same_id_serves_while_the_old_one_finishes(
    relay: RelayHandle, running: RunningRelay, idp: DevIdP, client: httpx.AsyncClient
) -> None:
    finish = trio.Event()

    async def slow(p: Peer, q: events.Query) -> None:
        await p.columns(q.stream_id)
        await finish.wait()
        await p.rows(q.stream_id, [[42]])
        await p.done(q.stream_id, rows=1, query_id=q.query_id)

    results: dict[str, httpx.Response] = {}

    async def ask(name: str) -> None:
        results[name] = await client.post(
            query_url(relay), json={"sql": "select 42"}, headers=bearer(idp.mint(sub="h"))
        )

    with trio.fail_after(15):
        async with peer(relay, "conn-1", handler=slow) as old:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(ask, "old")
                await old.wait_query()
                old_session = running.app.registry.tunnels["demo"].sessions[0]
                await old.send(events.Drain("replaced"))
                # The same connector id reconnects; it serves at once, nothing waits for the old.
                async with peer(relay, "conn-1") as new:
                    await ask("new")
                    assert len(new.queries) == 1
                    assert old_session.in_flight == 1
                    finish.set()
    assert results["new"].status_code == 200
    assert results["old"].status_code == 200
    assert ndjson(results["old"].text)[1] == [42]


async def test_many_concurrent_queries_over_one_connection(
    relay: RelayHandle, idp: DevIdP, client: httpx.AsyncClient
) -> None:
    bodies: list[bytes] = []

    async def one(i: int) -> None:
        response = await client.post(
            query_url(relay),
            json={"sql": f"select {i}"},
            headers=bearer(idp.mint(sub=f"i{i % 4}")),  # 16 each: below the per-identity cap
        )
        assert response.status_code == 200
        bodies.append(response.content)

    with trio.fail_after(30):
        async with peer(relay, max_streams=128) as p:
            async with trio.open_nursery() as nursery:
                for i in range(64):
                    nursery.start_soon(one, i)
    assert len(bodies) == 64
    assert len({q.stream_id for q in p.queries}) == 64
    assert all(b.endswith(b"}}\n") and b'"done"' in b for b in bodies)


async def test_one_of_two_connections_dropped_the_other_keeps_serving(
    relay: RelayHandle, running: RunningRelay, idp: DevIdP, client: httpx.AsyncClient
) -> None:
    async def crash(p: Peer, q: events.Query) -> None:
        await p.columns(q.stream_id)
        await p.drop()

    with trio.fail_after(15):
        async with peer(relay, "conn-1", handler=crash) as doomed, peer(relay, "conn-1") as healthy:
            # Make the doomed connection the next pick: the healthy one is busy with one stream.
            release = trio.Event()

            async def hold(p: Peer, q: events.Query) -> None:
                await release.wait()
                await p.done(q.stream_id, rows=0, query_id=q.query_id)

            healthy.handler = hold
            async with trio.open_nursery() as nursery:
                nursery.start_soon(
                    functools.partial(
                        client.post,
                        query_url(relay),
                        json={"sql": "hold"},
                        headers=bearer(idp.mint(sub="j")),
                    )
                )
                await healthy.wait_query()
                lost = await client.post(
                    query_url(relay), json={"sql": "x"}, headers=bearer(idp.mint(sub="j"))
                )
                release.set()
            assert len(doomed.queries) == 1
            await wait_connections(running, "demo", 1)
            healthy.handler = rows_handler
            after = await client.post(
                query_url(relay), json={"sql": "y"}, headers=bearer(idp.mint(sub="j"))
            )
    assert lost.status_code == 200
    assert ndjson(lost.text)[-1]["error"]["code"] == "transport.lost"
    assert after.status_code == 200
    assert ndjson(after.text)[-1]["done"]["rows"] == 3
    assert len(healthy.queries) == 2
