"""connector/execute.py against a real tdslite: a reused pooled connection is reset by the
RESETCONNECTION flag on the session-context request (no sp_reset_connection RPC of its own), so
nothing of the last borrower remains and the read-only session keys are set afresh; and a session
context SQL Server refuses fails the query closed: the statement is never sent."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

import tdslite
from connector.config import DatabaseConfig, LoginConfig
from connector.execute import ExecRequest, execute, execute_pinned
from connector.pool import LoginPool
from connector.results import CancelToken, QueryFailed
from tdslite import StatementLog
from tests.support.e2e_stack import TDSLITE_USERS, admin_batch
from tests.support.sinks import CollectSink


@asynccontextmanager
async def reader_pool(
    tmp_path: Path,
    statement_log: StatementLog | None = None,
    *,
    size: int = 1,
    setup: Sequence[str] = (),
) -> AsyncIterator[LoginPool]:
    """A fresh tdslite (logins reader/writer/admin; ``setup`` run as admin first) and a pool of
    ``size`` connections (ONE by default) of its reader login."""
    users = tmp_path / "users.toml"
    users.write_text(TDSLITE_USERS)
    async with tdslite.open_server(users=users, statement_log=statement_log) as server:
        if setup:
            await trio.to_thread.run_sync(admin_batch, server, setup)
        db = DatabaseConfig(
            host=server.host,
            port=server.port,
            database=server.engine.database,
            logins={"reader": LoginConfig("reader", "reader", "reader-pw", pool_size=size)},
            validate_host=False,
        )
        pool = LoginPool(db, db.logins["reader"], query_timeout_s=30)
        try:
            yield pool
        finally:
            await pool.aclose()


async def _run(pool: LoginPool, sql: str, sub: str) -> list[list[object]]:
    sink = CollectSink()
    req = ExecRequest(
        query_id=f"q-{sub}",
        sql=sql,
        params=[],
        context={"edgetds.sub": sub, "edgetds.iss": "https://idp", "edgetds.query_id": "q"},
    )
    await execute(pool, req, sink, CancelToken())
    lines = [json.loads(line) for line in sink.data.splitlines()]
    return [line for line in lines if isinstance(line, list)]


async def test_reused_connection_is_reset_by_the_flag_not_an_rpc(tmp_path: Path) -> None:
    log = StatementLog()
    with trio.fail_after(30):
        async with reader_pool(tmp_path, log) as pool:
            sql = "SELECT CAST(SESSION_CONTEXT(N'edgetds.sub') AS nvarchar(100)) AS s"
            assert await _run(pool, sql, "alice") == [["alice"]]
            # pool_size 1: the same connection again; its read-only keys would refuse a
            # second sp_set_session_context unless the session was reset first
            assert await _run(pool, sql, "bob") == [["bob"]]
            assert pool.statistics().opened == 1
    resets = [e for e in log.entries if e["kind"] == "reset"]
    assert [e["statement"] for e in resets] == ["RESETCONNECTION"]
    assert not any("sp_reset_connection" in e["statement"] for e in log.entries)


async def test_a_refused_session_context_never_runs_the_statement(tmp_path: Path) -> None:
    """SQL Server answers the session-context request with an error (here 15664: the read-only
    keys a previous query set, on a connection handed out as if it were new, so without the
    reset): the query fails with connector.database_unavailable, the statement is never sent,
    nothing of a result reaches the client, and the connection is discarded."""
    log = StatementLog()
    secret = "SELECT N'must not reach the client' AS s"
    with trio.fail_after(30):
        async with reader_pool(tmp_path, log) as pool:
            sql = "SELECT CAST(SESSION_CONTEXT(N'edgetds.sub') AS nvarchar(100)) AS s"
            assert await _run(pool, sql, "alice") == [["alice"]]
            sink = CollectSink()
            req = ExecRequest(
                query_id="q-bob",
                sql=secret,
                params=[],
                context={"edgetds.sub": "bob", "edgetds.iss": "https://idp"},
            )
            async with pool.borrow() as pc:
                pc.used = False  # no RESETCONNECTION: alice's read-only keys are still set
                with pytest.raises(QueryFailed) as failed:
                    await execute_pinned(pool, pc, req, sink, CancelToken())
                broken = pc.broken
    assert failed.value.code == "connector.database_unavailable"
    assert "set up the session" in failed.value.message
    assert "15664" in (failed.value.detail or "")  # the cause is logged, never sent
    assert sink.data == b""
    assert broken
    assert not any(secret in str(e.get("statement")) for e in log.entries)
