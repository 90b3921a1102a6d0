"""T-SQL control flow, error handling, session functions and SET options as SQL Server runs them,
seen by independent clients: python-tds, pyodbc over FreeTDS ODBC and Node tedious.

IF/ELSE, BEGIN...END, WHILE/BREAK/CONTINUE, RETURN; TRY...CATCH with ERROR_*(), THROW (and the
rethrow), RAISERROR (formats, INFO below severity 11, several errors in one batch, WITH NOWAIT);
doomed transactions (XACT_STATE() -1, 3930, 3998); INFO 3621 after a terminated DML statement;
OBJECT_ID, DB_ID, SERVERPROPERTY, HOST_NAME, @@ globals; SET options in @@OPTIONS and their reset;
WAITFOR DELAY cancelled by ATTENTION.
"""

from __future__ import annotations

from typing import Any

import pytds
import pytest

from tdslite import TdsServer
from tests.tdslite._tds_helpers import in_thread
from tests.tdslite.test_client_pyodbc import DRIVERS
from tests.tdslite.test_client_pyodbc import connect as odbc_connect
from tests.tdslite.test_client_pytds import connect
from tests.tdslite.test_client_tedious import pytestmark as tedious_mark
from tests.tdslite.test_client_tedious import run_plan

odbc_mark = pytest.mark.skipif(not DRIVERS, reason="FreeTDS ODBC driver missing")

#: IF/ELSE, nested BEGIN...END, WHILE with CONTINUE and BREAK, RETURN: rows 1, 3 then 'b'.
FLOW = """
DECLARE @i int = 0, @seen nvarchar(20) = N'';
WHILE @i < 10
BEGIN
    SET @i = @i + 1;
    IF @i = 2 CONTINUE;
    IF @i = 4 BREAK;
    SET @seen = @seen + CAST(@i AS nvarchar(2));
END
IF @seen = N'13' SELECT @seen AS seen ELSE SELECT N'wrong' AS seen;
IF EXISTS (SELECT 1 FROM flow_t WHERE id = 2)
    BEGIN SELECT N'a' END
ELSE IF (SELECT COUNT(*) FROM flow_t) = 1
    BEGIN SELECT N'b' END
ELSE SELECT N'c';
RETURN;
SELECT N'never';
"""

#: TRY...CATCH: the caught error's details, then THROW rethrows it to the client.
CATCH = """
BEGIN TRY
    INSERT INTO flow_t VALUES (1);
    SELECT N'not reached';
END TRY
BEGIN CATCH
    SELECT ERROR_NUMBER(), ERROR_SEVERITY(), ERROR_STATE(), ERROR_LINE(), ERROR_PROCEDURE(),
           LEFT(ERROR_MESSAGE(), 35), @@ERROR;
    THROW;
END CATCH
"""

#: Statement errors in a transaction inside TRY with XACT_ABORT ON: the transaction is doomed.
DOOMED = """
SET XACT_ABORT ON;
BEGIN TRAN;
BEGIN TRY
    INSERT INTO flow_t VALUES (5);
    INSERT INTO flow_t VALUES (1);
END TRY
BEGIN CATCH
    SELECT XACT_STATE(), ERROR_NUMBER();
END CATCH
"""


def _setup(cur: Any) -> None:
    cur.execute("CREATE TABLE flow_t (id int PRIMARY KEY)")
    cur.execute("INSERT INTO flow_t VALUES (1)")


def _drain(cur: Any, sql: str, sets: list[Any]) -> None:
    """Run ``sql`` and append each result set's rows to ``sets``; an error in it raises here
    (python-tds and pyodbc raise a batch's error when they reach it)."""
    cur.execute(sql)
    while True:
        if cur.description:
            sets.append([tuple(r) for r in cur.fetchall()])
        if not cur.nextset():
            return


def _all_sets(cur: Any) -> list[list[tuple[Any, ...]]]:
    """Every result set of the batch (row counts skipped); an error in it raises here."""
    sets = []
    while True:
        if cur.description:
            sets.append([tuple(r) for r in cur.fetchall()])
        if not cur.nextset():
            return sets


async def test_pytds_control_flow(tds_server: TdsServer) -> None:
    def run() -> list[list[tuple[Any, ...]]]:
        with connect(tds_server) as conn, conn.cursor() as cur:
            _setup(cur)
            cur.execute(FLOW)
            return _all_sets(cur)

    assert await in_thread(run) == [[("13",)], [("b",)]]


@odbc_mark
async def test_pyodbc_control_flow(tds_server: TdsServer) -> None:
    def run() -> list[list[tuple[Any, ...]]]:
        conn = odbc_connect(tds_server)
        try:
            cur = conn.cursor()
            _setup(cur)
            cur.execute(FLOW)
            return _all_sets(cur)
        finally:
            conn.close()

    assert await in_thread(run) == [[("13",)], [("b",)]]


async def test_pytds_try_catch_error_functions_and_rethrow(tds_server: TdsServer) -> None:
    def run() -> tuple[Any, ...]:
        with connect(tds_server) as conn, conn.cursor() as cur:
            _setup(cur)
            caught: list[Any] = []
            with pytest.raises(pytds.IntegrityError) as rethrown:
                _drain(cur, CATCH, caught)
            cur.execute("SELECT @@TRANCOUNT, COUNT(*) FROM flow_t")
            after = cur.fetchone()
            with pytest.raises(pytds.OperationalError) as thrown:
                _drain(cur, "SELECT 1;\nTHROW 50001, N'custom failure', 7;\nSELECT 2", [])
            return caught, rethrown.value, thrown.value, tuple(after)

    caught, rethrown, thrown, after = await in_thread(run)
    assert caught == [[(2627, 14, 1, 3, None, "Violation of PRIMARY KEY constraint", 2627)]]
    assert (rethrown.msg_no, rethrown.severity, rethrown.line) == (2627, 14, 3)
    assert (thrown.msg_no, thrown.text, thrown.state, thrown.severity, thrown.line) == (
        50001,
        "custom failure",
        7,
        16,
        2,
    )
    assert after == (0, 1)


@odbc_mark
async def test_pyodbc_try_catch_and_throw(tds_server: TdsServer) -> None:
    pyodbc = pytest.importorskip("pyodbc")

    def run() -> tuple[Any, str]:
        conn = odbc_connect(tds_server)
        try:
            cur = conn.cursor()
            _setup(cur)
            cur.execute(CATCH.replace("THROW;", "SELECT 0;"))
            caught = _all_sets(cur)
            again = "BEGIN TRY SELECT 1/0 END TRY BEGIN CATCH THROW 50002, N'again', 1; END CATCH"
            with pytest.raises(pyodbc.Error) as thrown:
                _drain(cur, again, [])
            return caught, str(thrown.value)
        finally:
            conn.close()

    caught, thrown = await in_thread(run)
    assert caught == [[(2627, 14, 1, 3, None, "Violation of PRIMARY KEY constraint", 2627)], [(0,)]]
    assert "again" in thrown
    assert "50002" in thrown


async def test_pytds_raiserror_info_and_errors(tds_server: TdsServer) -> None:
    def run() -> tuple[list[Any], Any, list[Any]]:
        with connect(tds_server) as conn, conn.cursor() as cur:
            cur.execute(
                "DECLARE @n int = 42; RAISERROR(N'%s has %d items (%5s|%-4d|%x)', 10, 3,"
                " N'cart', @n, N'ab', 7, 255); PRINT N'printed'; SELECT @@ERROR"
            )
            rows = cur.fetchall()
            infos = [(m[1].msg_no, m[1].severity, m[1].state, m[1].text) for m in cur.messages]
            with pytest.raises(pytds.OperationalError) as first:
                cur.execute("RAISERROR('first', 16, 1); RAISERROR('second', 11, 2); SELECT 1")
            cur.execute("SELECT 5")
            return infos, first.value, rows + cur.fetchall()

    infos, first, rows = await in_thread(run)
    assert infos == [
        (50000, 10, 3, "cart has 42 items (   ab|7   |ff)"),
        (0, 0, 1, "printed"),
    ]
    assert (first.msg_no, first.text, first.severity) == (50000, "first", 16)
    assert rows == [(0,), (5,)]
    statements = [
        e["outcome"] for e in tds_server.statement_log.entries if "'second'" in e["statement"]
    ]
    assert statements == [{"rows": 1, "affected": 0, "error": 50000}]  # the batch went on


@tedious_mark
async def test_tedious_several_errors_info_and_3621(tds_server: TdsServer) -> None:
    steps = [
        {"sql": "CREATE TABLE flow_t (id int PRIMARY KEY); INSERT INTO flow_t VALUES (1)"},
        {"sql": "RAISERROR('first', 16, 1); RAISERROR('second', 11, 2); SELECT 1"},
        {"sql": "INSERT INTO flow_t VALUES (1); SELECT 2"},
        {"sql": "RAISERROR(N'%d%%', 5, 1, 99); PRINT 'p'"},
        {"sql": "RAISERROR(60000, 16, 1)"},
    ]
    result = await run_plan(tds_server, steps)
    _, several, dml, info, unknown = result["steps"]
    assert several["error"]["numbers"] == [50000, 50000], result
    assert several["rows"] == [[1]]
    assert dml["error"]["number"] == 2627
    assert [i["number"] for i in dml["infos"]] == [3621]
    assert dml["infos"][0]["message"] == "The statement has been terminated."
    assert dml["rows"] == [[2]]
    assert [(i["number"], i["message"], i["class"]) for i in info["infos"]] == [
        (50000, "99%", 5),
        (0, "p", 0),
    ]
    assert "error" not in info
    assert unknown["error"]["number"] == 18054


@tedious_mark
async def test_tedious_raiserror_nowait_arrives_before_the_batch_ends(
    tds_server: TdsServer,
) -> None:
    """The client cancels as soon as it sees the NOWAIT message: without the flush it would see
    it only after the 60 s WAITFOR (the plan fails after 60 s)."""
    steps = [
        {
            "sql": "RAISERROR('progress', 0, 1) WITH NOWAIT; WAITFOR DELAY '00:01:00'; SELECT 1",
            "cancelOnInfo": True,
        },
        {"sql": "SELECT 42"},
    ]
    result = await run_plan(tds_server, steps)
    cancelled, after = result["steps"]
    assert [i["message"] for i in cancelled["infos"]] == ["progress"], result
    assert cancelled["error"]["message"] == "Canceled."
    assert after["rows"] == [[42]]


async def test_pytds_doomed_transaction(tds_server: TdsServer) -> None:
    def run() -> tuple[Any, ...]:
        with connect(tds_server) as conn, conn.cursor() as cur:
            _setup(cur)
            caught: list[Any] = []
            with pytest.raises(pytds.OperationalError) as end:
                _drain(cur, DOOMED, caught)
            cur.execute(
                "SET XACT_ABORT OFF; SELECT @@TRANCOUNT, XACT_STATE(), COUNT(*) FROM flow_t"
            )
            after = tuple(cur.fetchone())
            # a conversion error dooms it too: writes fail (3930), the batch goes on to ROLLBACK
            doomed_state: list[Any] = []
            with pytest.raises(pytds.OperationalError) as write:
                _drain(
                    cur,
                    "BEGIN TRAN; BEGIN TRY SELECT CAST('x' AS int) END TRY BEGIN CATCH "
                    "SELECT XACT_STATE(); INSERT INTO flow_t VALUES (9); ROLLBACK; END CATCH",
                    doomed_state,
                )
            cur.execute("SELECT XACT_STATE(), @@TRANCOUNT, COUNT(*) FROM flow_t")
            states = tuple(cur.fetchone())
            return caught, end.value.msg_no, after, doomed_state, write.value.msg_no, states

    caught, end, after, doomed_state, write, states = await in_thread(run)
    assert caught == [[(-1, 2627)]]
    assert end == 3998
    assert after == (0, 0, 1)
    assert doomed_state == [[(-1,)]]
    assert write == 3930
    assert states == (0, 0, 1)


@odbc_mark
async def test_pyodbc_doomed_transaction(tds_server: TdsServer) -> None:
    pyodbc = pytest.importorskip("pyodbc")

    def run() -> tuple[Any, str, Any]:
        conn = odbc_connect(tds_server)
        try:
            cur = conn.cursor()
            _setup(cur)
            caught: list[Any] = []
            with pytest.raises(pyodbc.Error) as end:
                _drain(cur, DOOMED, caught)
            cur.execute("SELECT @@TRANCOUNT, XACT_STATE()")
            return caught, str(end.value), tuple(cur.fetchone())
        finally:
            conn.close()

    caught, end, after = await in_thread(run)
    assert caught == [[(-1, 2627)]]
    assert "3998" in end
    assert after == (0, 0)


FUNCTIONS = (
    "SELECT OBJECT_ID('dbo.flow_t') - OBJECT_ID(N'[flow_t]'), OBJECT_ID('missing'), DB_ID(),"
    " DB_NAME(DB_ID()), DB_NAME(1), SCHEMA_NAME(), CAST(SERVERPROPERTY('ProductVersion') AS"
    " nvarchar(20)), CAST(SERVERPROPERTY('EngineEdition') AS int), CAST(SERVERPROPERTY('Edition')"
    " AS nvarchar(40)), CAST(SERVERPROPERTY('ProductLevel') AS nvarchar(10)),"
    " CAST(SERVERPROPERTY('ServerName') AS nvarchar(20)), @@SPID - @@SPID, @@TRANCOUNT,"
    " LEFT(@@VERSION, 20), @@LANGUAGE, @@DATEFIRST, @@TEXTSIZE, LEN(HOST_NAME())"
)
EXPECTED = (0, None, 5, "tdslite", "master", "dbo", "16.0.1000.6", 3, "Developer Edition (64-bit)")
EXPECTED += ("RTM", "tdslite", 0, 0, "Microsoft SQL Server", "us_english", 7)


async def test_pytds_functions_and_globals(tds_server: TdsServer) -> None:
    def run() -> tuple[Any, ...]:
        with connect(tds_server) as conn, conn.cursor() as cur:
            _setup(cur)
            cur.execute(FUNCTIONS)
            return tuple(cur.fetchone())

    row = await in_thread(run)
    assert row[:16] == EXPECTED
    assert row[16] > 0  # @@TEXTSIZE
    assert row[17] > 0  # python-tds sends the machine's host name


@odbc_mark
async def test_pyodbc_functions_and_globals(tds_server: TdsServer) -> None:
    def run() -> tuple[Any, ...]:
        conn = odbc_connect(tds_server)
        try:
            cur = conn.cursor()
            _setup(cur)
            cur.execute(FUNCTIONS)
            return tuple(cur.fetchone())
        finally:
            conn.close()

    row = await in_thread(run)
    assert row[:16] == EXPECTED
    assert row[17] > 0


OPTIONS = (
    "SET ANSI_NULLS OFF; SET QUOTED_IDENTIFIER, ANSI_PADDING OFF; SET ARITHIGNORE ON;"
    " SET DATEFIRST 1; SET TEXTSIZE 1000; SET LANGUAGE us_english; SET XACT_ABORT ON;"
    " SET NOCOUNT ON; SELECT @@OPTIONS, @@DATEFIRST, @@TEXTSIZE, @@LANGUAGE"
)
#: 5496 - ANSI_NULLS 32 - QUOTED_IDENTIFIER 256 - ANSI_PADDING 16 + ARITHIGNORE 128
#: + NOCOUNT 512 + XACT_ABORT 16384
CHANGED = (5496 - 32 - 256 - 16 + 128 + 512 + 16384, 1, 1000, "us_english")
DEFAULTS = (5496, 7, 2147483647, "us_english")


async def test_pytds_set_options_and_pooled_reset(tds_server: TdsServer) -> None:
    def run() -> tuple[Any, ...]:
        # python-tds pools by host, not port: an app name of its own keeps other tests' pooled
        # connections (to servers already gone) out of this test
        pooled = {"pooling": True, "appname": "tdslite-set-options"}
        with connect(tds_server, **pooled) as conn, conn.cursor() as cur:
            cur.execute(OPTIONS)
            changed = tuple(cur.fetchone())
            with pytest.raises(pytds.OperationalError) as bad:
                cur.execute("SET LANGUAGE Klingon")
        with connect(tds_server, **pooled) as conn, conn.cursor() as cur:  # sp_reset_connection
            cur.execute("SELECT @@OPTIONS, @@DATEFIRST, @@TEXTSIZE, @@LANGUAGE")
            return changed, bad.value.msg_no, tuple(cur.fetchone())

    assert await in_thread(run) == (CHANGED, 2741, DEFAULTS)


@odbc_mark
async def test_pyodbc_set_options(tds_server: TdsServer) -> None:
    def run() -> tuple[Any, ...]:
        conn = odbc_connect(tds_server)
        try:
            cur = conn.cursor()
            cur.execute(OPTIONS)
            return tuple(cur.fetchone())
        finally:
            conn.close()

    assert await in_thread(run) == CHANGED


@tedious_mark
async def test_tedious_reset_restores_set_options(tds_server: TdsServer) -> None:
    steps = [
        {"sql": "SET DATEFIRST 3; SET ANSI_WARNINGS OFF; SELECT @@DATEFIRST, @@OPTIONS & 8"},
        {"reset": True},
        {"sql": "SELECT @@DATEFIRST, @@OPTIONS & 8"},
    ]
    result = await run_plan(tds_server, steps)
    assert [s.get("rows") for s in result["steps"]] == [[[3, 0]], None, [[7, 8]]], result


async def test_pytds_waitfor_cancelled_by_timeout_then_reused(tds_server: TdsServer) -> None:
    def run() -> list[Any]:
        with connect(tds_server, timeout=1) as conn, conn.cursor() as cur:
            cur.execute("WAITFOR DELAY '00:00:00.050'; SELECT 1")
            short = cur.fetchall()
            with pytest.raises(TimeoutError):
                cur.execute("WAITFOR DELAY '00:10:00'; SELECT 2")
            cur.execute("SELECT 3")
            return short + cur.fetchall()

    assert await in_thread(run) == [(1,), (3,)]
    outcomes = [
        e["outcome"] for e in tds_server.statement_log.entries if "'00:10:00'" in e["statement"]
    ]
    assert outcomes == [{"cancelled": True}]


@tedious_mark
async def test_tedious_waitfor_cancelled(tds_server: TdsServer) -> None:
    steps = [
        {"sql": "WAITFOR DELAY '00:10:00'", "cancelAfterMs": 300},
        {"sql": "WAITFOR DELAY '0:0:0.1'; SELECT 42"},
        {"sql": "WAITFOR DELAY '25:00'"},
    ]
    result = await run_plan(tds_server, steps)
    cancelled, after, bad = result["steps"]
    assert cancelled["error"]["message"] == "Canceled.", result
    assert after["rows"] == [[42]]
    assert bad["error"]["number"] == 148
