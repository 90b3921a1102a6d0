"""The same end-to-end path against a REAL SQL Server instead of tdslite.

Set EDGETDS_TEST_MSSQL to a semicolon-separated DSN; the test is skipped when it is unset:

    EDGETDS_TEST_MSSQL='host=127.0.0.1;port=1433;user=edgetds_reader;password=...;database=tempdb'
    .venv/bin/pytest tests/e2e/test_sqlserver.py -m sqlserver

Keys: host, port (default 1433), user, password, database (default master), and optionally
cafile (enables TLS; python-tds needs the certificate CN to be the host name). The login only
needs to run SELECT; the test creates nothing. Both policy roles use this one login.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import httpx
import pytest
import trio

from connector.config import load_config
from connector.runtime import open_connector
from edgetds.devidp import open_dev_idp
from tests.support.e2e_stack import Stack, write_conn1_config
from tests.support.relays import start_python_relay

DSN = os.environ.get("EDGETDS_TEST_MSSQL", "")

pytestmark = [
    pytest.mark.sqlserver,
    pytest.mark.skipif(not DSN, reason="EDGETDS_TEST_MSSQL is not set (see module docstring)"),
]


def parse_dsn(text: str) -> dict[str, str]:
    out = {}
    for part in text.split(";"):
        if part.strip():
            key, _, value = part.partition("=")
            out[key.strip().lower()] = value.strip()
    missing = {"host", "user", "password"} - set(out)
    if missing:
        raise ValueError(
            f"EDGETDS_TEST_MSSQL lacks {sorted(missing)} (host=..;user=..;password=..)"
        )
    return out


@pytest.fixture
async def mssql_stack(tmp_path: Path) -> AsyncIterator[Stack]:
    dsn = parse_dsn(DSN)
    async with AsyncExitStack() as contexts:
        idp = await contexts.enter_async_context(open_dev_idp(key_dir=tmp_path / "idp"))
        relay = await contexts.enter_async_context(
            start_python_relay(tunnel="demo", connector_ids=["conn-1"], issuer=idp.issuer)
        )
        login = (dsn["user"], dsn["password"])
        path = write_conn1_config(
            tmp_path,
            relay,
            idp,
            db_host=dsn["host"],
            db_port=int(dsn.get("port", "1433")),
            database=dsn.get("database", "master"),
            logins={"reader": login, "writer": login},
        )
        if dsn.get("cafile"):
            text = path.read_text().replace(
                "login_timeout_s = 3", f'login_timeout_s = 10\ncafile = "{dsn["cafile"]}"'
            )
            path.write_text(text)
        connector = await contexts.enter_async_context(open_connector(load_config(path)))
        http = await contexts.enter_async_context(httpx.AsyncClient(timeout=60))
        with trio.fail_after(30):
            await connector.wait_ready(2)
        yield Stack(idp, None, relay, connector, http, tmp_path)  # type: ignore[arg-type]


async def test_real_sql_server_round_trip(mssql_stack: Stack) -> None:
    stack = mssql_stack
    with trio.fail_after(60):
        resp = await stack.query(
            "SELECT @i AS i, @d AS d, @s AS s, @g AS g, @t AS t, "
            "CAST(SESSION_CONTEXT(N'edgetds.sub') AS nvarchar(100)) AS who",
            params={
                "i": {"type": "bigint", "value": "9007199254740993"},
                "d": {"type": "decimal(18,4)", "value": "12.3400"},
                "s": "héllo",
                "g": {"type": "uniqueidentifier", "value": "6f9619ff-8b86-d011-b42d-00c04fc964ff"},
                "t": {"type": "datetime2(3)", "value": "2024-02-29T12:00:00.997"},
            },
        )
        assert resp.status == 200, resp.lines
        assert resp.rows == [
            [
                "9007199254740993",
                "12.3400",
                "héllo",
                "6f9619ff-8b86-d011-b42d-00c04fc964ff",
                "2024-02-29T12:00:00.997",
                "alice",
            ]
        ]
        err = await stack.query("SELECT * FROM edgetds_no_such_table")
        assert err.status == 422
        assert err.terminal["error"]["sql"]["number"] == 208
        refused = await stack.query("DELETE FROM edgetds_no_such_table")
        assert refused.terminal["error"]["code"] == "policy.not_read_only"
        # the read-only session context survives pooling: a second query sets it again
        again = await stack.query(
            "SELECT CAST(SESSION_CONTEXT(N'edgetds.sub') AS nvarchar(100)) AS who",
            token=stack.token(sub="bob"),
        )
        assert again.rows == [["bob"]]
