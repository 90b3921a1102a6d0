"""connector/execute.py against a real tdslite: a reused pooled connection is reset by the
RESETCONNECTION flag on the session-context request (no sp_reset_connection RPC of its own), so
nothing of the last borrower remains and the read-only session keys are set afresh."""

from __future__ import annotations

import json
from pathlib import Path

import trio

import tdslite
from connector.config import DatabaseConfig, LoginConfig
from connector.execute import ExecRequest, execute
from connector.pool import LoginPool
from connector.results import CancelToken
from tdslite import StatementLog
from tests.support.connector_stack import TDSLITE_USERS


class _Collect:
    def __init__(self) -> None:
        self.data = b""

    async def send_columns(self, data: bytes, *, flush: bool = True) -> None:
        self.data += data

    async def send_rows(self, data: bytes, *, flush: bool = True) -> None:
        self.data += data


async def _run(pool: LoginPool, sql: str, sub: str) -> list[list[object]]:
    sink = _Collect()
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
    users = tmp_path / "users.toml"
    users.write_text(TDSLITE_USERS)
    log = StatementLog()
    with trio.fail_after(30):
        async with tdslite.open_server(users=users, statement_log=log) as server:
            db = DatabaseConfig(
                host=server.host,
                port=server.port,
                database=server.engine.database,
                logins={"reader": LoginConfig("reader", "reader", "reader-pw", pool_size=1)},
                validate_host=False,
            )
            pool = LoginPool(db, db.logins["reader"], query_timeout_s=30)
            try:
                sql = "SELECT CAST(SESSION_CONTEXT(N'edgetds.sub') AS nvarchar(100)) AS s"
                assert await _run(pool, sql, "alice") == [["alice"]]
                # pool_size 1: the same connection again; its read-only keys would refuse a
                # second sp_set_session_context unless the session was reset first
                assert await _run(pool, sql, "bob") == [["bob"]]
                assert pool.statistics().opened == 1
            finally:
                await pool.aclose()
    resets = [e for e in log.entries if e["kind"] == "reset"]
    assert [e["statement"] for e in resets] == ["RESETCONNECTION"]
    assert not any("sp_reset_connection" in e["statement"] for e in log.entries)
