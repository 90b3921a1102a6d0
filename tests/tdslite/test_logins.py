"""Logins as SQL Server answers them: the database a login opens (master, the served one, a
login's default), 4060 for any other, and TDS 7.1 / 7.2 / 7.3 / 7.4 clients.

SQL Server answers LOGINACK with the TDS version it agrees to, sends date/time/datetime2/
datetimeoffset as nvarchar strings to clients below 7.3 and varchar(max)/nvarchar(max)/
varbinary(max) as text/ntext/image to 7.1 clients. Checked with python-tds (``tds_version``),
pyodbc over FreeTDS ODBC (``TDS_Version=``) and FreeTDS ``tsql`` (``tds version`` in freetds.conf).
"""

from __future__ import annotations

import datetime
import glob
import os
import shutil
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytds
import pytds.tds_base as tds_base
import pytest
import trio

from tdslite import TdsServer, open_server
from tests.support.node import NODE
from tests.tdslite._tds_helpers import PASSWORDS, USERS_TOML, in_thread

DRIVERS = sorted(glob.glob("/usr/lib/*/odbc/libtdsodbc.so"))
needs_odbc = pytest.mark.skipif(not DRIVERS, reason="FreeTDS ODBC missing")

USERS_WITH_DEFAULTS = (
    USERS_TOML
    + """
[users.in_master]
password = "M4ster-pw"
role = "read-only"
database_user = "analyst"
default_database = "master"
"""
)
PASSWORDS_ALL = {**PASSWORDS, "in_master": "M4ster-pw"}

#: A batch whose columns change wire form with the TDS version.
VERSIONED = (
    "SELECT DB_NAME() AS db, CAST('2024-02-29 13:14:15.1234567' AS datetime2(7)) AS d2,"
    " CAST('2024-02-29' AS date) AS day, CAST('13:14:15.12' AS time(2)) AS t,"
    " CAST('2024-02-29 13:14:15.123 -05:30' AS datetimeoffset(3)) AS dto,"
    " CAST(N'Zoë' AS nvarchar(max)) AS nm, CAST('abc' AS varchar(max)) AS vm,"
    " CAST(0x0102 AS varbinary(max)) AS bm, CAST(NULL AS nvarchar(max)) AS nul,"
    " CAST(NULL AS int) AS n1, CAST(NULL AS int) AS n2, CAST(NULL AS int) AS n3,"
    " CAST(NULL AS int) AS n4, CAST(NULL AS int) AS n5, CAST(NULL AS int) AS n6,"
    " CAST(NULL AS int) AS n7, CAST(NULL AS int) AS n8, CAST(NULL AS int) AS n9,"
    " CAST(NULL AS int) AS n10, CAST(12.5 AS decimal(5,2)) AS dec"
)


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[TdsServer]:
    users = tmp_path / "users.toml"
    users.write_text(USERS_WITH_DEFAULTS, encoding="utf-8")
    async with open_server(db=tmp_path / "s.sqlite", users=users, seed="sample") as srv:
        yield srv


def _connect(srv: TdsServer, login: str = "admin", **kw: Any) -> Any:
    return pytds.connect(
        dsn=srv.host,
        port=srv.port,
        user=login,
        password=PASSWORDS_ALL[login],
        autocommit=True,
        login_timeout=10,
        **kw,
    )


def _scalar(conn: Any, sql: str) -> Any:
    cur = conn.cursor()
    cur.execute(sql)
    return cur.fetchone()[0]


async def test_login_to_master_then_use_the_served_database(server: TdsServer) -> None:
    def run() -> dict[str, Any]:
        out: dict[str, Any] = {}
        with _connect(server, database="master") as conn:
            out["db"] = _scalar(conn, "SELECT DB_NAME()")
            for key, sql in (
                ("in_master", "SELECT COUNT(*) FROM customers"),
                ("create", "CREATE TABLE t_in_master (i int)"),
            ):
                try:
                    conn.cursor().execute(sql)
                except pytds.Error as exc:
                    out[key] = exc.msg_no  # type: ignore[attr-defined]
            out["tables_in_master"] = _scalar(conn, "SELECT COUNT(*) FROM sys.tables")
            conn.cursor().execute("USE sample")
            out["after_use"] = _scalar(conn, "SELECT DB_NAME()")
            out["customers"] = _scalar(conn, "SELECT COUNT(*) FROM customers")
            out["envchange_db"] = conn._tds_socket.env.database  # from ENVCHANGE
            conn.cursor().execute("USE master")
            out["back"] = _scalar(conn, "SELECT DB_NAME()")
        return out

    out = await in_thread(run)
    assert out == {
        "db": "master",
        "in_master": 208,
        "create": 262,
        "tables_in_master": 0,
        "after_use": "sample",
        "customers": 24,
        "envchange_db": "sample",
        "back": "master",
    }


async def test_login_database_empty_uses_the_login_default(server: TdsServer) -> None:
    def run() -> tuple[str, str, str]:
        with _connect(server, "in_master") as conn:
            in_master = _scalar(conn, "SELECT DB_NAME()")
        with _connect(server, "reader") as conn:
            reader = _scalar(conn, "SELECT DB_NAME()")
        with _connect(server, "in_master", database="sample") as conn:
            named = _scalar(conn, "SELECT DB_NAME()")
        return in_master, reader, named

    assert await in_thread(run) == ("master", "sample", "sample")


async def test_unknown_database_fails_the_login_with_4060(server: TdsServer) -> None:
    """4060 then 18456 (python-tds joins both messages and raises the last number)."""

    def run() -> tuple[int, str]:
        with pytest.raises(pytds.Error) as caught:
            _connect(server, database="no_such_db")
        return caught.value.msg_no, str(caught.value.args[0])  # type: ignore[attr-defined]

    number, message = await in_thread(run)
    assert number == 18456
    assert message.startswith('Cannot open database "no_such_db" requested by the login.')

    def use_other() -> int:
        with _connect(server) as conn:
            try:
                conn.cursor().execute("USE model")
            except pytds.Error as exc:
                return int(exc.msg_no)  # type: ignore[attr-defined]
        return 0

    assert await in_thread(use_other) == 911


@needs_odbc
async def test_unknown_database_fails_the_login_pyodbc(server: TdsServer) -> None:
    import pyodbc

    def run() -> str:
        try:
            pyodbc.connect(
                f"DRIVER={DRIVERS[0]};SERVER={server.host};PORT={server.port};UID=admin;"
                f"PWD={PASSWORDS['admin']};DATABASE=no_such_db;TDS_Version=7.4",
                timeout=10,
            )
        except pyodbc.Error as exc:
            return str(exc)
        return ""

    message = await in_thread(run)
    assert "Login failed for user 'admin'. (18456)" in message


def _versioned_pytds(srv: TdsServer, version: int) -> tuple[int, list[Any], int, int]:
    with _connect(srv, tds_version=version) as conn:
        cur = conn.cursor()
        cur.execute(VERSIONED)
        row = list(cur.fetchone())
        cur.execute("UPDATE customers SET name = name WHERE id <= %s", (3,))  # an RPC
        count = cur.rowcount
        try:
            cur.execute("SELECT * FROM missing_table")
        except pytds.Error as exc:
            error = int(exc.msg_no)  # type: ignore[attr-defined]
        return conn.tds_version, row, count, error


@pytest.mark.parametrize(
    ("requested", "agreed"),
    [
        (tds_base.TDS71, 0x71000001),
        (tds_base.TDS72, 0x72090002),
        (tds_base.TDS73, 0x730A0003),
        (tds_base.TDS73B, 0x730B0003),
        (tds_base.TDS74, 0x74000004),
    ],
    ids=["7.1", "7.2", "7.3A", "7.3B", "7.4"],
)
async def test_tds_versions_pytds(server: TdsServer, requested: int, agreed: int) -> None:
    version, row, count, error = await in_thread(_versioned_pytds, server, requested)
    assert version == agreed
    assert row[0] == "sample"
    if agreed < 0x730A0003:  # below 7.3: nvarchar strings, as SQL Server sends them
        assert row[1:5] == [
            "2024-02-29 13:14:15.1234567",
            "2024-02-29",
            "13:14:15.12",
            "2024-02-29 13:14:15.123 -05:30",
        ]
    else:
        assert row[1] == datetime.datetime(2024, 2, 29, 13, 14, 15, 123456)
        assert row[2] == datetime.date(2024, 2, 29)
        assert row[3] == datetime.time(13, 14, 15, 120000)
        assert row[4].utcoffset() == -datetime.timedelta(hours=5, minutes=30)
    assert row[5:9] == ["Zoë", "abc", b"\x01\x02", None]
    assert row[9:19] == [None] * 10
    assert row[19] == Decimal("12.50")
    assert count == 3
    assert error == 208


@needs_odbc
@pytest.mark.parametrize("version", ["7.1", "7.2", "7.3", "7.4"])
async def test_tds_versions_pyodbc(server: TdsServer, version: str) -> None:
    import pyodbc

    def run() -> tuple[list[Any], int, str]:
        conn = pyodbc.connect(
            f"DRIVER={DRIVERS[0]};SERVER={server.host};PORT={server.port};UID=admin;"
            f"PWD={PASSWORDS['admin']};TDS_Version={version}",
            autocommit=True,
            timeout=10,
        )
        conn.add_output_converter(-155, bytes)  # datetimeoffset: pyodbc has no converter
        try:
            cur = conn.cursor()
            cur.execute(VERSIONED)
            row = list(cur.fetchone())
            cur.execute("UPDATE customers SET name = name WHERE id <= ?", 3)
            count = cur.rowcount
            try:
                cur.execute("SELECT * FROM missing_table")
            except pyodbc.Error as exc:
                message = str(exc)
            # SQLGetTypeInfo: FreeTDS calls sp_datatype_info (7.1), _90 (7.2) or _100 (7.3+)
            types = {r[0] for r in cur.getTypeInfo().fetchall()}
            assert {"int", "nvarchar", "datetime2", "decimal"} <= types
            return row, count, message
        finally:
            conn.close()

    row, count, message = await in_thread(run)
    assert row[0] == "sample"
    if version in ("7.1", "7.2"):
        assert row[1:5] == [
            "2024-02-29 13:14:15.1234567",
            "2024-02-29",
            "13:14:15.12",
            "2024-02-29 13:14:15.123 -05:30",
        ]
    else:
        assert row[1] == datetime.datetime(2024, 2, 29, 13, 14, 15, 123456)
        assert row[2] in (datetime.date(2024, 2, 29), "2024-02-29")
    assert row[5:9] == ["Zoë", "abc", b"\x01\x02", None]
    assert row[9:19] == [None] * 10
    assert row[19] == Decimal("12.50")
    assert count == 3
    assert "(208)" in message


@pytest.mark.skipif(shutil.which("tsql") is None, reason="FreeTDS tsql missing")
@pytest.mark.parametrize("version", ["7.1", "7.2", "7.3", "7.4"])
async def test_tds_versions_tsql(server: TdsServer, tmp_path: Path, version: str) -> None:
    env = dict(os.environ, TDSVER=version)  # FreeTDS's own variable for the TDS version
    script = (
        "SELECT CAST('2024-02-29 13:14:15.1234567' AS datetime2(7)) AS d,"
        " CAST(N'long' AS nvarchar(max)) AS m, DB_NAME() AS db\ngo\nexit\n"
    )
    with trio.fail_after(20):
        proc = await trio.run_process(
            ["tsql", "-H", server.host, "-p", str(server.port), "-U", "admin", "-P",
             PASSWORDS["admin"]],
            stdin=script.encode(), capture_stdout=True, capture_stderr=True, check=False,
            env=env,
        )  # fmt: skip
    out = (proc.stdout + proc.stderr).decode("utf-8", "replace")
    assert "\tlong\tsample\n" in out, out
    assert "(1 row affected)" in out, out
    if version in ("7.1", "7.2"):  # a string, printed as it came
        assert "\n2024-02-29 13:14:15.1234567\t" in out, out
    else:  # a datetime2, printed in tsql's date format
        assert "\nFeb 29 2024 01:14PM\t" in out, out


@pytest.mark.skipif(
    not NODE.exists()
    or not (Path(__file__).resolve().parents[2] / "node_modules" / "tedious").is_dir(),
    reason="node or node_modules/tedious missing: run `npm ci` at the repo root",
)
@pytest.mark.parametrize("version", ["7_1", "7_2", "7_3_A", "7_3_B", "7_4"])
async def test_tds_versions_tedious(server: TdsServer, version: str) -> None:
    from tests.tdslite.test_client_tedious import run_plan

    steps = [
        {"sql": VERSIONED},
        {"sql": "SELECT name FROM sys.tables WHERE object_id = OBJECT_ID('orders')"},
        {"sql": "UPDATE customers SET name = name WHERE id <= @n",
         "params": [{"name": "n", "type": "Int", "value": 3}]},
        {"sql": "SELECT * FROM missing_table"},
    ]  # fmt: skip
    result = await run_plan(server, steps, tdsVersion=version)
    assert result["connected"] is True, result
    versioned, catalog, update, missing = result["steps"]
    row = versioned["rows"][0]
    assert row[0] == "sample"
    if version in ("7_1", "7_2"):
        assert row[1:5] == [
            "2024-02-29 13:14:15.1234567",
            "2024-02-29",
            "13:14:15.12",
            "2024-02-29 13:14:15.123 -05:30",
        ]
    else:
        assert row[1] == "2024-02-29T13:14:15.123Z"  # tedious reads datetime2 as UTC
    assert row[5:7] == ["Zoë", "abc"]
    assert row[8:19] == [None] * 11
    assert catalog["rows"] == [["orders"]]
    assert update["rowCount"] == 3
    assert missing["error"]["number"] == 208
