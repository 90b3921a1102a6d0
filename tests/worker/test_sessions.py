"""Sessions (SPEC.md 7.4, 11.5, 11.6) on the Worker relay under the real workerd runtime.

The connector side is a protocol peer (tests/support/protocol_peer.py) that answers session
operations as SPEC 7.4 says, so these tests see exactly what the relay sends where: the session
member, the connection it pins to, and the checks it makes before sending anything. The same
behaviour with the real connector and tdslite is in tests/conformance/ (both relays).
"""

from __future__ import annotations

import json
import time
from functools import partial
from typing import Any

import httpx
import pytest
import trio
import trio.lowlevel

from edgetds.devidp import DevIdP
from protocol import events
from tests.support.protocol_peer import Peer, line
from tests.support.waiting import eventually
from tests.support.worker_relay import (
    TEST_LIMITS,
    WorkerRelay,
    idle_until_hibernated,
    open_worker_relay,
)
from tests.worker.helpers import CONNECTORS, TUNNEL, bearer, ndjson, peer, shard_of

#: workerd hibernates an idle object after ~10 s; give it a margin.


def sessions_url(relay: WorkerRelay, *parts: str) -> str:
    return "/".join([f"{relay.handle.http_url}/v1/tunnels/{relay.handle.tunnel}/sessions", *parts])


class SessionPeer:
    """Answers session operations as a connector does; records each op by session id."""

    def __init__(self) -> None:
        self.ops: list[tuple[str, str, str]] = []  # (connector id, session id, op)
        self.ended: dict[str, str] = {}
        self.hold: trio.Event | None = None  # set: `run` waits for it (a busy session)
        self.running = trio.Event()

    async def __call__(self, p: Peer, q: events.Query) -> None:
        session = q.session
        assert session is not None, "a one-shot query in a session test"
        sid, op = session["id"], session["op"]
        self.ops.append((p.connector_id, sid, op))
        state: dict[str, Any] = {"id": sid, "state": "open"}
        if sid in self.ended:
            error = {"code": "session.ended", "message": "ended", "query_id": q.query_id}
            error["session"] = {"id": sid, "state": "ended", "reason": self.ended[sid]}
            await p.send(events.Error(q.stream_id, line({"error": error})))
            return
        if op == "begin":
            state |= {"expires_at": int(time.time() * 1000) + 300_000, "idle_timeout_ms": 30_000}
        elif op == "run":
            self.running.set()
            if self.hold is not None:
                await self.hold.wait()
            await p.columns(q.stream_id)
            await p.rows(q.stream_id, [[1], [2]])
        elif op in ("commit", "rollback"):
            reason = "committed" if op == "commit" else "rolled_back"
            self.ended[sid] = reason
            state = {"id": sid, "state": "ended", "reason": reason}
        done = {"rows": 2 if op == "run" else 0, "result_sets": int(op == "run"), "elapsed_ms": 1}
        done |= {"query_id": q.query_id, "session": state}
        await p.send(events.Done(q.stream_id, line({"done": done})))


@pytest.fixture
def handler() -> SessionPeer:
    return SessionPeer()


@pytest.fixture
def token(idp: DevIdP) -> str:
    """alice's token."""
    return idp.mint(sub="alice")


async def begin(client: httpx.AsyncClient, relay: WorkerRelay, token: str, **body: Any) -> str:
    response = await client.post(sessions_url(relay), json=body, headers=bearer(token))
    assert response.status_code == 201, response.text
    sid: str = response.json()["session"]
    return sid


def session_peer(relay: WorkerRelay, handler: SessionPeer, connector_id: str = "conn-1") -> Any:
    return peer(relay, connector_id, handler=handler, caps=("session",))


async def test_a_session_stays_on_the_connection_that_began_it(
    relay: WorkerRelay, client: httpx.AsyncClient, handler: SessionPeer, token: str
) -> None:
    with trio.fail_after(30):
        async with (
            session_peer(relay, handler, "conn-1") as p1,
            session_peer(relay, handler, "conn-2") as p2,
        ):
            begins = [await begin(client, relay, token, isolation="snapshot") for _ in range(4)]
            for sid in begins:
                response = await client.post(
                    sessions_url(relay, sid, "query"),
                    json={"sql": "select n"},
                    headers=bearer(token),
                )
                assert response.status_code == 200, response.text
                lines = ndjson(response.text)
                assert lines[1:3] == [[1], [2]]
                assert lines[-1]["done"]["session"] == {"id": sid, "state": "open"}
                response = await client.post(
                    sessions_url(relay, sid, "savepoint"),
                    json={"name": "sp1"},
                    headers=bearer(token),
                )
                assert response.json() == {"session": sid, "state": "open"}
                response = await client.post(
                    sessions_url(relay, sid, "commit"), headers=bearer(token)
                )
                assert response.status_code == 200, response.text
                assert response.json() == {"session": sid, "state": "ended", "reason": "committed"}
    where = {sid: {c for c, s, _ in handler.ops if s == sid} for sid in begins}
    assert all(len(conns) == 1 for conns in where.values()), where  # never another connection
    assert {c for conns in where.values() for c in conns} == {"conn-1", "conn-2"}  # both used
    ops = [op for _, s, op in handler.ops if s == begins[0]]
    assert ops == ["begin", "run", "savepoint", "commit"]
    first = next(q for q in [*p1.queries, *p2.queries] if q.session and q.session["op"] == "begin")
    assert first.session is not None
    assert first.session["isolation"] == "snapshot"
    assert first.sql is None
    assert first.query is None
    assert p1.attestation_errors == p2.attestation_errors == []  # session_sha256 attested


async def test_checks_in_spec_order_before_anything_is_sent(
    relay: WorkerRelay, idp: DevIdP, client: httpx.AsyncClient, handler: SessionPeer
) -> None:
    alice, mallory = idp.mint(sub="alice"), idp.mint(sub="mallory")
    with trio.fail_after(30):
        async with session_peer(relay, handler):
            sid = await begin(client, relay, alice)
            sent = len(handler.ops)
            unknown = await client.post(
                sessions_url(relay, "A" * 22, "commit"), headers=bearer(alice)
            )
            assert unknown.status_code == 404
            assert unknown.json()["error"]["code"] == "session.not_found"
            other = await client.post(sessions_url(relay, sid, "commit"), headers=bearer(mallory))
            assert other.status_code == 403
            assert other.json()["error"]["code"] == "session.wrong_identity"
            assert len(handler.ops) == sent  # neither was sent
            response = await client.delete(sessions_url(relay, sid), headers=bearer(alice))
            assert response.json() == {"session": sid, "state": "ended", "reason": "rolled_back"}
            sent = len(handler.ops)
            again = await client.post(sessions_url(relay, sid, "commit"), headers=bearer(alice))
            assert again.status_code == 410
            assert again.json()["error"]["session"] == {
                "id": sid,
                "state": "ended",
                "reason": "rolled_back",
            }
            # the owner check comes before the ended check
            other = await client.post(sessions_url(relay, sid, "commit"), headers=bearer(mallory))
            assert other.json()["error"]["code"] == "session.wrong_identity"
            assert len(handler.ops) == sent
            bad = await client.post(sessions_url(relay), headers={"Authorization": "Bearer x"})
            assert bad.status_code == 401


async def test_busy_session_is_refused_at_the_relay(
    relay: WorkerRelay, client: httpx.AsyncClient, handler: SessionPeer, token: str
) -> None:
    handler.hold = trio.Event()
    with trio.fail_after(30):
        async with session_peer(relay, handler):
            sid = await begin(client, relay, token)
            first: list[httpx.Response] = []

            async def run() -> None:
                first.append(
                    await client.post(
                        sessions_url(relay, sid, "query"), json={"sql": "x"}, headers=bearer(token)
                    )
                )

            async with trio.open_nursery() as nursery:
                nursery.start_soon(run)
                await handler.running.wait()
                busy = await client.post(sessions_url(relay, sid, "commit"), headers=bearer(token))
                assert busy.status_code == 409
                assert busy.json()["error"]["code"] == "session.busy"
                handler.hold.set()
            assert first[0].status_code == 200
            ok = await client.post(sessions_url(relay, sid, "commit"), headers=bearer(token))
            assert ok.status_code == 200, ok.text
    assert [op for _, _, op in handler.ops] == ["begin", "run", "commit"]


async def test_session_caps_per_identity_and_per_tunnel(idp: DevIdP, handler: SessionPeer) -> None:
    limits = {**TEST_LIMITS, "max_sessions_per_identity": 2, "max_sessions_per_tunnel": 3}
    async with (
        open_worker_relay(
            tunnel=TUNNEL, connector_ids=CONNECTORS, issuer=idp.issuer, limits=limits
        ) as relay,
        httpx.AsyncClient(timeout=10) as client,
    ):
        with trio.fail_after(30):
            async with session_peer(relay, handler):
                alice, bob = idp.mint(sub="alice"), idp.mint(sub="bob")
                first = await begin(client, relay, alice)
                await begin(client, relay, alice)
                refused = await client.post(sessions_url(relay), headers=bearer(alice))
                assert refused.status_code == 429
                assert refused.json()["error"]["limit"] == "identity"
                assert refused.json()["error"]["code"] == "limits.too_many_sessions"
                assert int(refused.headers["retry-after"]) >= 1
                await begin(client, relay, bob)
                refused = await client.post(sessions_url(relay), headers=bearer(bob))
                assert refused.json()["error"]["limit"] == "tunnel"
                # an ended session no longer counts
                await client.post(sessions_url(relay, first, "commit"), headers=bearer(alice))
                await begin(client, relay, bob)


async def test_connection_loss_ends_its_sessions_transport_lost(
    relay: WorkerRelay, client: httpx.AsyncClient, handler: SessionPeer, token: str
) -> None:
    with trio.fail_after(30):
        async with session_peer(relay, handler, "conn-2"):
            async with session_peer(relay, handler, "conn-1") as p1:
                sid = await begin(client, relay, token)
                # the two connections take begins in turn: make sure this one is on conn-1
                while handler.ops[-1][0] != "conn-1":
                    sid = await begin(client, relay, token)
                await p1.drop()
                await p1.closed.wait()
            answers: list[httpx.Response] = []

            async def past_the_close() -> bool:
                # the relay sees the close when workerd reports it; until then: 502
                answers.append(
                    await client.post(
                        sessions_url(relay, sid, "query"), json={"sql": "x"}, headers=bearer(token)
                    )
                )
                return answers[-1].status_code != 502

            await eventually(past_the_close)
            response = answers[-1]
            assert response.status_code == 410, response.text
            assert response.json()["error"]["session"]["reason"] == "transport.lost"
    assert all(c == "conn-1" for c, s, _ in handler.ops if s == sid)


async def test_no_session_member_without_the_capability(
    relay: WorkerRelay, idp: DevIdP, client: httpx.AsyncClient
) -> None:
    with trio.fail_after(20):
        async with peer(relay) as p:  # READY without "session"
            response = await client.post(sessions_url(relay), headers=bearer(idp.mint(sub="a")))
            assert response.status_code == 503
            assert response.json()["error"]["code"] == "tunnel.no_connector"
            assert "session" in response.json()["error"]["message"]
            ok = await client.post(
                f"{relay.handle.http_url}/v1/tunnels/demo/query",
                json={"sql": "select n"},
                headers=bearer(idp.mint(sub="a")),
            )
            assert ok.status_code == 200
            assert all(q.session is None for q in p.queries)


@pytest.mark.timeout(60)
async def test_a_session_survives_hibernation(
    relay: WorkerRelay, idp: DevIdP, client: httpx.AsyncClient, handler: SessionPeer, token: str
) -> None:
    with trio.fail_after(45):
        async with session_peer(relay, handler, "conn-2"), session_peer(relay, handler) as p1:
            sids = [await begin(client, relay, token, timeout_ms=60_000) for _ in range(2)]
            before = await relay.do_state(client)
            await idle_until_hibernated()
            await p1.send(events.Ping(b"12345678"))  # wakes the object: rebuilt from attachments
            for sid in sids:
                response = await client.post(
                    sessions_url(relay, sid, "query"), json={"sql": "x"}, headers=bearer(token)
                )
                assert response.status_code == 200, response.text
            after = await relay.do_state(client)
            assert after["instance"] != before["instance"], "the object did not hibernate"
            # still the wrong identity's and still routed to the connection that began it
            other = await client.post(
                sessions_url(relay, sids[0], "commit"), headers=bearer(idp.mint(sub="bob"))
            )
            assert other.status_code == 403
    for sid in sids:
        assert len({c for c, s, _ in handler.ops if s == sid}) == 1
        assert [op for _, s, op in handler.ops if s == sid] == ["begin", "run"]


async def test_reset_closes_the_connection_that_holds_the_session(
    relay: WorkerRelay, idp: DevIdP, client: httpx.AsyncClient, handler: SessionPeer, token: str
) -> None:
    with trio.fail_after(30):
        async with session_peer(relay, handler) as p:
            sid = await begin(client, relay, token)
            await client.post(relay.hook_url("abort"))
            await p.closed.wait()  # the connector sees its connection end: it rolls back
        response = await client.post(sessions_url(relay, sid, "commit"), headers=bearer(token))
        # the rebuilt object has no socket holding it: it ended with its connection
        assert response.status_code == 410, response.text
        assert response.json()["error"]["session"]["reason"] == "transport.lost"
        other = await client.post(
            sessions_url(relay, sid, "commit"), headers=bearer(idp.mint(sub="bob"))
        )
        assert other.json()["error"]["code"] == "session.wrong_identity"


async def test_transaction_runs_statements_and_commits(
    relay: WorkerRelay, client: httpx.AsyncClient, handler: SessionPeer, token: str
) -> None:
    url = f"{relay.handle.http_url}/v1/tunnels/demo/transaction"
    body = {
        "statements": [{"sql": "a"}, {"sql": "b", "params": {"x": 1}}],
        "isolation": "serializable",
    }
    with trio.fail_after(30):
        async with session_peer(relay, handler):
            response = await client.post(url, json=body, headers=bearer(token))
    assert response.status_code == 200, response.text
    lines = ndjson(response.text)
    assert lines[0]["columns"][0]["name"] == "n"
    assert lines[3] == {"statement": {"index": 0, "rows": 2, "result_sets": 1, "elapsed_ms": 1}}
    done = lines[-1]["done"]
    assert done["statements"] == 2
    assert done["rows"] == 4
    assert done["session"]["state"] == "ended"
    assert done["session"]["reason"] == "committed"
    assert [op for _, _, op in handler.ops] == ["begin", "run", "run", "commit"]


async def test_transaction_failure_rolls_back_and_names_the_statement(
    relay: WorkerRelay, client: httpx.AsyncClient, handler: SessionPeer, token: str
) -> None:

    async def fails(p: Peer, q: events.Query) -> None:
        if q.session and q.session["op"] == "run" and q.sql == "bad":
            error = {"code": "sql.error", "message": "no", "query_id": q.query_id}
            error |= {"sql": {"number": 208, "state": 1, "class": 16}}
            error["session"] = {"id": q.session["id"], "state": "open"}
            handler.ops.append((p.connector_id, q.session["id"], "run"))
            await p.send(events.Error(q.stream_id, line({"error": error})))
            return
        await handler(p, q)

    url = f"{relay.handle.http_url}/v1/tunnels/demo/transaction"
    with trio.fail_after(30):
        async with peer(relay, handler=fails, caps=("session",)):
            before = await client.post(
                url, json={"statements": [{"sql": "bad"}]}, headers=bearer(token)
            )
            after = await client.post(
                url, json={"statements": [{"sql": "ok"}, {"sql": "bad"}]}, headers=bearer(token)
            )
    assert before.status_code == 200  # the session opened: a failure is the terminal record
    error = ndjson(before.text)[-1]["error"]
    assert error["statement"] == 0
    assert error["code"] == "sql.error"
    assert error["session"]["state"] == "ended"
    assert error["session"]["reason"] == "rolled_back"
    assert after.status_code == 200
    last = ndjson(after.text)[-1]["error"]
    assert last["statement"] == 1
    assert last["session"]["reason"] == "rolled_back"
    ops = [op for _, _, op in handler.ops]
    assert ops == ["begin", "run", "rollback", "begin", "run", "run", "rollback"]


async def test_a_draining_connectors_sessions_have_ended(
    relay: WorkerRelay, client: httpx.AsyncClient, handler: SessionPeer, token: str
) -> None:
    with trio.fail_after(30):
        async with session_peer(relay, handler) as p:
            sid = await begin(client, relay, token)
            await p.send(events.Drain("shutting down"))

            async def drained() -> bool:
                return bool((await relay.do_state(client))["draining"] == 1)

            await eventually(drained)
            response = await client.post(sessions_url(relay, sid, "commit"), headers=bearer(token))
    assert response.status_code == 410, response.text
    assert response.json()["error"]["session"] == {
        "id": sid,
        "state": "ended",
        "reason": "connector.draining",
    }
    assert [op for _, _, op in handler.ops] == ["begin"]  # no QUERY after the DRAIN


async def test_every_operation_reaches_the_shard_that_made_the_id(
    idp: DevIdP, client: httpx.AsyncClient, handler: SessionPeer, token: str
) -> None:
    async with open_worker_relay(
        tunnel=TUNNEL, connector_ids=CONNECTORS, issuer=idp.issuer, shards=4
    ) as relay:
        with trio.fail_after(40):
            # one connection: on one of the 4 shards; a begin landing on another falls over
            async with session_peer(relay, handler):
                states = [await relay.do_state(client, shard=k) for k in range(4)]
                home = next(k for k, s in enumerate(states) if s["connections"])
                for _ in range(6):
                    sid = await begin(client, relay, token)
                    assert shard_of(sid, 4) == home
                    response = await client.post(
                        sessions_url(relay, sid, "query"), json={"sql": "x"}, headers=bearer(token)
                    )
                    assert response.status_code == 200, response.text
                    done = await client.post(
                        sessions_url(relay, sid, "commit"), headers=bearer(token)
                    )
                    assert done.json()["reason"] == "committed"
    assert [op for _, _, op in handler.ops] == ["begin", "run", "commit"] * 6


async def test_operations_bypass_admission_begin_does_not(
    idp: DevIdP, client: httpx.AsyncClient, handler: SessionPeer, token: str
) -> None:
    release = trio.Event()
    stalled = trio.Event()

    async def serve(p: Peer, q: events.Query) -> None:
        if q.session is None:  # a one-shot query: holds its admission slot until released
            stalled.set()
            await release.wait()
            await p.done(q.stream_id, rows=0, query_id=q.query_id)
            return
        await handler(p, q)

    settings = {"max_queries_per_identity": 1}
    async with open_worker_relay(
        tunnel=TUNNEL, connector_ids=CONNECTORS, issuer=idp.issuer, tunnel_settings=settings
    ) as relay:
        with trio.fail_after(30):
            async with peer(relay, handler=serve, caps=("session",)), trio.open_nursery() as n:
                sid = await begin(client, relay, token)
                query = f"{relay.handle.http_url}/v1/tunnels/demo/query"
                n.start_soon(partial(client.post, query, json={"sql": "x"}, headers=bearer(token)))
                await stalled.wait()  # alice's one query in flight: her admission cap is full
                second = await client.post(query, json={"sql": "y"}, headers=bearer(token))
                assert second.status_code == 429
                assert second.json()["error"]["limit"] == "identity"
                refused = await client.post(sessions_url(relay), headers=bearer(token))
                assert refused.status_code == 429  # a begin is admitted like a query
                assert refused.json()["error"]["code"] == "limits.too_many_queries"
                run = await client.post(
                    sessions_url(relay, sid, "query"), json={"sql": "z"}, headers=bearer(token)
                )
                assert run.status_code == 200, run.text  # an operation takes no admission slot
                commit = await client.post(
                    sessions_url(relay, sid, "commit"), headers=bearer(token)
                )
                assert commit.status_code == 200, commit.text
                release.set()


async def test_a_client_that_leaves_a_transaction_leaves_nothing(
    relay: WorkerRelay, client: httpx.AsyncClient, handler: SessionPeer, token: str
) -> None:
    cancelled = trio.Event()

    async def endless(p: Peer, q: events.Query) -> None:
        if q.session is None or q.session["op"] != "run":
            await handler(p, q)
            return
        handler.ops.append((p.connector_id, q.session["id"], "run"))
        await p.columns(q.stream_id)
        while q.stream_id not in p.cancels:  # rows until the relay CANCELs the statement
            await p.rows(q.stream_id, [[n] for n in range(500)])
            await trio.lowlevel.checkpoint()
        error = {"code": "query.cancelled", "message": "cancelled", "query_id": q.query_id}
        error["session"] = {"id": q.session["id"], "state": "open"}
        await p.send(events.Error(q.stream_id, line({"error": error})))
        cancelled.set()

    body = json.dumps({"statements": [{"sql": "SELECT n FROM big"}]}).encode()
    port = int(relay.handle.http_url.rsplit(":", 1)[1])
    head = [
        "POST /v1/tunnels/demo/transaction HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        f"Authorization: Bearer {token}",
    ]
    with trio.fail_after(30):
        async with peer(relay, handler=endless, caps=("session",)):
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                await stream.send_all("\r\n".join(head).encode() + b"\r\n\r\n" + body)
                received = b""
                while len(received) < 20_000:  # rows are streaming: then hang up
                    received += await stream.receive_some(65536)
            assert b" 200 " in received.split(b"\r\n", 1)[0]
            await cancelled.wait()
            # the relay rolls back once the CANCELled statement ended
            await eventually(lambda: [op for _, _, op in handler.ops][-1:] == ["rollback"])
    assert [op for _, _, op in handler.ops] == ["begin", "run", "rollback"]
