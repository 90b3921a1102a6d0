"""Transactions as SQL Server runs them, seen by independent clients (python-tds, Node tedious).

A reset (python-tds pooling's sp_reset_connection RPC, tedious `reset()`'s RESETCONNECTION bit)
with an open transaction rolls it back and says so (ENVCHANGE 10); nested BEGIN TRAN counting;
savepoints by T-SQL and by the Transaction Manager's SAVE request; XACT_ABORT.
"""

from __future__ import annotations

from typing import Any

import pytds
import pytest

from tdslite import TdsServer
from tests.tdslite._tds_helpers import in_thread
from tests.tdslite.test_client_pytds import LONG_QUERY, connect
from tests.tdslite.test_client_tedious import pytestmark as tedious_mark
from tests.tdslite.test_client_tedious import run_plan

NO_TRANSACTION = "00" * 8


def _ids(cur: Any, table: str) -> list[int]:
    cur.execute(f"SELECT id FROM {table} ORDER BY id")
    return [row[0] for row in cur.fetchall()]


async def test_pytds_pooled_connection_reused_after_open_transaction(tds_server: TdsServer) -> None:
    """The first borrower leaves a transaction open; the reset rolls it back and python-tds
    forgets its descriptor, so the next borrower's own transaction works."""

    def run() -> tuple[int, list[int], list[int], list[int]]:
        with connect(tds_server) as setup, setup.cursor() as cur:
            cur.execute("CREATE TABLE pooled (id int PRIMARY KEY)")
        with connect(tds_server, pooling=True, autocommit=False) as conn, conn.cursor() as cur:
            cur.execute("SET XACT_ABORT ON; SET NOCOUNT ON")
            cur.execute("INSERT INTO pooled VALUES (1)")  # never committed
        with connect(tds_server, pooling=True, autocommit=False) as conn, conn.cursor() as cur:
            cur.execute("SELECT @@OPTIONS & (16384 | 512)")
            options = cur.fetchone()[0]  # the reset set XACT_ABORT and NOCOUNT back to OFF
            after_reset = _ids(cur, "pooled")
            cur.execute("INSERT INTO pooled VALUES (2)")
            conn.rollback()
            after_rollback = _ids(cur, "pooled")
            cur.execute("INSERT INTO pooled VALUES (3)")
            conn.commit()
        with connect(tds_server) as other, other.cursor() as cur:
            seen = _ids(cur, "pooled")
        return options, after_reset, after_rollback, seen

    assert await in_thread(run) == (0, [], [], [3])
    kinds = [(e["kind"], e["statement"]) for e in tds_server.statement_log.entries]
    assert ("reset", "sp_reset_connection") in kinds


async def test_pytds_nested_begin_and_savepoints(tds_server: TdsServer) -> None:
    def run() -> list[Any]:
        seen: list[Any] = []
        with connect(tds_server) as conn, conn.cursor() as cur:
            cur.execute("CREATE TABLE sp (id int PRIMARY KEY)")
            cur.execute("BEGIN TRAN outer_tx; BEGIN TRANSACTION; INSERT INTO sp VALUES (1)")
            cur.execute("SAVE TRANSACTION s1; INSERT INTO sp VALUES (2); SAVE TRAN s2")
            cur.execute("INSERT INTO sp VALUES (3); ROLLBACK TRAN s1")
            cur.execute("SELECT @@TRANCOUNT")
            seen.append(cur.fetchone()[0])
            seen.append(_ids(cur, "sp"))
            cur.execute("COMMIT")  # the inner level: nothing committed yet
            cur.execute("SELECT @@TRANCOUNT")
            seen.append(cur.fetchone()[0])
            with pytest.raises(pytds.OperationalError) as no_such:
                cur.execute("ROLLBACK TRAN s2")  # rolled back together with s1
            seen.append(no_such.value.msg_no)
            cur.execute("INSERT INTO sp VALUES (4); COMMIT TRAN outer_tx")
            cur.execute("SELECT @@TRANCOUNT")
            seen.append(cur.fetchone()[0])
            cur.execute("BEGIN TRAN; BEGIN TRAN; INSERT INTO sp VALUES (5); ROLLBACK")
            cur.execute("SELECT @@TRANCOUNT")
            seen.append(cur.fetchone()[0])
            with pytest.raises(pytds.OperationalError) as no_tran:
                cur.execute("SAVE TRAN s3")
            seen.append(no_tran.value.msg_no)
            # savepoint names are case-sensitive; a duplicate name means the latest one
            cur.execute("BEGIN TRAN; SAVE TRAN s; INSERT INTO sp VALUES (6); SAVE TRAN s")
            cur.execute("INSERT INTO sp VALUES (7); ROLLBACK TRAN s")
            with pytest.raises(pytds.OperationalError) as wrong_case:
                cur.execute("ROLLBACK TRAN S")
            seen.append(wrong_case.value.msg_no)
            with pytest.raises(pytds.Error) as too_long:
                cur.execute("SAVE TRAN " + "s" * 33)  # names are at most 32 characters
            seen.append(too_long.value.msg_no)
            cur.execute("COMMIT")
            seen.append(_ids(cur, "sp"))
        return seen

    assert await in_thread(run) == [2, [1], 1, 6401, 0, 0, 628, 6401, 103, [1, 4, 6]]


@tedious_mark
async def test_tedious_reset_rolls_back_and_clears_transaction_state(tds_server: TdsServer) -> None:
    steps = [
        {"sql": "CREATE TABLE tr (id int PRIMARY KEY)"},
        {"tx": "begin"},
        {"sql": "INSERT INTO tr VALUES (1)"},
        {"state": True},
        {"reset": True},
        {"state": True},
        {"sql": "SELECT COUNT(*), @@TRANCOUNT FROM tr"},
        {"tx": "begin"},
        {"sql": "INSERT INTO tr VALUES (2)"},
        {"tx": "commit"},
        {"state": True},
        {"sql": "SELECT id FROM tr"},
    ]
    result = await run_plan(tds_server, steps)
    s = result["steps"]
    assert s[1] == {"tx": None}, result
    assert s[3]["inTransaction"] is True, result
    assert s[3]["descriptor"] != NO_TRANSACTION
    assert s[4] == {"reset": None}
    assert s[5] == {"inTransaction": False, "descriptor": NO_TRANSACTION}, result
    assert s[6]["rows"] == [[0, 0]]
    assert s[7] == s[9] == {"tx": None}, result
    assert s[10] == {"inTransaction": False, "descriptor": NO_TRANSACTION}
    assert s[11]["rows"] == [[2]]


@tedious_mark
async def test_tedious_save_transaction_and_rollback_to_it(tds_server: TdsServer) -> None:
    """tedious `saveTransaction` is the Transaction Manager's SAVE request (type 9); its
    `rollbackTransaction(name)` rolls back to that savepoint and the transaction goes on."""
    steps = [
        {"sql": "CREATE TABLE ts (id int PRIMARY KEY)"},
        {"tx": "begin"},
        {"sql": "INSERT INTO ts VALUES (1)"},
        {"tx": "save", "name": "sp1"},
        {"sql": "INSERT INTO ts VALUES (2)"},
        {"tx": "rollback", "name": "sp1"},
        {"state": True},
        {"sql": "SELECT id, @@TRANCOUNT FROM ts"},
        {"tx": "rollback", "name": "nope"},
        {"tx": "commit"},
        {"state": True},
        {"sql": "SELECT id FROM ts"},
    ]
    result = await run_plan(tds_server, steps)
    s = result["steps"]
    assert [s[i] for i in (1, 3, 5, 9)] == [{"tx": None}] * 4, result
    assert s[6]["inTransaction"] is True
    assert s[7]["rows"] == [[1, 1]]
    assert "No transaction or savepoint of that name" in s[8]["tx"]
    assert s[10] == {"inTransaction": False, "descriptor": NO_TRANSACTION}
    assert s[11]["rows"] == [[1]]


FK_SETUP = [
    {"sql": "CREATE TABLE t1 (a int NOT NULL PRIMARY KEY)"},
    {"sql": "CREATE TABLE t2 (a int NOT NULL REFERENCES t1(a))"},
    {"sql": "INSERT INTO t1 VALUES (1), (3), (4), (6)"},
]


@tedious_mark
async def test_tedious_xact_abort_off_and_on(tds_server: TdsServer) -> None:
    """SQL Server's own SET XACT_ABORT example: with OFF the foreign-key error undoes only its
    statement and the batch (and transaction) go on; with ON it rolls back and ends the batch."""
    steps = [
        *FK_SETUP,
        {
            "sql": "SET XACT_ABORT OFF; BEGIN TRANSACTION; INSERT INTO t2 VALUES (1); "
            "INSERT INTO t2 VALUES (2); INSERT INTO t2 VALUES (3); COMMIT TRANSACTION"
        },
        {"state": True},
        {
            "sql": "SET XACT_ABORT ON; BEGIN TRANSACTION; INSERT INTO t2 VALUES (4); "
            "INSERT INTO t2 VALUES (5); INSERT INTO t2 VALUES (6); COMMIT TRANSACTION"
        },
        {"state": True},
        {"sql": "SELECT a FROM t2 ORDER BY a"},
        {"sql": "SELECT @@TRANCOUNT, @@OPTIONS & 16384"},
    ]
    result = await run_plan(tds_server, steps)
    off, off_state, on, on_state, rows, options = result["steps"][3:]
    assert off["error"]["number"] == 547, result
    assert off_state["inTransaction"] is False
    assert on["error"]["number"] == 547
    assert on_state == {"inTransaction": False, "descriptor": NO_TRANSACTION}, result
    assert rows["rows"] == [[1], [3]], result
    assert options["rows"] == [[0, 16384]]
    outcomes = [
        e["outcome"]
        for e in tds_server.statement_log.entries
        if e["statement"].startswith("SET XACT_ABORT")
    ]
    assert outcomes == [{"rows": 0, "affected": 2, "error": 547}, {"error": 547}]


@tedious_mark
async def test_tedious_statement_errors_go_on_conversion_errors_roll_back(
    tds_server: TdsServer,
) -> None:
    steps = [
        *FK_SETUP,
        {"sql": "SELECT 1 / 0; SELECT 2; INSERT INTO t1 VALUES (1); SELECT 3"},
        {"sql": "BEGIN TRAN; INSERT INTO t1 VALUES (7); SELECT CAST('abc' AS int); SELECT 4"},
        {"state": True},
        {"sql": "SELECT COUNT(*), @@TRANCOUNT FROM t1 WHERE a = 7"},
    ]
    result = await run_plan(tds_server, steps)
    statement_level, conversion, state, count = result["steps"][3:]
    # 8134 then 2627: each undoes its statement only, the batch goes on
    assert statement_level["rows"] == [[2], [3]], result
    assert statement_level["error"]["numbers"] == [8134, 2627]
    # 245 ends the batch and rolls the transaction back even with XACT_ABORT OFF
    assert conversion["rows"] == [], result
    assert conversion["error"]["number"] == 245
    assert state["inTransaction"] is False
    assert count["rows"] == [[0, 0]]


async def test_pytds_xact_abort_on_rolls_back_and_client_knows(tds_server: TdsServer) -> None:
    def run() -> list[Any]:
        seen: list[Any] = []
        with connect(tds_server) as conn, conn.cursor() as cur:
            cur.execute("CREATE TABLE xa (id int PRIMARY KEY)")
            cur.execute("SELECT @@OPTIONS & 16384")
            seen.append(cur.fetchone()[0])
            cur.execute("SET XACT_ABORT ON")
            cur.execute("BEGIN TRAN; INSERT INTO xa VALUES (1)")
            with pytest.raises(pytds.IntegrityError) as dup:
                cur.execute("INSERT INTO xa VALUES (1); SELECT 5")
            seen.append(dup.value.msg_no)
            cur.execute("SELECT @@TRANCOUNT, COUNT(*), @@OPTIONS & 16384 FROM xa")
            seen.append(tuple(cur.fetchone()))
            seen.append(conn._tds_socket.tds72_transaction)  # python-tds's descriptor
            cur.execute("SET XACT_ABORT OFF; BEGIN TRAN; INSERT INTO xa VALUES (1)")
            with pytest.raises(pytds.IntegrityError):
                cur.execute("INSERT INTO xa VALUES (1)")
            cur.execute("COMMIT")
            seen.append(_ids(cur, "xa"))
        return seen

    assert await in_thread(run) == [0, 2627, (0, 0, 16384), 0, [1]]


DROP_IF_EXISTS = [
    {"sql": "DROP TABLE IF EXISTS gone"},
    {"sql": "CREATE TABLE gone (id int); DROP TABLE IF EXISTS dbo.gone, never_was"},
    {"sql": "DROP TABLE IF EXISTS [gone]\nCREATE TABLE gone (id int)\nINSERT INTO gone VALUES (1)"},
    {"sql": "SELECT COUNT(*) FROM gone"},
    {"sql": "DROP VIEW IF EXISTS v"},
    {"sql": "DROP PROCEDURE IF EXISTS p"},
]


@tedious_mark
async def test_tedious_drop_if_exists(tds_server: TdsServer) -> None:
    result = await run_plan(tds_server, DROP_IF_EXISTS)
    s = result["steps"]
    # DROP VIEW|PROCEDURE IF EXISTS of objects that do not exist succeed, as in SQL Server
    assert [step.get("error") for step in s] == [None] * 6, result
    assert s[3]["rows"] == [[1]]


async def test_pytds_drop_if_exists(tds_server: TdsServer) -> None:
    def run() -> list[Any]:
        seen: list[Any] = []
        with connect(tds_server) as conn, conn.cursor() as cur:
            for step in DROP_IF_EXISTS[:3]:
                cur.execute(step["sql"])
            seen.append(_ids(cur, "gone"))
            for step in DROP_IF_EXISTS[4:]:
                cur.execute(step["sql"])
                seen.append(cur.rowcount)
        return seen

    assert await in_thread(run) == [[1], -1, -1]


async def test_pytds_timeout_with_xact_abort_on_rolls_back(tds_server: TdsServer) -> None:
    """python-tds's timeout sends ATTENTION: with XACT_ABORT ON the transaction is rolled back
    (and python-tds told), with OFF it stays open, as SQL Server."""

    def run(xact_abort: str) -> tuple[Any, ...]:
        with connect(tds_server, timeout=2) as conn, conn.cursor() as cur:
            cur.execute(f"SET XACT_ABORT {xact_abort}; BEGIN TRAN")
            cur.execute(f"INSERT INTO late VALUES ('{xact_abort}')")
            with pytest.raises(pytds.TimeoutError):
                cur.execute(LONG_QUERY)
            cur.execute("SELECT @@TRANCOUNT")
            trancount = cur.fetchone()[0]
            descriptor = conn._tds_socket.tds72_transaction
            cur.execute("SELECT COUNT(*) FROM late")
            return trancount, bool(descriptor), cur.fetchone()[0]

    def setup() -> None:
        with connect(tds_server) as conn, conn.cursor() as cur:
            cur.execute("CREATE TABLE ten (i int); CREATE TABLE late (v varchar(3))")
            cur.execute("INSERT INTO ten VALUES " + ", ".join(f"({i})" for i in range(10)))

    await in_thread(setup)
    assert await in_thread(run, "ON") == (0, False, 0)
    assert await in_thread(run, "OFF") == (1, True, 1)


async def test_pyodbc_savepoints_and_drop_if_exists(tds_server: TdsServer) -> None:
    """FreeTDS ODBC, a third client stack: T-SQL savepoints and DROP TABLE IF EXISTS."""
    pyodbc = pytest.importorskip("pyodbc")
    from tests.tdslite.test_client_pyodbc import DRIVERS
    from tests.tdslite.test_client_pyodbc import connect as odbc_connect

    if not DRIVERS:
        pytest.skip("FreeTDS ODBC driver missing: run scripts/install-system-deps")

    def run() -> list[Any]:
        conn = odbc_connect(tds_server)
        try:
            cur = conn.cursor()
            cur.execute("DROP TABLE IF EXISTS od; CREATE TABLE od (id int PRIMARY KEY)")
            cur.execute("BEGIN TRAN; INSERT INTO od VALUES (1); SAVE TRANSACTION s1")
            cur.execute("INSERT INTO od VALUES (2); ROLLBACK TRANSACTION s1")
            cur.execute("SELECT @@TRANCOUNT")
            seen: list[Any] = [cur.fetchone()[0]]
            with pytest.raises(pyodbc.Error) as unknown:
                cur.execute("ROLLBACK TRANSACTION s9")
            seen.append("6401" in str(unknown.value))
            cur.execute("COMMIT")
            cur.execute("SELECT id FROM od")
            seen.append([r[0] for r in cur.fetchall()])
            cur.execute("DROP TABLE IF EXISTS od")
            cur.execute("DROP TABLE IF EXISTS od")  # gone: no error either
            return seen
        finally:
            conn.close()

    assert await in_thread(run) == [1, True, [1]]
