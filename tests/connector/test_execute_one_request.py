"""The session context and a plain SELECT in ONE TDS request (connector/execute.py
``ExecRequest.one_request``), against a real tdslite behind a wire tap: a TCP relay on 127.0.0.1
that reads each request message the connector sends (type, RESETCONNECTION, the RPCs in it).

- a statement the read-only check classified as one plain SELECT goes as two RPCs of one request;
  a write, a named query and SQL of a role without the check keep two requests (service level,
  through a real connector and a scripted relay);
- the answer is byte-identical in both forms;
- a context SQL Server refuses fails the query closed: nothing of the statement's answer reaches
  the client and the connection is never reused;
- a pooled connection that died while idle is replaced and the SELECT re-run (the retry)."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

import tdslite
from connector.config import DatabaseConfig, LoginConfig, load_config
from connector.encode import BoundParam
from connector.execute import ExecRequest, execute, execute_pinned
from connector.pool import LoginPool
from connector.results import CancelToken, QueryFailed
from connector.runtime import open_connector
from edgetds.devidp import DevIdP
from tdslite import StatementLog
from tests.connector.rogue_relay import RogueRelay
from tests.support.connector_keys import Keys, config_for
from tests.support.connector_stack import TDSLITE_USERS
from tests.support.sinks import CollectSink
from tests.support.wiretap import RPC, SQL_BATCH, WireTap

ADMIN = '[users.owner]\npassword = "owner-pw"\nrole = "admin"\n'


@asynccontextmanager
async def tapped_pool(
    tmp_path: Path, log: StatementLog | None = None
) -> AsyncIterator[tuple[LoginPool, WireTap]]:
    """A fresh tdslite, a wire tap in front of it, a pool of ONE reader connection through it."""
    users = tmp_path / "users.toml"
    users.write_text(TDSLITE_USERS)
    async with tdslite.open_server(users=users, statement_log=log) as server:
        tap = WireTap(server.port)
        async with trio.open_nursery() as nursery:
            await nursery.start(tap.serve)
            db = DatabaseConfig(
                host="127.0.0.1",
                port=tap.port,
                database=server.engine.database,
                logins={"reader": LoginConfig("reader", "reader", "reader-pw", pool_size=1)},
                validate_host=False,
            )
            pool = LoginPool(db, db.logins["reader"], query_timeout_s=30)
            try:
                yield pool, tap
            finally:
                await pool.aclose()
                nursery.cancel_scope.cancel()


def _req(sql: str, sub: str, *, one: bool, params: Sequence[BoundParam] = ()) -> ExecRequest:
    return ExecRequest(
        query_id=f"q-{sub}",
        sql=sql,
        params=list(params),
        context={"edgetds.sub": sub, "edgetds.iss": "https://idp", "edgetds.query_id": "q"},
        one_request=one,
    )


async def _run(pool: LoginPool, req: ExecRequest) -> bytes:
    sink = CollectSink()
    await execute(pool, req, sink, CancelToken())
    return sink.data


def _rows(data: bytes) -> list[Any]:
    return [line for line in map(json.loads, data.splitlines()) if isinstance(line, list)]


SESSION_SQL = "SELECT CAST(SESSION_CONTEXT(N'edgetds.sub') AS nvarchar(100)) AS s"


async def test_one_request_carries_context_and_select_and_answers_the_same(
    tmp_path: Path,
) -> None:
    typed = (
        "SELECT CAST(SESSION_CONTEXT(N'edgetds.sub') AS nvarchar(100)) AS s, @n AS n, "
        "CAST(12.50 AS decimal(10, 2)) AS d, N'caf\u00e9' AS t, NULL AS z "
        "UNION ALL SELECT N'second', @n + 1, 0.5, N'', 1"
    )
    n = [BoundParam("@n", "int", 41)]
    with trio.fail_after(60):
        async with tapped_pool(tmp_path) as (pool, tap):
            answers = {}
            for one in (False, True):
                before = len(tap.requests())
                answers[one] = (
                    await _run(pool, _req(typed, "alice", one=one, params=n)),
                    await _run(pool, _req(SESSION_SQL, "bob", one=one)),
                )
                sent = tap.requests()[before:]
                if one:  # each query: ONE RPC request, the context then the statement
                    assert [(m.type, len(m.calls)) for m in sent] == [(RPC, 2), (RPC, 2)]
                    assert [m.calls[1] for m in sent] == [
                        ("sp_executesql", typed),
                        ("sp_executesql", SESSION_SQL),
                    ]
                else:  # the context, then the statement (an RPC with parameters, else a batch)
                    assert [(m.type, len(m.calls)) for m in sent] == [
                        (RPC, 1),
                        (RPC, 1),
                        (RPC, 1),
                        (SQL_BATCH, 0),
                    ]
            context = [m for m in tap.requests() if m.calls and "sp_set_session" in m.calls[0][1]]
            # the pool's one connection, reused: RESETCONNECTION on every context request's first
            # packet but the very first (a new connection); never on a statement of its own
            assert [m.reset for m in context] == [False, True, True, True]
            assert not any(m.reset for m in tap.requests() if m not in context)
            assert pool.statistics().opened == 1
    assert answers[True] == answers[False]  # byte for byte
    assert _rows(answers[True][0]) == [
        ["alice", 41, "12.50", "caf\u00e9", None],
        ["second", 42, "0.50", "", 1],
    ]
    assert _rows(answers[True][1]) == [["bob"]]


async def test_a_refused_context_never_lets_the_select_answer_reach_the_client(
    tmp_path: Path,
) -> None:
    """SQL Server refuses the session context (15664: the read-only keys a previous query set,
    on a connection handed out without the reset) while the SELECT went in the same request: the
    query fails with connector.database_unavailable as a refused context always does, not one
    byte of the SELECT's answer reaches the client, and the connection is never reused."""
    log = StatementLog()
    secret = "SELECT N'must not reach the client' AS s"
    with trio.fail_after(60):
        async with tapped_pool(tmp_path, log) as (pool, tap):
            assert _rows(await _run(pool, _req(SESSION_SQL, "alice", one=True))) == [["alice"]]
            sink = CollectSink()
            async with pool.borrow() as pc:
                pc.used = False  # no RESETCONNECTION: alice's read-only keys are still set
                with pytest.raises(QueryFailed) as failed:
                    await execute_pinned(
                        pool, pc, _req(secret, "bob", one=True), sink, CancelToken()
                    )
                broken = pc.broken
            # the next query gets a new connection, not the one that saw the refusal
            assert _rows(await _run(pool, _req(SESSION_SQL, "carol", one=True))) == [["carol"]]
            assert pool.statistics().opened == 2
            refused = [m for m in tap.requests() if m.calls[1:] == [("sp_executesql", secret)]]
    assert len(refused) == 1  # the SELECT was sent, in the context's request
    assert failed.value.code == "connector.database_unavailable"
    assert "set up the session" in failed.value.message
    assert "15664" in (failed.value.detail or "")  # the cause is logged, never sent
    assert "must not reach" not in failed.value.message + str(failed.value.sql)
    assert sink.data == b""
    assert broken
    assert [e["outcome"] for e in log.entries if "sp_set_session" in e["statement"]][1] == {
        "error": 15664
    }


async def test_a_stale_pooled_connection_is_replaced_and_the_select_run_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The pooled connection dies while idle (the link is cut): the one request that carries the
    reset, the context and the SELECT fails in transport; the SELECT runs again on a new
    connection (it changes nothing, and nothing of the failed attempt reached the client)."""
    caplog.set_level(logging.INFO, logger="edgetds.connector.execute")
    with trio.fail_after(60):
        async with tapped_pool(tmp_path) as (pool, tap):
            assert _rows(await _run(pool, _req(SESSION_SQL, "alice", one=True))) == [["alice"]]
            await tap.cut()
            data = await _run(pool, _req(SESSION_SQL, "bob", one=True))
            assert pool.statistics().opened == 2
    assert _rows(data) == [["bob"]]
    assert data.count(b"\n") == 2  # the columns line and one row: nothing twice
    assert "stale pooled connection replaced" in caplog.text


async def test_only_a_checked_plain_select_goes_in_one_request(
    tmp_path: Path, keys: Keys, idp: DevIdP, rogue: RogueRelay
) -> None:
    """Through a real connector: the analyst's ad-hoc SELECT (read-only role, checked) is one
    request; the analyst's named query (not checked per request) and everything of the admin
    role (no read-only check: its writes, even its SELECT) keep two requests, the statement
    only after the context."""
    users = tmp_path / "users.toml"
    users.write_text(TDSLITE_USERS + ADMIN)
    analyst = idp.mint(sub="alice", groups=["analysts"])
    admin = idp.mint(sub="root", groups=["admins"])
    with trio.fail_after(60):
        async with (
            tdslite.open_server(users=users, seed="sample") as db,
            trio.open_nursery() as nursery,
        ):
            tap = WireTap(db.port)
            await nursery.start(tap.serve)
            path = config_for(
                tmp_path,
                keys,
                idp,
                rogue.ws_url,
                db_port=tap.port,
                database=db.engine.database,
                ha_connections=1,
            )
            async with open_connector(load_config(path)) as connector:
                await connector.wait_ready()
                session = await rogue.wait_session()
                await session.ready.wait()
                shapes = {}
                for name, token, kw in [
                    ("write", admin, {"sql": "UPDATE products SET price = price WHERE id = 1"}),
                    ("admin select", admin, {"sql": "SELECT name FROM products"}),
                    ("named", analyst, {"query": "echo_int", "params": {"n": 5}}),
                    ("select", analyst, {"sql": "SELECT name FROM products"}),
                    ("batch", analyst, {"sql": "SELECT 1 AS a; SELECT 2 AS b"}),
                ]:
                    before = len(tap.requests())
                    result = await session.query(token=token, **kw)
                    await result.done.wait()
                    want = "error" if name == "batch" else "done"  # not read-only: refused
                    assert result.terminal == want, (name, result.body)
                    shapes[name] = [
                        (m.type, [c[0] for c in m.calls]) for m in tap.requests()[before:]
                    ]
            nursery.cancel_scope.cancel()
    ctx = (RPC, ["sp_executesql"])
    assert shapes == {
        "write": [ctx, (SQL_BATCH, [])],
        "admin select": [ctx, (SQL_BATCH, [])],
        "named": [ctx, (RPC, ["sp_executesql"])],
        "select": [(RPC, ["sp_executesql", "sp_executesql"])],
        "batch": [],  # refused by the policy: nothing reaches the database
    }
