"""sql_variant and xml through independent clients: python-tds, Node tedious, pyodbc (FreeTDS
ODBC) and a raw TDS client for the parameter forms no client library sends.

sql_variant values travel as SSVARIANTTYPE with their base type (MS-TDS 2.2.5.5.4), so each
client reads back the base value; xml travels as XMLTYPE (0xF1, PLP). pyodbc cannot read
sql_variant columns from FreeTDS ODBC at all ("Invalid conversion" in SQLGetData, the same with
SQL Server), so sql_variant is checked with python-tds, tedious and FreeTDS tsql.
"""

from __future__ import annotations

import datetime
import decimal
import struct
import subprocess
from typing import Any

import pytds
import pytest

from tdslite import TdsServer
from tests.tdslite._tds_helpers import PASSWORDS, in_thread
from tests.tdslite._tds_raw import RawClient, all_headers, utf16
from tests.tdslite.test_client_pytds import connect
from tests.tdslite.test_client_tedious import run_plan

VARIANT_TABLE = (
    "CREATE TABLE tv (id int PRIMARY KEY, v sql_variant, x xml);"
    "INSERT INTO tv VALUES (1, CAST(12.5 AS decimal(5,2)), N'<a>1</a>'), (2, N'héllo', '<b/><c/>'),"
    " (3, CAST('2024-01-02' AS date), NULL), (4, NULL, NULL), (5, 7, 'text only')"
)
PROPERTIES = (
    "SELECT SQL_VARIANT_PROPERTY(v, 'BaseType') AS t, SQL_VARIANT_PROPERTY(v, 'Precision') AS p,"
    " SQL_VARIANT_PROPERTY(v, 'Scale') AS s, SQL_VARIANT_PROPERTY(v, 'MaxLength') AS m"
    " FROM tv ORDER BY id"
)


async def test_variant_and_xml_columns_pytds(tds_server: TdsServer) -> None:
    def run() -> dict[str, Any]:
        out: dict[str, Any] = {}
        with connect(tds_server) as conn, conn.cursor() as cur:
            cur.execute(VARIANT_TABLE)
            cur.execute("SELECT id, v, x FROM tv ORDER BY id")
            out["rows"] = cur.fetchall()
            out["types"] = [d[1] for d in cur.description]
            cur.execute(PROPERTIES)
            out["props"] = cur.fetchall()
            cur.execute(
                "SELECT CAST(v AS int) + 1, CAST(x AS nvarchar(max)) FROM tv WHERE id = 5 OR id = 1"
                " ORDER BY id"
            )
            out["back"] = cur.fetchall()
            cur.execute(
                "SELECT CAST(CAST(3000000000 AS bigint) AS sql_variant),"
                " CAST(0x0A0B AS sql_variant),"
                " CAST(CAST('2024-02-29 13:14:15.1234567' AS datetime2) AS sql_variant),"
                " CAST(CAST(1.5 AS float) AS sql_variant), CAST(CAST(1 AS bit) AS sql_variant)"
            )
            out["literals"] = cur.fetchall()
        return out

    out = await in_thread(run)
    assert out["rows"] == [
        (1, decimal.Decimal("12.50"), "<a>1</a>"),
        (2, "héllo", "<b/><c/>"),
        (3, datetime.date(2024, 1, 2), None),
        (4, None, None),
        (5, 7, "text only"),
    ]
    assert out["types"][1:] == [pytds.tds_base.SYBVARIANT, pytds.tds_base.SYBMSXML]
    assert out["props"] == [
        ("decimal", 5, 2, 5),
        ("nvarchar", 0, 0, 10),
        ("date", 10, 0, 3),
        (None, None, None, None),
        ("int", 10, 0, 4),
    ]
    assert out["back"] == [(13, "<a>1</a>"), (8, "text only")]
    assert out["literals"] == [
        (
            3000000000,
            b"\x0a\x0b",
            datetime.datetime(2024, 2, 29, 13, 14, 15, 123456),
            1.5,
            True,
        )
    ]


@pytest.mark.parametrize(
    ("sql", "number"),
    [
        ("SELECT CAST('<a>' AS xml)", 9400),
        ("SELECT CAST(N'<a></b>' AS xml)", 9436),
        ("SELECT CAST('<a x=1/>' AS xml)", 9421),
        ("SELECT CAST('<!DOCTYPE a [<!ENTITY e \"x\">]><a>&e;</a>' AS xml)", 6359),
        ("CREATE TABLE tx (x xml); INSERT INTO tx VALUES ('<open>')", 9400),
        ("SELECT CAST(CAST(N'x' AS nvarchar(max)) AS sql_variant)", 206),
    ],
)
async def test_xml_well_formedness_and_variant_clash_errors(
    tds_server: TdsServer, sql: str, number: int
) -> None:
    def run() -> int:
        with connect(tds_server) as conn, conn.cursor() as cur:
            with pytest.raises(pytds.Error) as info:
                cur.execute(sql)
            return int(info.value.msg_no)  # type: ignore[attr-defined]

    assert await in_thread(run) == number


async def test_xml_parameters_pyodbc_and_pytds(tds_server: TdsServer) -> None:
    pyodbc = pytest.importorskip("pyodbc")
    from tests.tdslite.test_client_pyodbc import connect as odbc_connect

    def run() -> dict[str, Any]:
        out: dict[str, Any] = {}
        conn = odbc_connect(tds_server)
        try:
            cur = conn.cursor()
            cur.execute("CREATE TABLE doc (id int PRIMARY KEY, body xml)")
            cur.execute("INSERT INTO doc VALUES (?, ?)", 1, "<order id='1'><line/></order>")
            cur.execute("SELECT id, body FROM doc")
            out["odbc"] = [tuple(r) for r in cur.fetchall()]
            out["odbc_type"] = cur.description[1][1]
            try:
                cur.execute("INSERT INTO doc VALUES (?, CAST(? AS xml))", 2, "<broken>")
            except pyodbc.Error as exc:
                out["odbc_error"] = str(exc)
        finally:
            conn.close()
        with connect(tds_server) as pconn, pconn.cursor() as pcur:
            pcur.execute("SELECT body FROM doc WHERE id = %s", (1,))
            out["pytds"] = pcur.fetchall()
        return out

    out = await in_thread(run)
    assert out["odbc"] == [(1, "<order id='1'><line/></order>")]
    assert out["odbc_type"] is str
    assert "9400" in out["odbc_error"]
    assert out["pytds"] == [("<order id='1'><line/></order>",)]


async def test_variant_and_xml_tedious(tds_server: TdsServer) -> None:
    result = await run_plan(
        tds_server,
        [
            {"sql": VARIANT_TABLE},
            {"sql": "SELECT id, v, x FROM tv ORDER BY id"},
            {"sql": PROPERTIES},
            {"sql": "SELECT CAST('<a>' AS xml)"},
        ],
    )
    steps = result["steps"]
    assert steps[1]["rows"] == [
        [1, 12.5, "<a>1</a>"],
        [2, "héllo", "<b/><c/>"],
        [3, "2024-01-02T00:00:00.000Z", None],
        [4, None, None],
        [5, 7, "text only"],
    ]
    assert steps[2]["rows"][0] == ["decimal", 5, 2, 5]
    assert steps[3]["error"]["number"] == 9400


async def test_variant_tsql(tds_server: TdsServer) -> None:
    script = (
        b"SELECT CAST(7 AS sql_variant), CAST(N'he' AS sql_variant), CAST(1.25 AS sql_variant)"
        b"\ngo\n"
    )

    def run() -> str:
        proc = subprocess.run(
            ["tsql", "-H", tds_server.host, "-p", str(tds_server.port), "-U", "admin", "-P",
             PASSWORDS["admin"]],
            input=script, capture_output=True, timeout=20, check=False,
            env={"TDSVER": "7.4", "PATH": "/usr/bin:/bin"},
        )  # fmt: skip
        return proc.stdout.decode()

    assert "7\the\t1.25" in await in_thread(run)


def _rpc_executesql(stmt: str, decl: str, param: bytes) -> bytes:
    """sp_executesql (ProcID 10) with @stmt, @params and one parameter already encoded."""

    def nvarchar_param(text: str) -> bytes:
        raw = utf16(text)
        return (
            b"\x00\x00"
            + bytes([0xE7])
            + struct.pack("<H", 8000)
            + b"\x09\x04\xd0\x00\x34"
            + (struct.pack("<H", len(raw)) + raw)
        )

    return (
        all_headers()
        + struct.pack("<HHH", 0xFFFF, 10, 0)
        + nvarchar_param(stmt)
        + nvarchar_param(decl)
        + param
    )


def _named(name: str) -> bytes:
    return bytes([len(name)]) + utf16(name) + b"\x00"


async def test_variant_and_xml_parameters_raw_then_pytds(tds_server: TdsServer) -> None:
    """A sql_variant parameter (decimal(5,2) base) and an xml parameter, as MS-TDS encodes them,
    stored and then read by python-tds with their base type."""
    client = await RawClient.connect(tds_server.host, tds_server.port, "admin", PASSWORDS["admin"])
    try:
        reply = await client.request(0x01, all_headers() + utf16(
            "CREATE TABLE pv (id int PRIMARY KEY, v sql_variant, x xml)"))  # fmt: skip
        assert reply.errors == []
        # SSVARIANT: max length, total length, base DECIMALN, 2 property bytes (p, s), value
        decimal_data = bytes([1]) + (1234).to_bytes(4, "little")
        variant = bytes([0x62]) + struct.pack("<I", 8016) + struct.pack(
            "<I", 2 + 2 + len(decimal_data)
        ) + bytes([0x6A, 2, 5, 2]) + decimal_data  # fmt: skip
        reply = await client.request(
            0x03,
            _rpc_executesql(
                "INSERT INTO pv (id, v) VALUES (1, @v)", "@v sql_variant", _named("@v") + variant
            ),
        )
        assert reply.errors == []
        body = utf16("<p>ok</p>")
        xml = bytes([0xF1, 0]) + struct.pack("<Q", len(body)) + struct.pack("<I", len(body))
        xml += body + b"\x00\x00\x00\x00"
        reply = await client.request(
            0x03,
            _rpc_executesql("UPDATE pv SET x = @x WHERE id = 1", "@x xml", _named("@x") + xml),
        )
        assert reply.errors == []
        bad = utf16("<p>")
        broken = bytes([0xF1, 0]) + struct.pack("<QI", len(bad), len(bad)) + bad + bytes(4)
        reply = await client.request(
            0x03, _rpc_executesql("SELECT @x", "@x xml", _named("@x") + broken)
        )
        assert reply.errors == [9400]
    finally:
        await client.aclose()

    def read() -> list[Any]:
        with connect(tds_server) as conn, conn.cursor() as cur:
            cur.execute("SELECT v, SQL_VARIANT_PROPERTY(v, 'BaseType'), x FROM pv")
            rows: list[Any] = cur.fetchall()
            return rows

    assert await in_thread(read) == [(decimal.Decimal("12.34"), "decimal", "<p>ok</p>")]
