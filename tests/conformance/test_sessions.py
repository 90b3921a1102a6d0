"""Conformance: sessions and /transaction (SPEC.md 7.4, 11.5, 11.6) on both relays, end to end:
dev IdP tokens -> relay -> the real connector -> tdslite, whose table contents are the proof of
what was committed."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import trio

from tests.support.conformance import Conformance
from tests.support.sessions_http import SessionClient, make_stock, stock


@pytest.fixture
def client(conf: Conformance) -> SessionClient:
    token = conf.token("bob", groups=["admins"])
    return SessionClient(conf.http, conf.relay.http_url, "demo", token)


async def test_commit_rollback_and_delete(conf: Conformance, client: SessionClient) -> None:
    await make_stock(conf.db)
    with trio.fail_after(60):
        begun = await client.begin(isolation="read committed", timeout_ms=20_000)
        assert begun.status == 201, begun.lines
        assert begun.body["idle_timeout_ms"] == 20_000
        assert begun.body["expires_at"].endswith("Z")
        sid = begun.body["session"]
        moved = await client.query(sid, "UPDATE stock SET qty = qty - 4 WHERE id = 1")
        assert moved.status == 200
        assert moved.body["done"]["session"] == {"id": sid, "state": "open"}
        await client.query(sid, "UPDATE stock SET qty = qty + 4 WHERE id = 2")
        read = await client.query(sid, "SELECT qty FROM stock ORDER BY id")
        assert read.rows == [[6], [4]]
        committed = await client.op(sid, "commit")
        assert (committed.status, committed.body) == (
            200,
            {"session": sid, "state": "ended", "reason": "committed"},
        )
        assert await stock(conf.db) == [(1, 6), (2, 4)]
        twice = await client.op(sid, "commit")
        assert twice.status == 410
        assert twice.error["code"] == "session.ended"
        assert twice.error["session"]["reason"] == "committed"
        after = await client.query(sid, "SELECT 1")
        assert (after.status, after.error["code"]) == (410, "session.ended")

        undone = await client.open()
        await client.query(undone, "UPDATE stock SET qty = 0")
        rolled = await client.op(undone, "rollback")
        assert rolled.body == {"session": undone, "state": "ended", "reason": "rolled_back"}
        deleted = await client.open()
        await client.query(deleted, "UPDATE stock SET qty = 0")
        gone = await client.delete(deleted)
        assert (gone.status, gone.body["reason"]) == (200, "rolled_back")
        assert await stock(conf.db) == [(1, 6), (2, 4)]


async def test_a_failing_second_statement_is_rolled_back_with_the_first(
    conf: Conformance, client: SessionClient
) -> None:
    await make_stock(conf.db)
    with trio.fail_after(60):
        sid = await client.open()
        first = await client.query(sid, "UPDATE stock SET qty = qty - 5 WHERE id = 1")
        assert first.status == 200
        second = await client.query(sid, "INSERT INTO stock (id, qty) VALUES (1, 5)")
        assert second.status == 422
        assert second.error["sql"]["number"] == 2627
        assert second.error["session"] == {"id": sid, "state": "open"}
        assert (await client.op(sid, "rollback")).status == 200
        assert await stock(conf.db) == [(1, 10), (2, 0)]

        doomed = await client.open()
        await client.query(doomed, "UPDATE stock SET qty = 1 WHERE id = 2")
        bad = await client.query(doomed, "SELECT CAST(N'x' AS int)")
        assert bad.status == 422
        assert bad.error["session"] == {
            "id": doomed,
            "state": "ended",
            "reason": "rolled_back_by_server",
        }
        late = await client.op(doomed, "commit")
        assert (late.status, late.error["session"]["reason"]) == (410, "rolled_back_by_server")
        assert await stock(conf.db) == [(1, 10), (2, 0)]


async def test_savepoints_isolation_and_refused_control(
    conf: Conformance, client: SessionClient
) -> None:
    await make_stock(conf.db)
    with trio.fail_after(60):
        sid = await client.open()
        await client.query(sid, "UPDATE stock SET qty = 7 WHERE id = 2")  # not committed
        # the isolation level is applied: a READ COMMITTED reader waits for the writer (here
        # until its lock timeout: 1222), a READ UNCOMMITTED one does not (tdslite then reads
        # the last committed row; SQL Server would read the uncommitted 7)
        strict = await client.open(isolation="read committed")
        await client.query(strict, "SET LOCK_TIMEOUT 100")
        waited = await client.query(strict, "SELECT qty FROM stock WHERE id = 2")
        assert (waited.status, waited.error["sql"]["number"]) == (422, 1222)
        dirty = await client.open(isolation="read uncommitted")
        await client.query(dirty, "SET LOCK_TIMEOUT 100")
        seen = await client.query(dirty, "SELECT qty FROM stock WHERE id = 2")
        assert seen.rows == [[0]]
        for other in (strict, dirty):
            assert (await client.op(other, "rollback")).status == 200
        saved = await client.op(sid, "savepoint", name="before_all")
        assert saved.body == {"session": sid, "state": "open"}
        await client.query(sid, "UPDATE stock SET qty = 1000")
        back = await client.op(sid, "rollback_to", name="before_all")
        assert back.status == 200
        refused = await client.query(sid, "COMMIT")
        assert (refused.status, refused.error["code"]) == (403, "policy.denied")
        bad_name = await client.op(sid, "savepoint", name="1; DROP TABLE stock")
        assert (bad_name.status, bad_name.error["code"]) == (400, "request.invalid")
        assert (await client.op(sid, "commit")).status == 200
        assert await stock(conf.db) == [(1, 10), (2, 7)]


async def test_transaction_is_all_or_nothing(conf: Conformance, client: SessionClient) -> None:
    await make_stock(conf.db)
    with trio.fail_after(60):
        ok = await client.transaction(
            [
                {"sql": "UPDATE stock SET qty = qty - @n WHERE id = 1", "params": {"n": 3}},
                {"sql": "UPDATE stock SET qty = qty + @n WHERE id = 2", "params": {"n": 3}},
                {"sql": "SELECT id, qty FROM stock ORDER BY id"},
            ]
        )
        assert ok.status == 200
        statements = [line["statement"] for line in ok.lines if "statement" in line]
        assert [s["index"] for s in statements] == [0, 1, 2]
        assert ok.rows == [[1, 7], [2, 3]]
        done = ok.body["done"]
        assert done["statements"] == 3
        assert done["session"]["reason"] == "committed"
        assert await stock(conf.db) == [(1, 7), (2, 3)]

        failed = await client.transaction(
            [
                {"sql": "UPDATE stock SET qty = qty - 7 WHERE id = 1"},
                {"sql": "INSERT INTO stock (id, qty) VALUES (2, 1)"},
                {"sql": "UPDATE stock SET qty = 0"},
            ]
        )
        assert failed.status == 200
        assert failed.error["statement"] == 1
        assert failed.error["code"] == "sql.error"
        assert failed.error["session"]["state"] == "ended"
        assert [line["statement"]["index"] for line in failed.lines if "statement" in line] == [0]
        assert await stock(conf.db) == [(1, 7), (2, 3)]


async def test_unknown_foreign_and_capped_sessions(
    conf: Conformance, client: SessionClient
) -> None:
    with trio.fail_after(120):
        unknown = await client.query("A" * 22, "SELECT 1")
        assert (unknown.status, unknown.error["code"]) == (404, "session.not_found")
        sid = await client.open()
        mallory = conf.token("mallory", groups=["admins"])
        stolen = await client.query(sid, "SELECT 1", token=mallory)
        assert (stolen.status, stolen.error["code"]) == (403, "session.wrong_identity")
        stolen_commit = await client.op(sid, "commit", token=mallory)
        assert stolen_commit.status == 403
        assert (await client.op(sid, "rollback")).status == 200
        # one identity: at most 8 open sessions at the relay; the rest are refused at once
        opened = [await client.open() for _ in range(8)]
        over = await client.begin()
        assert (over.status, over.error["code"]) == (429, "limits.too_many_sessions")
        assert over.error["limit"] == "identity"
        assert int(over.headers["retry-after"]) >= 1
        for sid in opened:
            assert (await client.delete(sid)).status == 200
        assert conf.connector.service.sessions.open_sessions() == []
        assert (await client.begin()).status == 201


async def test_idle_client_and_lost_connector_roll_back(
    conf: Conformance, client: SessionClient
) -> None:
    await make_stock(conf.db)
    manager = conf.connector.service.sessions
    with trio.fail_after(60):
        idle = await client.open(timeout_ms=300)  # a client that never commits
        await client.query(idle, "UPDATE stock SET qty = 99 WHERE id = 1")
        while manager.open_sessions():
            await manager.wait_changed()
        expired = await client.op(idle, "commit")
        assert (expired.status, expired.error["session"]["reason"]) == (410, "idle_timeout")

        cut = await client.open()
        await client.query(cut, "UPDATE stock SET qty = 55 WHERE id = 2")
        await conf.proxy.cut()  # the connector's network goes mid-transaction
        while manager.open_sessions():
            await manager.wait_changed()
        lost = await client.op(cut, "commit")
        # 410 once the relay saw the connection go, 502 if the commit raced the loss (SPEC 11.5)
        if lost.status == 410:
            assert lost.error["session"]["reason"] == "transport.lost"
        else:
            assert (lost.status, lost.error["code"]) == (502, "transport.lost")
        assert await stock(conf.db) == [(1, 10), (2, 0)]


async def test_the_next_op_may_follow_the_answer_at_once(
    conf: Conformance, client: SessionClient
) -> None:
    """A session is not busy any more once its client has the whole answer: 60 statements sent
    back to back, each the moment the previous answer ended and on another HTTP connection than
    the last (a server answers one connection's requests in turn), never meet session.busy."""
    await make_stock(conf.db)
    with trio.fail_after(120):
        sid = await client.open()
        async with httpx.AsyncClient(timeout=60) as other_http:
            other = SessionClient(other_http, conf.relay.http_url, "demo", client.token)
            for i in range(60):
                on = (client, other)[i % 2]
                answer = await on.query(sid, "UPDATE stock SET qty = qty + 1 WHERE id = 2")
                assert answer.status == 200, (i, answer.lines)
        assert (await client.op(sid, "commit")).status == 200
        assert await stock(conf.db) == [(1, 10), (2, 60)]


async def test_a_client_that_hangs_up_mid_transaction_commits_nothing(
    conf: Conformance, client: SessionClient
) -> None:
    """POST /transaction whose client goes away after the first statement's result: nothing is
    committed, and the locks go with the rollback. The Python relay sees the hang-up at once,
    cancels the running statement and rolls back (the connector lets a rollback preempt the
    cancelled op: without that the session held its locks until its 30 s idle timeout); the
    Worker sees the hang-up only at its next write, so there the statement's 5 s timeout ends
    it, which ends the session (rolled back), never the 40 s WAITFOR and a COMMIT."""
    await make_stock(conf.db)
    body: dict[str, Any] = {} if conf.kind == "python" else {"timeout_ms": 5000}
    body |= {
        "statements": [
            {"sql": "UPDATE stock SET qty = 0 WHERE id = 1", "params": {}},
            {"sql": "WAITFOR DELAY '00:00:40'", "params": {}},
            {"sql": "UPDATE stock SET qty = 99 WHERE id = 2", "params": {}},
        ],
    }
    payload = json.dumps(body).encode()
    host, port = conf.relay.http_url.removeprefix("http://").rsplit(":", 1)
    head = [
        "POST /v1/tunnels/demo/transaction HTTP/1.1",
        f"Host: {host}:{port}",
        "Content-Type: application/json",
        f"Content-Length: {len(payload)}",
        f"Authorization: Bearer {client.token}",
    ]
    with trio.fail_after(20):  # running on to the COMMIT takes 40 s; the idle timeout 30 s
        stream = await trio.open_tcp_stream(host, int(port))
        async with stream:  # closed (the client hangs up) once the first statement's line came
            await stream.send_all("\r\n".join(head).encode() + b"\r\n\r\n" + payload)
            received = b""
            while b'{"statement"' not in received:
                received += await stream.receive_some(65536)
            assert b" 200 " in received.split(b"\r\n", 1)[0]
        # a committed read waits for the transaction's locks: it answers once it rolled back
        assert await stock(conf.db) == [(1, 10), (2, 0)]


async def test_bad_text_and_parameters_in_a_session_or_transaction_are_400(
    conf: Conformance, client: SessionClient
) -> None:
    """A statement with a lone surrogate (the JSON escape \\ud800), or a parameter that is no
    parameter value, is refused as /query refuses it (400 request.invalid), and the session
    stays open."""

    async def post(path: str, body: bytes) -> httpx.Response:
        headers = {"Authorization": f"Bearer {client.token}", "Content-Type": "application/json"}
        return await conf.http.post(client.base + path, content=body, headers=headers)

    surrogate = b'{"sql": "SELECT \\ud800"}'
    not_a_value = b'{"sql": "SELECT @x", "params": {"x": [[1]]}}'
    with trio.fail_after(60):
        sid = await client.open()
        for body in (surrogate, not_a_value):
            bad = await post(f"/sessions/{sid}/query", body)
            assert bad.status_code == 400, bad.text
            assert bad.json()["error"]["code"] == "request.invalid"
        still = await client.query(sid, "SELECT 1 AS one")
        assert (still.status, still.rows) == (200, [[1]])
        assert (await client.op(sid, "rollback")).status == 200
        for body in (surrogate, not_a_value):
            answer = await post(
                "/transaction", b'{"statements": [{"sql": "SELECT 1"}, ' + body + b"]}"
            )
            assert answer.status_code == 400, answer.text
            assert answer.json()["error"]["code"] == "request.invalid"
