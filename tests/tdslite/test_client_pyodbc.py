"""pyodbc over FreeTDS's ODBC driver (Debian tdsodbc + unixodbc) against tdslite, real engine.

FreeTDS ODBC is a third independent client stack: it sends parameterised statements as RPCs with
parameters typed its own way, and a few SET batches at connect.
"""

from __future__ import annotations

import datetime
import decimal
import glob
import uuid
from typing import Any

import pytest

from tdslite import TdsServer
from tests.tdslite._tds_helpers import PASSWORDS, in_thread

pyodbc = pytest.importorskip("pyodbc")
DRIVERS = sorted(glob.glob("/usr/lib/*/odbc/libtdsodbc.so"))
pytestmark = pytest.mark.skipif(
    not DRIVERS, reason="FreeTDS ODBC driver missing: run scripts/install-system-deps"
)


def connect(server: TdsServer, login: str = "admin", **kw: Any) -> Any:
    dsn = (
        f"DRIVER={DRIVERS[0]};SERVER={server.host};PORT={server.port};"
        f"UID={login};PWD={PASSWORDS[login]};TDS_Version=7.4"
    )
    return pyodbc.connect(dsn, timeout=5, autocommit=kw.pop("autocommit", True), **kw)


async def test_pyodbc_params_rows_errors(tds_server: TdsServer) -> None:
    def run() -> dict[str, Any]:
        out: dict[str, Any] = {}
        conn = connect(tds_server)
        try:
            cur = conn.cursor()
            cur.execute(
                "CREATE TABLE odbc_t (id int PRIMARY KEY, name nvarchar(30), amount decimal(12,3),"
                " seen datetime2(0), day date, flag bit, tag uniqueidentifier, raw varbinary(16))"
            )
            cur.execute(
                "INSERT INTO odbc_t VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                1,
                "Zoë",
                decimal.Decimal("-123456789.125"),
                datetime.datetime(2024, 12, 31, 23, 59, 58),
                datetime.date(2000, 2, 29),
                True,
                uuid.UUID("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"),
                b"\x00\x01\xfe",
            )
            out["inserted"] = cur.rowcount
            cur.execute("INSERT INTO odbc_t (id) VALUES (?)", 2)
            cur.execute("SELECT * FROM odbc_t WHERE id >= ? ORDER BY id", 1)
            out["rows"] = [tuple(r) for r in cur.fetchall()]
            out["columns"] = [d[0] for d in cur.description]
            cur.execute("UPDATE odbc_t SET name = ? WHERE id = ?", "Zoé", 1)
            out["updated"] = cur.rowcount
            try:
                cur.execute("SELECT * FROM missing_table")
            except pyodbc.Error as exc:
                out["error"] = str(exc)
        finally:
            conn.close()
        return out

    out = await in_thread(run)
    assert out["inserted"] == 1
    assert out["columns"] == ["id", "name", "amount", "seen", "day", "flag", "tag", "raw"]
    first, second = out["rows"]
    assert first[:4] == (
        1,
        "Zoë",
        decimal.Decimal("-123456789.125"),
        datetime.datetime(2024, 12, 31, 23, 59, 58),
    )
    assert first[4] in (datetime.date(2000, 2, 29), "2000-02-29")  # FreeTDS maps date per config
    assert first[5] is True
    assert str(first[6]).lower() == "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
    assert first[7] == b"\x00\x01\xfe"
    assert second == (2, None, None, None, None, None, None, None)
    assert out["updated"] == 1
    assert "Invalid object name 'missing_table'" in out["error"]
    kinds = {e["kind"] for e in tds_server.statement_log.entries if "odbc_t" in e["statement"]}
    assert "rpc" in kinds


async def test_pyodbc_transactions(tds_server: TdsServer) -> None:
    def run() -> tuple[int, int]:
        conn = connect(tds_server)
        try:
            conn.cursor().execute("CREATE TABLE odbc_tx (i int)")
            conn.autocommit = False
            cur = conn.cursor()
            cur.execute("INSERT INTO odbc_tx VALUES (?)", 1)
            conn.rollback()
            cur.execute("SELECT COUNT(*) FROM odbc_tx")
            after_rollback = cur.fetchone()[0]
            cur.execute("INSERT INTO odbc_tx VALUES (?)", 2)
            conn.commit()
            cur.execute("SELECT COUNT(*) FROM odbc_tx")
            after_commit = cur.fetchone()[0]
        finally:
            conn.close()
        return after_rollback, after_commit

    assert await in_thread(run) == (0, 1)
