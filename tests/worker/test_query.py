"""Queries through the Worker relay on workerd to a scripted protocol peer."""

from __future__ import annotations

from contextlib import aclosing

import httpx
import trio

from edgetds.devidp import DevIdP
from protocol import Limits, events
from tests.support.protocol_peer import COLUMNS, Peer, line
from tests.support.worker_relay import WorkerRelay
from tests.worker.helpers import bearer, ndjson, peer, query_url


async def test_query_streams_rows_and_done(
    relay: WorkerRelay, idp: DevIdP, client: httpx.AsyncClient
) -> None:
    with trio.fail_after(20):
        async with peer(relay) as p:
            token = idp.mint(sub="alice")
            response = await client.post(
                query_url(relay),
                json={"sql": "select n from t where n < @k", "params": {"k": 3, "f": 0.5e-5}},
                headers=bearer(token),
            )
            assert response.status_code == 200, response.text
            assert response.headers["content-type"] == "application/x-ndjson"
            lines = ndjson(response.text)
            assert lines[0]["columns"][0]["name"] == "n"
            assert lines[1:4] == [[0], [1], [2]]
            assert lines[4]["done"]["rows"] == 3
            # The peer checked the Worker's attestation with protocol.verify_attestation.
            assert p.attestation_errors == []
            (q,) = p.queries
            assert q.token == token
            assert q.sql == "select n from t where n < @k"
            assert dict(q.params) == {"k": 3, "f": 0.5e-5}


async def test_error_first_sets_the_http_status(
    relay: WorkerRelay, idp: DevIdP, client: httpx.AsyncClient
) -> None:
    async def deny(p: Peer, q: events.Query) -> None:
        await p.error(q.stream_id, "policy.denied", "no role for this identity", q.query_id)

    with trio.fail_after(20):
        async with peer(relay, handler=deny):
            response = await client.post(
                query_url(relay), json={"sql": "select 1"}, headers=bearer(idp.mint(sub="bob"))
            )
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "policy.denied"


async def test_large_result_flows_under_credit(
    relay: WorkerRelay, idp: DevIdP, client: httpx.AsyncClient
) -> None:
    # 3 MiB of rows: three times the per-stream window, so the peer must wait for CREDIT.
    chunk = [["x" * 1000] for _ in range(60)]

    async def big(p: Peer, q: events.Query) -> None:
        await p.columns(q.stream_id)
        for _ in range(52):
            await p.rows(q.stream_id, chunk)
        await p.done(q.stream_id, rows=52 * 60, query_id=q.query_id)

    with trio.fail_after(30):
        async with peer(relay, handler=big):
            async with client.stream(
                "POST",
                query_url(relay),
                json={"sql": "select big"},
                headers=bearer(idp.mint(sub="carol")),
            ) as response:
                assert response.status_code == 200
                rows = 0
                async with aclosing(response.aiter_lines()) as lines:
                    async for text in lines:
                        if text.startswith("["):
                            rows += 1
                        last = text
    assert rows == 52 * 60
    assert '"done"' in last


async def test_no_connector_is_503(
    relay: WorkerRelay, idp: DevIdP, client: httpx.AsyncClient
) -> None:
    with trio.fail_after(10):
        response = await client.post(
            query_url(relay), json={"sql": "select 1"}, headers=bearer(idp.mint(sub="dan"))
        )
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "tunnel.no_connector"


async def test_number_literals_reach_the_connector_as_python_reads_them(
    relay: WorkerRelay, idp: DevIdP, client: httpx.AsyncClient
) -> None:
    # JavaScript numbers cannot tell 2.0 from 2 or hold 1e308 as an integer: the Worker keeps the
    # client's literal form (workerd's JSON.parse source text) so the connector sees Python floats
    # and the attestation's params hash matches.
    body = (
        b'{"sql": "select @a", '
        b'"params": {"a": 2.0, "b": -1.7976931348623157e308, "c": 7, "d": 1e-7}}'
    )
    with trio.fail_after(20):
        async with peer(relay) as p:
            response = await client.post(
                query_url(relay), content=body, headers=bearer(idp.mint(sub="f"))
            )
            assert response.status_code == 200, response.text
            (q,) = p.queries
            assert p.attestation_errors == []
    params = dict(q.params)
    assert params == {"a": 2.0, "b": -1.7976931348623157e308, "c": 7, "d": 1e-7}
    assert [type(params[k]) for k in "abcd"] == [float, float, int, float]


async def test_credit_for_whole_results_leaves_when_their_message_was_handled(
    relay: WorkerRelay, idp: DevIdP, client: httpx.AsyncClient
) -> None:
    # Each answer is one WebSocket message (COLUMNS, ROWS, DONE): the object answers it whole and
    # credits its bytes at once, sending and saving once at the end of the message. The connection
    # credit due once half the connection window was consumed (the 5th answer of ~0.9 MB) must
    # leave then, not wait for the next frame the relay sends (no further query comes here).
    rows = b"".join(line(["x" * 1000]) for _ in range(900))

    async def whole(p: Peer, q: events.Query) -> None:
        p.conn.send(events.Columns(q.stream_id, line({"columns": list(COLUMNS)})))
        p.conn.send(events.Rows(q.stream_id, rows))
        done = {"rows": 900, "result_sets": 1, "elapsed_ms": 1, "query_id": q.query_id}
        p.conn.send(events.Done(q.stream_id, line({"done": done})))
        await p.flush()

    half = Limits().connection_window // 2
    with trio.fail_after(30):
        async with peer(relay, handler=whole) as p:
            for n in range(5):
                response = await client.post(
                    query_url(relay),
                    json={"sql": "select whole"},
                    headers=bearer(idp.mint(sub="erin")),
                )
                assert response.status_code == 200, response.text
                assert response.text.count("\n") == 902
                assert n == 4 or [c for c in p.credits if c.stream_id == 0] == []
            while not [c for c in p.credits if c.stream_id == 0]:
                p.credit_changed = trio.Event()
                await p.credit_changed.wait()
            granted = [c.increment for c in p.credits if c.stream_id == 0]
            assert granted == [5 * (len(rows) + len(line({"columns": list(COLUMNS)})))]
            assert granted[0] >= half
