"""SQL Server down: the connector stays connected to the relay, queries fail fast with a typed
error, and it recovers by itself when the database returns (stale pooled connections are
replaced without failing a query)."""

from __future__ import annotations

from pathlib import Path

import httpx
import trio

from connector.config import load_config
from connector.runtime import open_connector
from edgetds.devidp import open_dev_idp
from tdslite import open_server
from tests.support.connector_keys import closed_port
from tests.support.e2e_stack import TDSLITE_USERS, Stack, write_conn1_config
from tests.support.relays import start_python_relay


async def test_database_restart(tmp_path: Path) -> None:
    users = tmp_path / "users.toml"
    users.write_text(TDSLITE_USERS)
    port = closed_port()
    with trio.fail_after(60):
        async with (
            open_dev_idp(key_dir=tmp_path / "idp") as idp,
            start_python_relay(tunnel="demo", connector_ids=["conn-1"], issuer=idp.issuer) as relay,
        ):
            path = write_conn1_config(
                tmp_path,
                relay,
                idp,
                db_host="127.0.0.1",
                db_port=port,
                database="tdslite",
            )
            async with (
                open_connector(load_config(path)) as connector,
                httpx.AsyncClient(timeout=30) as http,
            ):
                await connector.wait_ready(2)
                stack = Stack(idp, None, relay, connector, http, tmp_path)  # type: ignore[arg-type]
                async with open_server(users=users, db=":memory:", port=port):
                    for _ in range(3):  # several pooled connections get used
                        ok = await stack.query("SELECT 1 AS one")
                        assert ok.rows == [[1]]
                # the database is gone: a typed error, fast; the tunnel stays up
                started = trio.current_time()
                down = await stack.query("SELECT 1 AS one")
                assert down.status == 503, down.lines
                assert down.terminal["error"]["code"] == "connector.database_unavailable"
                assert trio.current_time() - started < 10
                assert connector.ready_links == 2
                async with open_server(users=users, db=":memory:", port=port):
                    back = await stack.query("SELECT 2 AS two")
                    assert back.status == 200, back.lines
                    assert back.rows == [[2]]
                    again = await stack.query("SELECT 3 AS three")
                    assert again.rows == [[3]]
                # a restart nobody queried through: the idle connections are dead, the next
                # query still succeeds (the stale connection is replaced before the statement)
                async with open_server(users=users, db=":memory:", port=port):
                    quiet = await stack.query("SELECT 4 AS four")
                    assert quiet.status == 200, quiet.lines
                    assert quiet.rows == [[4]]
                stats = {p.login: p for p in connector.service.pools.statistics()}
                assert stats["reader"].discarded >= 1
