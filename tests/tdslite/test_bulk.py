"""Bulk load: INSERT BULK and the BulkLoad (0x07) message, as python-tds ``copy_to`` and tedious
``newBulkLoad``/``execBulkLoad`` send them, plus a raw client for a mismatched column list."""

from __future__ import annotations

import decimal
import struct
from typing import Any

import pytds
import pytest
import trio
from pytds import tds_base
from pytds.tds_types import DecimalType, IntType, NVarCharType

from tdslite import TdsServer
from tests.tdslite._tds_helpers import PASSWORDS, in_thread
from tests.tdslite._tds_raw import RawClient, sql_batch, utf16
from tests.tdslite.test_client_pytds import connect
from tests.tdslite.test_client_tedious import run_plan

TABLE = (
    "CREATE TABLE bl (id int PRIMARY KEY, name nvarchar(20) NOT NULL DEFAULT N'dflt',"
    " amount decimal(10,2))"
)


def typed_columns() -> list[Any]:
    nullable = tds_base.Column.fNullable
    return [
        tds_base.Column(name="id", type=IntType()),
        tds_base.Column(name="name", type=NVarCharType(size=20), flags=nullable),
        tds_base.Column(name="amount", type=DecimalType(precision=10, scale=2), flags=nullable),
    ]


async def test_copy_to_pytds_rows_defaults_keep_nulls_and_errors(tds_server: TdsServer) -> None:
    def run() -> dict[str, Any]:
        out: dict[str, Any] = {}
        with connect(tds_server, autocommit=True) as conn, conn.cursor() as cur:
            cur.execute(TABLE)
            # no column list: python-tds reads the columns and sends every value as nvarchar
            cur.copy_to(table_or_view="bl", data=[("1", "a", "1.5"), ("2", None, "2.25")])
            out["count1"] = cur.rowcount
            cur.copy_to(
                table_or_view="bl",
                columns=typed_columns(),
                data=[(3, "c", decimal.Decimal("3.10")), (4, "d", None)],
                keep_nulls=True,
                tablock=True,
                check_constraints=True,
            )
            out["count2"] = cur.rowcount
            cur.execute("SELECT id, name, amount FROM bl ORDER BY id")
            out["rows"] = cur.fetchall()
            for name, kw in {
                "keep_nulls_515": {"data": [(5, None, None)], "keep_nulls": True},
                "duplicate_2627": {"data": [(6, "x", None), (1, "dup", None)]},
            }.items():
                with pytest.raises(pytds.Error) as info:
                    cur.copy_to(table_or_view="bl", columns=typed_columns(), **kw)
                out[name] = info.value.msg_no  # type: ignore[attr-defined]
            with pytest.raises(pytds.Error) as info:
                cur.copy_to(table_or_view="bl", columns=["id", "nope"], data=[("7", "x")])
            out["unknown_column"] = info.value.msg_no  # type: ignore[attr-defined]
            with pytest.raises(pytds.Error) as info:
                cur.copy_to(table_or_view="bl", columns=["id"], data=[("not a number",)])
            out["conversion"] = info.value.msg_no  # type: ignore[attr-defined]
            cur.execute("SELECT COUNT(*) FROM bl")
            out["after"] = cur.fetchone()[0]
        return out

    out = await in_thread(run)
    assert (out["count1"], out["count2"]) == (2, 2)
    assert out["rows"] == [
        (1, "a", decimal.Decimal("1.50")),
        (2, "dflt", decimal.Decimal("2.25")),  # no KEEP_NULLS: the DEFAULT applies
        (3, "c", decimal.Decimal("3.10")),
        (4, "d", None),
    ]
    assert out["keep_nulls_515"] == 515
    assert out["duplicate_2627"] == 2627
    assert out["unknown_column"] == 207
    assert out["conversion"] == 245
    assert out["after"] == 4  # a failed bulk load leaves none of its rows (6 was not kept)


async def test_copy_to_in_a_transaction_rolls_back(tds_server: TdsServer) -> None:
    def run() -> tuple[int, int]:
        with connect(tds_server, autocommit=True) as conn, conn.cursor() as cur:
            cur.execute(TABLE)
        with connect(tds_server, autocommit=False) as conn, conn.cursor() as cur:
            cur.copy_to(table_or_view="bl", columns=typed_columns(), data=[(1, "a", None)])
            cur.execute("SELECT COUNT(*) FROM bl")
            inside = cur.fetchone()[0]
            conn.rollback()
            cur.execute("SELECT COUNT(*) FROM bl")
            return inside, cur.fetchone()[0]

    assert await in_thread(run) == (1, 0)


@pytest.mark.parametrize("login", ["reader", "writer"])
async def test_bulk_load_needs_insert_permission(tds_server: TdsServer, login: str) -> None:
    def run() -> tuple[int | None, int]:
        with connect(tds_server, autocommit=True) as conn, conn.cursor() as cur:
            cur.execute(TABLE)
        number = None
        with connect(tds_server, login, autocommit=True) as conn, conn.cursor() as cur:
            try:
                cur.copy_to(table_or_view="bl", columns=typed_columns(), data=[(1, "a", None)])
            except pytds.Error as exc:
                number = exc.msg_no  # type: ignore[attr-defined]
            cur.execute("SELECT COUNT(*) FROM bl")
            return number, cur.fetchone()[0]

    # the read-only login is refused before any row is read (229, fail closed)
    assert await in_thread(run) == ((229, 0) if login == "reader" else (None, 1))


async def test_bulk_load_tedious(tds_server: TdsServer) -> None:
    columns = [
        {"name": "id", "type": "Int", "options": {"nullable": False}},
        {"name": "name", "type": "NVarChar", "options": {"length": 20, "nullable": True}},
        {
            "name": "amount",
            "type": "Decimal",
            "options": {"precision": 10, "scale": 2, "nullable": True},
        },
    ]
    result = await run_plan(
        tds_server,
        [
            {"sql": TABLE},
            {
                "bulk": {
                    "table": "bl",
                    "options": {"keepNulls": False, "lockTable": True, "checkConstraints": True},
                    "columns": columns,
                    "rows": [[1, "a", 1.25], [2, None, None]],
                }
            },
            {"sql": "SELECT id, name, amount FROM bl ORDER BY id"},
            {
                "bulk": {
                    "table": "bl",
                    "columns": [{"name": "id", "type": "Int"}, {"name": "nope", "type": "Int"}],
                    "rows": [[3, 4]],
                }
            },
            {
                "bulk": {
                    "table": "bl",
                    "columns": [{"name": "id", "type": "NVarChar", "options": {"length": 10}}],
                    "rows": [["x1"]],
                }
            },
            {"sql": "SELECT COUNT(*) FROM bl"},
        ],
    )
    steps = result["steps"]
    assert steps[1] == {"rowCount": 2}
    assert steps[2]["rows"] == [[1, "a", 1.25], [2, "dflt", None]]
    assert steps[3]["error"]["number"] == 207
    assert steps[4]["error"]["number"] == 245
    assert steps[5]["rows"] == [[2]]


def _bulk_message(names: list[str]) -> bytes:
    """COLMETADATA with INTN columns named ``names``, one ROW of 1, 2, ..., and a DONE."""
    out = bytes([0x81]) + struct.pack("<H", len(names))
    for name in names:
        out += struct.pack("<IH", 0, 0x0009) + bytes([0x26, 4]) + bytes([len(name)]) + utf16(name)
    out += bytes([0xD1]) + b"".join(
        bytes([4]) + struct.pack("<i", i + 1) for i in range(len(names))
    )
    return out + bytes([0xFD]) + struct.pack("<HHQ", 0, 0, 0)


@pytest.mark.parametrize(
    ("names", "errors"), [(["a", "b"], []), (["a"], [4816]), (["b", "a"], [4816])]
)
async def test_bulk_column_list_must_match_insert_bulk(
    tds_server: TdsServer, names: list[str], errors: list[int]
) -> None:
    client = await RawClient.connect(tds_server.host, tds_server.port, "admin", PASSWORDS["admin"])
    try:
        with trio.fail_after(20):
            assert (
                await client.request(0x01, sql_batch("CREATE TABLE r (a int, b int)"))
            ).errors == []
            prepared = await client.request(0x01, sql_batch("INSERT BULK [r] ([a] int, [b] int)"))
            assert prepared.errors == []
            reply = await client.request(0x07, _bulk_message(names))
            assert reply.errors == errors
            if not errors:
                assert reply.dones[-1][2] == 1  # DONE(COUNT) with one row
            # a BulkLoad without INSERT BULK before it
            stray = await client.request(0x07, _bulk_message(["a", "b"]))
            assert stray.errors == [4815]
    finally:
        await client.aclose()


@pytest.mark.parametrize(
    ("statement", "number"),
    [
        ("INSERT BULK no_such_table ([a] int)", 208),
        ("INSERT BULK [dbo].[r] ([a] int, [nope] int)", 207),
        ("INSERT BULK r ([a] int, [a] int)", 264),
        ("INSERT BULK r ([a] int) WITH (FORMAT_MAGIC)", 40517),
    ],
)
async def test_insert_bulk_checks_table_columns_options(
    tds_server: TdsServer, statement: str, number: int
) -> None:
    client = await RawClient.connect(tds_server.host, tds_server.port, "admin", PASSWORDS["admin"])
    try:
        with trio.fail_after(20):
            created = await client.request(0x01, sql_batch("CREATE TABLE r (a int, b int)"))
            assert created.errors == []
            assert (await client.request(0x01, sql_batch(statement))).errors == [number]
    finally:
        await client.aclose()
