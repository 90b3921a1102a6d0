"""Temporary tables, table variables, stored procedures, views and schemas as SQL Server runs
them, seen by independent clients: python-tds, Node tedious and pyodbc over FreeTDS ODBC.

Each feature is driven through python-tds and at least one other client, against the real
engine on a real socket.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytds
import pytest

from tdslite import TdsServer, open_server
from tdslite.engine import User
from tests.support.waiting import eventually_blocking
from tests.tdslite._tds_helpers import PASSWORDS, in_thread
from tests.tdslite.test_client_pytds import connect
from tests.tdslite.test_client_tedious import pytestmark as tedious_mark
from tests.tdslite.test_client_tedious import run_plan

try:
    from tests.tdslite.test_client_pyodbc import DRIVERS
    from tests.tdslite.test_client_pyodbc import connect as odbc_connect
except pytest.skip.Exception:  # pyodbc missing: those tests skip
    DRIVERS, odbc_connect = [], None  # type: ignore[assignment]

odbc_mark = pytest.mark.skipif(not DRIVERS or odbc_connect is None, reason="FreeTDS ODBC missing")


#: python-tds pools by host, login and application name but not by port: a name of our own keeps
#: connections pooled by other tests (to servers since closed) out of this one.
POOL_APP = "tdslite-tsql-objects"


def _rows(cur: Any, sql: str) -> list[tuple[Any, ...]]:
    cur.execute(sql)
    return [tuple(r) for r in cur.fetchall()]


def _last_rows(cur: Any) -> list[tuple[Any, ...]]:
    """The rows of the last result set of the batch just executed."""
    rows: list[tuple[Any, ...]] = []
    while True:
        if cur.description:
            rows = [tuple(r) for r in cur.fetchall()]
        if not cur.nextset():
            return rows


def _last_rows_of(cur: Any, sql: str) -> list[tuple[Any, ...]]:
    cur.execute(sql)
    return _last_rows(cur)


def _fails(cur: Any, sql: str) -> bool:
    try:
        _last_rows_of(cur, sql)
    except pytds.Error:
        return True
    return False


def _error(cur: Any, sql: str) -> int:
    with pytest.raises(pytds.Error) as raised:
        _last_rows_of(cur, sql)
    return int(raised.value.msg_no)  # type: ignore[attr-defined]


# -- temporary tables ----------------------------------------------------------------------------


async def test_pytds_temp_tables_session_scope(tds_server: TdsServer) -> None:
    """#t is the session's own (other sessions get 208, a pooled reset drops it); ##t is seen
    by every session and goes when the session that made it ends; SELECT ... INTO #t."""

    def run() -> list[Any]:
        seen: list[Any] = []
        with connect(tds_server) as a, a.cursor() as ca, connect(tds_server, "writer") as b:
            cb = b.cursor()
            ca.execute("CREATE TABLE #t (id int PRIMARY KEY, name nvarchar(10))")
            ca.execute("INSERT INTO #t VALUES (1, N'one'), (2, N'two')")
            seen.append(_rows(ca, "SELECT id, name FROM #t ORDER BY id"))
            seen.append(_error(cb, "SELECT * FROM #t"))  # not another session's
            cb.execute("CREATE TABLE #t (x bit)")  # its own #t, same name
            seen.append(_rows(cb, "SELECT COUNT(*) FROM #t"))
            ca.execute("SELECT id * 10 AS id10, name INTO #u FROM #t WHERE id = 2")
            seen.append(ca.rowcount)
            seen.append(_rows(ca, "SELECT id10, name FROM #u"))
            seen.append(_error(ca, "CREATE TABLE #t (id int)"))  # 2714: exists
            ca.execute("DROP TABLE #u")
            seen.append(_error(ca, "SELECT * FROM #u"))
            ca.execute("CREATE TABLE ##shared (v int); INSERT INTO ##shared VALUES (7)")
            seen.append(_rows(cb, "SELECT v FROM ##shared"))  # global: every session
        with connect(tds_server, "writer") as c, c.cursor() as cc:
            # its creator ended: the server ends that session once it reads the closed socket,
            # which a loaded machine may do after this connection's first statement
            eventually_blocking(lambda: _fails(cc, "SELECT v FROM ##shared"), timeout_s=30)
            seen.append(_error(cc, "SELECT v FROM ##shared"))
        with connect(tds_server, pooling=True, appname=POOL_APP) as p, p.cursor() as cp:
            cp.execute("CREATE TABLE #pooled (id int)")
        with connect(tds_server, pooling=True, appname=POOL_APP) as p, p.cursor() as cp:
            seen.append(_error(cp, "SELECT * FROM #pooled"))  # sp_reset_connection dropped it
        return seen

    assert await in_thread(run, limit=60) == [
        [(1, "one"), (2, "two")],
        208,
        [(0,)],
        1,
        [(20, "two")],
        2714,
        208,
        [(7,)],
        208,
        208,
    ]


@tedious_mark
async def test_tedious_temp_tables_reset_and_table_variables(tds_server: TdsServer) -> None:
    """tedious: #t across batches of a session, dropped by reset() (RESETCONNECTION); a table
    variable lives for its batch only and keeps its rows through ROLLBACK."""
    result = await run_plan(
        tds_server,
        [
            {"sql": "CREATE TABLE #t (id int IDENTITY(1,1) PRIMARY KEY, v nvarchar(5))"},
            {
                "sql": "INSERT INTO #t (v) VALUES (@v)",
                "params": [{"name": "v", "type": "NVarChar", "value": "abc"}],
            },  # fmt: skip
            {"sql": "SELECT id, v FROM #t"},
            {"reset": True},
            {"sql": "SELECT id, v FROM #t"},
            {
                "sql": "DECLARE @t TABLE (id int PRIMARY KEY, v nvarchar(5)); "
                "BEGIN TRAN; INSERT INTO @t VALUES (1, N'x'), (2, N'y'); "
                "UPDATE @t SET v = N'z' WHERE id = 2; DELETE FROM @t WHERE id = 1; ROLLBACK; "
                "SELECT id, v FROM @t"
            },
            {"sql": "SELECT * FROM @t"},
        ],
    )
    s = result["steps"]
    assert s[2]["rows"] == [[1, "abc"]], result
    assert s[4]["error"]["number"] == 208, result
    assert s[5].get("error") is None, result
    assert s[5]["rows"] == [[2, "z"]], result
    assert s[6]["error"]["number"] == 1087, result


async def test_pytds_table_variable_not_rolled_back(tds_server: TdsServer) -> None:
    def run() -> list[Any]:
        with connect(tds_server, "writer") as conn, conn.cursor() as cur:
            cur.execute(
                "DECLARE @log TABLE (step nvarchar(20)); BEGIN TRAN; "
                "INSERT INTO @log VALUES (N'before'); "
                "SAVE TRANSACTION s; INSERT INTO @log VALUES (N'inside'); ROLLBACK TRAN s; "
                "INSERT INTO @log VALUES (N'after'); ROLLBACK; "
                "SELECT step FROM @log ORDER BY step"
            )
            rows = [r[0] for r in _last_rows(cur)]
            cur.execute("SELECT @@TRANCOUNT")
            return [rows, cur.fetchone()[0]]

    assert await in_thread(run) == [["after", "before", "inside"], 0]


@odbc_mark
async def test_pyodbc_temp_table_and_select_into(tds_server: TdsServer) -> None:
    def run() -> list[Any]:
        assert odbc_connect is not None
        conn = odbc_connect(tds_server, "writer")
        try:
            cur = conn.cursor()
            cur.execute("CREATE TABLE #o (id int, amount decimal(10,2))")
            cur.execute("INSERT INTO #o VALUES (?, ?)", 1, "2.50")
            cur.execute("SELECT id, amount INTO #p FROM #o WHERE id = ?", 1)
            cur.execute("SELECT id, amount FROM #p")
            rows = [tuple(r) for r in cur.fetchall()]
            cur.execute("DECLARE @v TABLE (n int); INSERT INTO @v VALUES (?); SELECT n FROM @v", 5)
            while cur.description is None and cur.nextset():
                pass
            variable = [tuple(r) for r in cur.fetchall()]
            return [rows, variable]
        finally:
            conn.close()

    import decimal

    assert await in_thread(run) == [[(1, decimal.Decimal("2.50"))], [(5,)]]


# -- stored procedures ---------------------------------------------------------------------------

ITEMS = "CREATE TABLE items (id int IDENTITY(1,1) PRIMARY KEY, name nvarchar(20), qty int)"
PROC = """CREATE PROCEDURE dbo.add_item @name nvarchar(20), @qty int = 1,
    @total int OUTPUT, @label nvarchar(40) = N'none' OUTPUT
AS
BEGIN
    SET NOCOUNT ON;
    INSERT INTO items (name, qty) VALUES (@name, @qty);
    SELECT @total = SUM(qty) FROM items;
    SET @label = @name + N'!';
    SELECT name, qty FROM items WHERE name = @name;
    RETURN 42
END"""


async def test_pytds_procedures_exec_and_callproc(tds_server: TdsServer) -> None:
    """CREATE PROCEDURE with defaults, OUTPUT and RETURN; EXEC in T-SQL (positional, named,
    OUTPUT, @rc =); python-tds callproc as an RPC by name (RETURNVALUE, RETURNSTATUS); the
    errors SQL Server gives."""

    def run() -> list[Any]:
        seen: list[Any] = []
        with connect(tds_server) as conn, conn.cursor() as cur:
            cur.execute(ITEMS)
            cur.execute(PROC)
            cur.execute(
                "DECLARE @t int, @l nvarchar(40), @rc int; "
                "EXEC @rc = add_item N'bolt', 5, @t OUTPUT, @l OUTPUT; "
                "SELECT @t AS t, @l AS l, @rc AS rc"
            )
            seen.append([tuple(r) for r in cur.fetchall()])  # the procedure's SELECT
            cur.nextset()
            seen.append([tuple(r) for r in cur.fetchall()])
            cur.execute(
                "DECLARE @t int; EXEC dbo.add_item @name = N'nut', @total = @t OUT; "
                "SELECT @t, @@OPTIONS & 512"  # the procedure's SET NOCOUNT ON ended with it
            )
            cur.nextset()
            seen.append(tuple(cur.fetchone()))
            cur.execute(
                "CREATE PROCEDURE item_count @name nvarchar(20), @n int OUTPUT, "
                "@label nvarchar(40) OUTPUT AS BEGIN SET NOCOUNT ON; "
                "SELECT @n = COUNT(*) FROM items WHERE name LIKE @name; "
                "SET @label = UPPER(@name); RETURN @n + 100 END"
            )
            values = cur.callproc(
                "item_count", ("%t", pytds.output(param_type=int), pytds.output(value="x" * 40))
            )
            seen.append([list(values), cur.get_proc_return_status()])
            seen.append(_error(cur, "EXEC add_item"))  # 201
            seen.append(_error(cur, "DECLARE @t int; EXEC add_item N'a', 1, @t, N'b', 9"))  # 8144
            seen.append(_error(cur, "EXEC add_item @nope = 1"))  # 8145
            seen.append(_error(cur, "EXEC no_such_proc"))  # 2812
            seen.append(_error(cur, "CREATE PROCEDURE add_item AS SELECT 1"))  # 2714
            seen.append(_error(cur, "DECLARE @q int = 1; EXEC add_item N'a', @q OUTPUT"))  # 8162
            cur.execute("ALTER PROCEDURE add_item @name nvarchar(20) AS RETURN LEN(@name)")
            cur.execute("DECLARE @rc int; EXEC @rc = add_item N'abcd'; SELECT @rc")
            seen.append(cur.fetchone()[0])
            cur.execute("DROP PROCEDURE add_item")
            seen.append(_error(cur, "DROP PROCEDURE add_item"))  # 3701
            cur.execute("DROP PROCEDURE IF EXISTS add_item")
        return seen

    assert await in_thread(run) == [
        [("bolt", 5)],
        [(5, "bolt!", 42)],
        (6, 0),
        [["%t", 2, "%T"], 102],
        201,
        8144,
        8145,
        2812,
        2714,
        8162,
        4,
        3701,
    ]


async def test_pytds_rpc_procedure_name_is_a_name(tds_server: TdsServer) -> None:
    """An RPC's procedure name is an object name ([sales].[p] by its parts), never SQL text."""

    def run() -> list[Any]:
        with connect(tds_server) as conn, conn.cursor() as cur:
            cur.execute("CREATE TABLE kept (id int); INSERT INTO kept VALUES (1)")
            cur.execute("CREATE PROCEDURE p AS SELECT 1")
            cur.execute("CREATE SCHEMA sales")
            cur.execute("CREATE PROCEDURE sales.p AS RETURN 5")
            with pytest.raises(pytds.ProgrammingError) as unknown:
                cur.callproc("p; DELETE FROM kept --", ())
            cur.callproc("[sales].[p]", ())
            status = cur.get_proc_return_status()
            return [unknown.value.msg_no, status, _rows(cur, "SELECT COUNT(*) FROM kept")]

    assert await in_thread(run) == [2812, 5, [(1,)]]


@tedious_mark
async def test_tedious_call_procedure_outputs_and_status(tds_server: TdsServer) -> None:
    """tedious callProcedure: rows, OUTPUT parameters as RETURNVALUE tokens, RETURNSTATUS;
    a #temporary procedure of the session; CREATE OR ALTER."""
    result = await run_plan(
        tds_server,
        [
            {"sql": ITEMS},
            {"sql": PROC},
            {
                "proc": "add_item",
                "params": [
                    {"name": "name", "type": "NVarChar", "value": "gear"},
                    {"name": "qty", "type": "Int", "value": 3},
                ],
                "outputs": [
                    {"name": "total", "type": "Int"},
                    {"name": "label", "type": "NVarChar", "value": "x", "options": {"length": 40}},
                ],
            },  # fmt: skip
            {"sql": "CREATE PROCEDURE #twice @n int AS SELECT @n * 2 AS d"},
            {"sql": "EXEC #twice 21"},
            {"sql": "CREATE OR ALTER PROCEDURE add_item @name nvarchar(20) AS RETURN -1"},
            {"proc": "add_item", "params": [{"name": "name", "type": "NVarChar", "value": "z"}]},
            {"proc": "add_item", "params": [{"name": "zzz", "type": "Int", "value": 1}]},
        ],
    )
    s = result["steps"]
    assert s[2].get("error") is None, result
    assert s[2]["rows"] == [["gear", 3]], result
    assert s[2]["outputs"] == {"total": 3, "label": "gear!"}, result
    assert s[2]["returnStatus"] == 42, result
    assert s[4]["rows"] == [[42]], result
    assert s[5].get("error") is None, result
    assert s[6]["returnStatus"] == -1, result
    assert s[7]["error"]["number"] == 8145, result


@odbc_mark
async def test_pyodbc_call_procedure(tds_server: TdsServer) -> None:
    """FreeTDS ODBC: ``{CALL p(?)}`` and ``EXEC p ?`` with parameters, rows back."""

    def run() -> list[Any]:
        assert odbc_connect is not None
        conn = odbc_connect(tds_server)
        try:
            cur = conn.cursor()
            cur.execute(
                "CREATE PROCEDURE dbo.top_products @n int AS "
                "SELECT TOP (@n) v FROM (SELECT 1 AS v UNION ALL SELECT 2) AS x ORDER BY v"
            )
            cur.execute("{CALL top_products(?)}", 1)
            first = [tuple(r) for r in cur.fetchall()]
            cur.execute("EXEC top_products ?", 2)
            second = [tuple(r) for r in cur.fetchall()]
            return [first, second]
        finally:
            conn.close()

    assert await in_thread(run) == [[(1,)], [(1,), (2,)]]


# -- views and schemas --------------------------------------------------------------------------


async def test_pytds_views_and_schemas(tds_server: TdsServer) -> None:
    def run() -> list[Any]:
        seen: list[Any] = []
        with connect(tds_server) as conn, conn.cursor() as cur:
            cur.execute("CREATE SCHEMA sales")
            cur.execute(
                "CREATE TABLE [sales].[orders] (id int PRIMARY KEY, amount decimal(10,2), "
                "region nvarchar(10))"
            )
            cur.execute(
                "INSERT INTO sales.orders VALUES (1, 10.50, N'north'), (2, 3.25, N'south'), "
                "(3, 1.00, N'north')"
            )
            cur.execute(
                "CREATE VIEW sales.north AS SELECT id, amount FROM sales.orders "
                "WHERE region = N'north'"
            )
            seen.append(_rows(cur, "SELECT id, amount FROM [sales].[north] ORDER BY id"))
            cur.execute("SELECT SUM(amount) FROM tdslite.sales.north")  # three-part name
            seen.append(cur.fetchone()[0])
            cur.execute("ALTER VIEW sales.north AS SELECT COUNT(*) AS n FROM sales.orders")
            seen.append(_rows(cur, "SELECT n FROM sales.north"))
            seen.append(_error(cur, "CREATE VIEW sales.north AS SELECT 1 AS a"))  # 2714
            seen.append(_error(cur, "CREATE TABLE nosuch.t (a int)"))  # 2760
            seen.append(_error(cur, "DROP TABLE sales.north"))  # 3705
            seen.append(_error(cur, "SELECT 1; CREATE VIEW v2 AS SELECT 1 AS a"))  # 111
            cur.execute("CREATE OR ALTER VIEW dbo.v2 AS SELECT 1 AS a")
            seen.append(_rows(cur, "SELECT a FROM [dbo].[v2]"))
            cur.execute("DROP VIEW sales.north, v2")
            seen.append(_error(cur, "SELECT * FROM sales.north"))  # 208
            seen.append(_error(cur, "DROP VIEW v2"))  # 3701
            cur.execute("DROP VIEW IF EXISTS v2")
        return seen

    import decimal

    assert await in_thread(run) == [
        [(1, decimal.Decimal("10.50")), (3, decimal.Decimal("1.00"))],
        decimal.Decimal("11.50"),
        [(3,)],
        2714,
        2760,
        3705,
        111,
        [(1,)],
        208,
        3701,
    ]


@tedious_mark
async def test_tedious_views(tds_server: TdsServer) -> None:
    result = await run_plan(
        tds_server,
        [
            {"sql": "CREATE TABLE t (id int PRIMARY KEY, v nvarchar(5))"},
            {"sql": "INSERT INTO t VALUES (1, N'a'), (2, N'b')"},
            {"sql": "CREATE VIEW dbo.tv AS SELECT id, UPPER(v) AS up FROM dbo.t"},
            {
                "sql": "SELECT id, up FROM tv WHERE id = @id",
                "params": [{"name": "id", "type": "Int", "value": 2}],
            },  # fmt: skip
            {"sql": "DROP VIEW dbo.tv"},
            {"sql": "SELECT * FROM tv"},
        ],
    )
    s = result["steps"]
    assert s[3]["rows"] == [[2, "B"]], result
    assert s[4].get("error") is None, result
    assert s[5]["error"]["number"] == 208, result


# -- permissions ---------------------------------------------------------------------------------

_USERS = {
    "admin": User(login="admin", password=PASSWORDS["admin"], role="admin", database_user="dbo"),
    "writer": User(login="writer", password=PASSWORDS["writer"], role="read-write",
                   database_user="app"),
    "reader": User(login="reader", password=PASSWORDS["reader"], role="read-only",
                   database_user="analyst",
                   grants={"order_total": "execute", "open_orders": "read"}),
}  # fmt: skip


@pytest.fixture
async def perms_server(tmp_path: Path) -> AsyncIterator[TdsServer]:
    async with open_server(db=tmp_path / "perms.sqlite", users=_USERS) as server:
        yield server


async def test_pytds_permissions_and_ownership_chaining(perms_server: TdsServer) -> None:
    """EXECUTE needs the role or a grant; a procedure or view owned by dbo reads its tables for
    a user who may not read them directly (ownership chaining); DDL stays with admin."""

    def run() -> list[Any]:
        seen: list[Any] = []
        with connect(perms_server) as conn, conn.cursor() as cur:
            cur.execute("CREATE TABLE orders (id int PRIMARY KEY, amount int, open_ bit)")
            cur.execute("INSERT INTO orders VALUES (1, 10, 1), (2, 20, 0)")
            cur.execute("CREATE PROCEDURE order_total @total int OUTPUT AS "
                        "SELECT @total = SUM(amount) FROM orders")  # fmt: skip
            cur.execute("CREATE PROCEDURE purge AS DELETE FROM orders")
            cur.execute("CREATE VIEW open_orders AS SELECT id FROM orders WHERE open_ = 1")
        with connect(perms_server, "reader") as conn, conn.cursor() as cur:
            seen.append(_error(cur, "SELECT * FROM orders"))  # 229: no grant on the table
            cur.execute("DECLARE @t int; EXEC order_total @t OUTPUT; SELECT @t")
            seen.append(_last_rows(cur)[0][0])  # chained through the procedure
            seen.append(_rows(cur, "SELECT id FROM open_orders"))  # chained through the view
            seen.append(_error(cur, "EXEC purge"))  # 229: no EXECUTE grant
            seen.append(_error(cur, "CREATE PROCEDURE mine AS SELECT 1"))  # 262
            seen.append(_error(cur, "DROP VIEW open_orders"))  # 3701
            cur.execute("CREATE PROCEDURE #peek AS SELECT COUNT(*) FROM orders")
            seen.append(_error(cur, "EXEC #peek"))  # 229: a #procedure does not chain
        with connect(perms_server, "writer") as conn, conn.cursor() as cur:
            seen.append(_error(cur, "CREATE VIEW w AS SELECT 1 AS a"))  # 262
            seen.append(_error(cur, "CREATE SCHEMA s"))  # 262
            cur.execute(
                "CREATE TABLE #mine (a int); INSERT INTO #mine VALUES (1)"
            )  # no DDL right needed
            seen.append(_rows(cur, "SELECT a FROM #mine"))
            cur.execute("EXEC purge")  # read-write: EXECUTE without grants
            seen.append(_rows(cur, "SELECT COUNT(*) FROM orders"))
        return seen

    assert await in_thread(run) == [229, 30, [(1,)], 229, 262, 3701, 229, 262, 262, [(1,)], [(0,)]]


# -- what tdslite refuses ------------------------------------------------------------------------

REFUSED = [
    ("CREATE PROCEDURE dbo.p_recompiled WITH RECOMPILE AS SELECT 1", 40517),
    ("DROP SCHEMA sales", 40517),
    ("CREATE PROCEDURE ##shared_proc AS SELECT 1", 40517),
    ("CREATE VIEW v_cols (a) AS SELECT 1", 40517),
    ("CREATE VIEW v_spid AS SELECT @@SPID AS s", 40517),
    ("RETURN 5", 178),
]


async def test_refused_object_statements(tds_server: TdsServer) -> None:
    """What tdslite does not offer is a clear error with SQL Server's number, never a crash;
    a read-only login cannot make temporary tables (its connection is read-only)."""

    def run() -> list[int]:
        with connect(tds_server) as conn, conn.cursor() as cur:
            seen = [_error(cur, sql) for sql, _ in REFUSED]
        with connect(tds_server, "reader") as conn, conn.cursor() as cur:
            seen.append(_error(cur, "CREATE TABLE #t (a int)"))
            seen.append(_error(cur, "DECLARE @t TABLE (a int)"))
        return seen

    assert await in_thread(run) == [n for _, n in REFUSED] + [3906, 3906]


@tedious_mark
async def test_tedious_refused_object_statements(tds_server: TdsServer) -> None:
    result = await run_plan(tds_server, [{"sql": sql} for sql, _ in REFUSED])
    assert [s["error"]["number"] for s in result["steps"]] == [n for _, n in REFUSED], result
