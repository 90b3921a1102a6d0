"""READ COMMITTED blocking (tdslite/engine/_locks.py): a reader waits for another session's
uncommitted write to a table it reads, until commit or rollback; LOCK_TIMEOUT (1222), ATTENTION,
NOLOCK and SNAPSHOT as SQL Server. python-tds and pyodbc (FreeTDS ODBC) as the clients."""

from __future__ import annotations

import decimal
from typing import Any

import pytest
import trio

from tdslite import TdsServer
from tests.tdslite._tds_helpers import in_thread, wait_until
from tests.tdslite.test_client_pytds import connect

pyodbc = pytest.importorskip("pyodbc")

SETUP = (
    "CREATE TABLE acct (id int PRIMARY KEY, balance decimal(10,2));"
    " INSERT INTO acct VALUES (1, 10.00), (2, 20.00)"
)


def setup(server: TdsServer) -> Any:
    """The table, then a python-tds connection whose open transaction updated row 1."""
    with connect(server) as conn, conn.cursor() as cur:
        cur.execute(SETUP)
    writer = connect(server, autocommit=False)
    with writer.cursor() as cur:
        cur.execute("UPDATE acct SET balance = 99.00 WHERE id = 1")
    return writer


@pytest.mark.parametrize("end", ["commit", "rollback"])
async def test_reader_waits_for_the_writer(tds_server: TdsServer, end: str) -> None:
    writer = await in_thread(setup, tds_server)
    result: list[Any] = []

    def read() -> None:
        with connect(tds_server) as conn, conn.cursor() as cur:
            cur.execute("SELECT balance FROM acct WHERE id = 1")
            result.append(cur.fetchone()[0])

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(in_thread, read)
            await wait_until(lambda: tds_server.engine.locks.waiting == 1)
            assert result == []  # still waiting while the write is uncommitted
            await in_thread(writer.commit if end == "commit" else writer.rollback)
    finally:
        await in_thread(writer.close)
    assert result == [decimal.Decimal("99.00" if end == "commit" else "10.00")]


async def test_lock_timeout_nolock_snapshot_pyodbc(tds_server: TdsServer) -> None:
    from tests.tdslite.test_client_pyodbc import connect as odbc_connect

    writer = await in_thread(setup, tds_server)

    def run() -> dict[str, Any]:
        out: dict[str, Any] = {}
        conn = odbc_connect(tds_server)
        try:
            cur = conn.cursor()
            cur.execute("SET LOCK_TIMEOUT 0")
            try:
                cur.execute("SELECT balance FROM acct WHERE id = 1")
            except pyodbc.Error as exc:
                out["timeout"] = str(exc)
            cur.execute("SELECT @@LOCK_TIMEOUT")
            out["lock_timeout"] = cur.fetchone()[0]
            cur.execute("SELECT balance FROM acct WITH (NOLOCK) WHERE id = 1")
            out["nolock"] = cur.fetchone()[0]
            cur.execute("SET TRANSACTION ISOLATION LEVEL SNAPSHOT")
            cur.execute("SELECT balance FROM acct WHERE id = 1")
            out["snapshot"] = cur.fetchone()[0]
            cur.execute("SET TRANSACTION ISOLATION LEVEL READ COMMITTED")
            try:
                cur.execute("UPDATE acct SET balance = 1 WHERE id = 2")
            except pyodbc.Error as exc:
                out["write"] = str(exc)
        finally:
            conn.close()
        return out

    try:
        out = await in_thread(run)
    finally:
        await in_thread(writer.close)
    assert "1222" in out["timeout"]
    assert out["lock_timeout"] == 0
    # NOLOCK and SNAPSHOT read the last committed value (SQLite cannot show uncommitted rows)
    assert out["nolock"] == out["snapshot"] == decimal.Decimal("10.00")
    assert "1222" in out["write"]  # a writer waits for the other writer too


async def test_attention_ends_the_wait(tds_server: TdsServer) -> None:
    writer = await in_thread(setup, tds_server)

    def read() -> Any:
        with connect(tds_server, timeout=1) as conn, conn.cursor() as cur:
            # python-tds's per-read timeout sends an ATTENTION, which ends the wait
            with pytest.raises(TimeoutError):
                cur.execute("SELECT balance FROM acct WHERE id = 1")
            cur.execute("SELECT 1")  # the connection is usable again
            return cur.fetchone()

    try:
        after = await in_thread(read)
        await wait_until(lambda: tds_server.engine.locks.waiting == 0)
    finally:
        await in_thread(writer.close)
    assert after == (1,)
