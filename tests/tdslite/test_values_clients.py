"""SQL Server values that must not change on their way through tdslite, checked with two
independent clients: python-tds and pyodbc over FreeTDS ODBC. Each case is one expression; both
clients must read SQL Server's value (and, for decimals, its scale)."""

from __future__ import annotations

import datetime
import glob
from decimal import Decimal
from typing import Any

import pytds
import pytest
import trio

from tdslite import TdsServer
from tests.tdslite._tds_helpers import PASSWORDS, in_thread
from tests.tdslite._tds_raw import RawClient, sql_batch

pyodbc = pytest.importorskip("pyodbc")
DRIVERS = sorted(glob.glob("/usr/lib/*/odbc/libtdsodbc.so"))
pytestmark = pytest.mark.skipif(
    not DRIVERS, reason="FreeTDS ODBC driver missing: run scripts/install-system-deps"
)


def _pytds_connect(server: TdsServer) -> Any:
    return pytds.connect(
        server.host,
        port=server.port,
        user="admin",
        password=PASSWORDS["admin"],
        autocommit=True,
        timeout=10,
        login_timeout=5,
    )


def _odbc_connect(server: TdsServer) -> Any:
    dsn = (
        f"DRIVER={DRIVERS[0]};SERVER={server.host};PORT={server.port};"
        f"UID=admin;PWD={PASSWORDS['admin']};TDS_Version=7.4;ClientCharset=UTF-8"
    )
    return pyodbc.connect(dsn, timeout=5, autocommit=True)


def _pytds_rows(server: TdsServer, sql: str) -> list[tuple[Any, ...]]:
    return _pytds_result(server, sql)[0]


def _pytds_result(server: TdsServer, sql: str) -> tuple[list[tuple[Any, ...]], list[Any]]:
    """(rows, [(precision, scale) per column]) as python-tds reads them."""
    conn = _pytds_connect(server)
    try:
        cur = conn.cursor()
        cur.execute(sql)
        if cur.description is None:  # a statement without a result set
            return [], []
        return [tuple(r) for r in cur.fetchall()], [(d[4], d[5]) for d in cur.description]
    finally:
        conn.close()


def _pyodbc_rows(server: TdsServer, sql: str) -> list[tuple[Any, ...]]:
    conn = _odbc_connect(server)
    try:
        cur = conn.cursor()
        cur.execute(sql)
        return [tuple(r) for r in cur.fetchall()]
    finally:
        conn.close()


async def both_clients(server: TdsServer, sql: str) -> list[tuple[Any, ...]]:
    """Rows of `sql` read by python-tds; asserts pyodbc+FreeTDS read the same values."""
    by_pytds = await in_thread(_pytds_rows, server, sql)
    by_odbc = await in_thread(_pyodbc_rows, server, sql)
    assert by_odbc == by_pytds
    assert [tuple(map(type, r)) for r in by_odbc] == [tuple(map(type, r)) for r in by_pytds]
    return by_pytds


# (expression, value, (precision, scale) of the result; money is (19, 4))
DECIMAL_CASES = [
    # the constant 4 is decimal(1,0): scale max(6, 2 + 1 + 1) = 6, precision 12 - 2 + 0 + 6
    ("CAST(10 AS decimal(12,2)) / 4", Decimal("2.500000"), (16, 6)),
    # measured on SQL Server: 1 / 3.0 is numeric(8,6); numeric(9,6) / 3 has scale 8
    ("1 / 3.0", Decimal("0.333333"), (8, 6)),
    ("CAST(1 AS numeric(9,6)) / 3", Decimal("0.33333333"), (11, 8)),
    # an int column counts as decimal(10,0): scale max(6, 2 + 10 + 1) = 13
    ("CAST(10 AS decimal(12,2)) / CAST(4 AS int)", Decimal("2.5000000000000"), (23, 13)),
    ("CAST(7 AS money) / 2", Decimal("3.5000"), (19, 4)),
    ("CAST(7 AS money) * CAST(2.5 AS money)", Decimal("17.5000"), (19, 4)),
    ("CAST(10 AS money) / 3", Decimal("3.3333"), (19, 4)),
    ("CAST(1.05 AS decimal(4,2)) * CAST(1.05 AS decimal(4,2))", Decimal("1.1025"), (9, 4)),
    ("CAST(2 AS decimal(3,0)) / 3", Decimal("0.666666"), (9, 6)),  # division truncates
    ("CAST(-7.5 AS decimal(5,1)) % 2", Decimal("-1.5"), (2, 1)),  # the dividend's sign
    ("CAST(0.1 AS decimal(3,1)) + CAST(0.2 AS decimal(3,1))", Decimal("0.3"), (4, 1)),
    ("CAST(1 AS decimal(38,4)) + CAST(1 AS decimal(38,4))", Decimal("2.0000"), (38, 4)),
    ("CAST(1 AS decimal(38,10)) * CAST(3 AS decimal(38,10))", Decimal("3.000000"), (38, 6)),
    ("7.0 / 2", Decimal("3.500000"), (7, 6)),
    (
        "CAST(12345678901234567.89 AS decimal(19,2)) - 0.01",
        Decimal("12345678901234567.88"),
        (20, 2),
    ),
]


@pytest.mark.parametrize(("expression", "expected", "p_s"), DECIMAL_CASES)
async def test_decimal_and_money_arithmetic(
    tds_server: TdsServer, expression: str, expected: Decimal, p_s: tuple[int, int]
) -> None:
    assert await both_clients(tds_server, f"SELECT {expression}") == [(expected,)]
    _, described = await in_thread(_pytds_result, tds_server, f"SELECT {expression}")
    if p_s != (19, 4):  # python-tds describes money without precision/scale
        assert described == [p_s]


@pytest.mark.parametrize(
    "expression",
    [
        "CAST(99999999999999999999999999999999999999 AS decimal(38,0)) + 1",
        "CAST(922337203685477 AS money) * 10",
        "CAST(999.9 AS decimal(4,1)) * CAST(999.9 AS decimal(4,1)) * CAST(999.9 AS decimal(38,37))",
    ],
)
async def test_decimal_overflow_is_8115(tds_server: TdsServer, expression: str) -> None:
    with pytest.raises(pytds.OperationalError) as info:
        await in_thread(_pytds_rows, tds_server, f"SELECT {expression}")
    assert info.value.msg_no == 8115
    with pytest.raises(pyodbc.Error, match="8115|[Aa]rithmetic overflow"):
        await in_thread(_pyodbc_rows, tds_server, f"SELECT {expression}")


async def test_bigint_limits_are_exact(tds_server: TdsServer) -> None:
    sql = (
        "SELECT -9223372036854775808, CAST(-9223372036854775808 AS bigint),"
        " CAST(9223372036854775807 AS bigint), -(9223372036854775808),"
        " -CAST(12345678901234567890123456789.5 AS decimal(38,1))"
    )
    assert await both_clients(tds_server, sql) == [
        (
            Decimal("-9223372036854775808"),  # the constant is decimal(19,0), as in SQL Server
            -(2**63),
            2**63 - 1,
            Decimal("-9223372036854775808"),
            Decimal("-12345678901234567890123456789.5"),
        )
    ]
    _, described = await in_thread(_pytds_result, tds_server, sql)
    assert described[0] == (19, 0)
    with pytest.raises(pytds.OperationalError) as info:
        await in_thread(_pytds_rows, tds_server, "SELECT CAST(-9223372036854775809 AS bigint)")
    assert info.value.msg_no == 8115


async def test_nvarchar_lengths_count_utf16_code_units(tds_server: TdsServer) -> None:
    # U+1F600 is one character but two UTF-16 code units, and SQL Server counts code units
    sql = (
        "SELECT N'a😀b', LEN(N'a😀b'), DATALENGTH(N'a😀b'), SUBSTRING(N'a😀b', 2, 2),"
        " LEFT(N'a😀b', 3), RIGHT(N'a😀b', 3), CAST(N'a😀b' AS nvarchar(3)),"
        " SUBSTRING(N'xyz', 0, 3), SUBSTRING(0x0102030405, 2, 2), CHARINDEX(N'b', N'a😀b')"
    )
    assert await both_clients(tds_server, sql) == [
        ("a😀b", 4, 8, "😀", "a😀", "😀b", "a😀", "xy", b"\x02\x03", 4)
    ]
    await in_thread(_pytds_rows, tds_server, "CREATE TABLE utf16 (v nvarchar(3))")
    await in_thread(_pytds_rows, tds_server, "INSERT INTO utf16 VALUES (N'a😀')")
    assert await both_clients(tds_server, "SELECT v, LEN(v) FROM utf16") == [("a😀", 3)]
    with pytest.raises(pytds.OperationalError) as info:  # 4 code units into nvarchar(3)
        await in_thread(_pytds_rows, tds_server, "INSERT INTO utf16 VALUES (N'a😀b')")
    assert info.value.msg_no == 2628


async def test_datetime_rounds_to_three_hundredths_like_sql_server(tds_server: TdsServer) -> None:
    # SQL Server's documented table: .990/.991 -> .990, .992-.994 -> .993, .995-.998 -> .997,
    # .999 -> the next second
    fractions = ["990", "991", "992", "994", "995", "996", "998", "999"]
    sql = "SELECT " + ", ".join(f"CAST('2024-02-29 23:59:59.{f}' AS datetime)" for f in fractions)
    rows = await both_clients(tds_server, sql)
    at = datetime.datetime(2024, 2, 29, 23, 59, 59)
    assert rows == [
        tuple(at.replace(microsecond=ms * 1000) for ms in (990, 990, 993, 993, 997, 997, 997))
        + (datetime.datetime(2024, 3, 1),)
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2011-12-4 10:04:23", datetime.datetime(2011, 12, 4, 10, 4, 23)),
        ("2011-12-04T10:04:23.997", datetime.datetime(2011, 12, 4, 10, 4, 23, 997000)),
        ("20111204 10:04", datetime.datetime(2011, 12, 4, 10, 4)),
        ("2011/12/04", datetime.datetime(2011, 12, 4)),
        ("12/4/2011 10:04 PM", datetime.datetime(2011, 12, 4, 22, 4)),
        ("12-04-11", datetime.datetime(2011, 12, 4)),
        ("Dec 4 2011 10:04AM", datetime.datetime(2011, 12, 4, 10, 4)),
        ("December 4, 2011", datetime.datetime(2011, 12, 4)),
        ("04-Dec-2011 10:04", datetime.datetime(2011, 12, 4, 10, 4)),
        ("4 Dec 2011 10:04:23:997", datetime.datetime(2011, 12, 4, 10, 4, 23, 997000)),
        ("", datetime.datetime(1900, 1, 1)),
        ("10:04:23", datetime.datetime(1900, 1, 1, 10, 4, 23)),
    ],
)
async def test_datetime_literal_formats(
    tds_server: TdsServer, text: str, expected: datetime.datetime
) -> None:
    rows = await both_clients(
        tds_server, f"SELECT CAST('{text}' AS datetime), CAST('{text}' AS datetime2(3))"
    )
    assert rows == [(expected, expected)]


@pytest.mark.parametrize(
    "text", ["2011-13-04", "2011-02-30", "12/4/2011 25:00", "hello", "4 Foo 2011"]
)
async def test_impossible_dates_are_error_241(tds_server: TdsServer, text: str) -> None:
    with pytest.raises(pytds.OperationalError) as info:
        await in_thread(_pytds_rows, tds_server, f"SELECT CAST('{text}' AS datetime)")
    assert info.value.msg_no == 241


async def test_temporal_to_text_prints_the_types_fractional_digits(tds_server: TdsServer) -> None:
    t = "CAST('13:14:15.1234567' AS time({}))"
    d2 = "CAST('2024-02-29 13:14:15.1234567' AS datetime2({}))"
    sql = "SELECT " + ", ".join(
        [f"CAST({t.format(n)} AS varchar(40))" for n in (0, 3, 7)]
        + [f"CONVERT(nvarchar(40), {d2.format(n)})" for n in (0, 2)]
        + [
            "CAST(CAST('2024-02-29 13:14:15.1234567 +01:00' AS datetimeoffset(4)) AS varchar(40))",
            "CAST(CAST('2024-02-29 13:14:15.997' AS datetime) AS varchar(30))",
            "CONVERT(varchar(30), CAST('2024-02-29 13:14:15.997' AS datetime), 121)",
        ]
    )
    assert await both_clients(tds_server, sql) == [
        (
            "13:14:15",
            "13:14:15.123",
            "13:14:15.1234567",
            "2024-02-29 13:14:15",
            "2024-02-29 13:14:15.12",
            "2024-02-29 13:14:15.1235 +01:00",
            "Feb 29 2024  1:14PM",
            "2024-02-29 13:14:15.997",
        )
    ]


async def test_a_literal_longer_than_8000_characters_is_max(tds_server: TdsServer) -> None:
    long_v, long_n = "v" * 8001, "n" * 4001
    sql = (
        f"SELECT '{long_v}', CAST('{long_v}' AS varchar(max)), CONVERT(nvarchar(max), N'{long_n}'),"
        f" LEN('{long_v}'), DATALENGTH(N'{long_n}'), LEFT('{long_v}', 2)"
    )
    assert await both_clients(tds_server, sql) == [(long_v, long_v, long_n, 8001, 8002, "vv")]
    _, described = await in_thread(_pytds_result, tds_server, sql)
    assert len(described) == 6


def test_a_literal_longer_than_8000_characters_is_typed_max() -> None:
    from tdslite.engine import Engine, ResultSet
    from tests.tdslite.test_engine_types import ADMIN

    engine = Engine(":memory:", {"sa": ADMIN})
    try:
        session = engine.open_session(ADMIN)
        sql = f"SELECT '{'v' * 8001}', N'{'n' * 4001}', '{'v' * 8000}', N'{'n' * 4000}'"
        (result,) = [r for r in session.execute(sql, ()) if isinstance(r, ResultSet)]
        assert [str(c.type) for c in result.columns] == [
            "varchar(max)", "nvarchar(max)", "varchar(8000)", "nvarchar(4000)"
        ]  # fmt: skip
        list(result.rows)
    finally:
        engine.close()


NOCOUNT_BATCH = (
    "DECLARE @v int; SELECT @v = 1; CREATE TABLE nc (a int); INSERT INTO nc VALUES (1), (2);"
    " SET NOCOUNT ON; SELECT @v = a FROM nc; INSERT INTO nc VALUES (3)"
)


async def test_done_tokens_of_assignments_and_nocount_on_the_wire(tds_server: TdsServer) -> None:
    # DONE status bits: 0x01 MORE, 0x10 COUNT. SELECT @v = ... sends a DONE counting its rows;
    # after SET NOCOUNT ON the DONEs come without the COUNT bit.
    with trio.fail_after(20):
        raw = await RawClient.connect(tds_server.host, tds_server.port, "admin", PASSWORDS["admin"])
        try:
            reply = await raw.request(0x01, sql_batch(NOCOUNT_BATCH))
        finally:
            await raw.aclose()
    assert reply.errors == []
    assert reply.dones == [(0xFD, 0x11, 1), (0xFD, 0x11, 2), (0xFD, 0x01, 2), (0xFD, 0x00, 1)]


def _row_counts(connect: Any, server: TdsServer, batch: str) -> list[int]:
    """The client's rowcount of each statement of `batch` that reports one."""
    conn = connect(server)
    try:
        cur = conn.cursor()
        cur.execute(batch)
        counts = [cur.rowcount]
        while cur.nextset():
            counts.append(cur.rowcount)
        return counts
    finally:
        conn.close()


async def test_nocount_and_assignment_row_counts_in_two_clients(tds_server: TdsServer) -> None:
    batch = NOCOUNT_BATCH.replace("nc", "nc2")
    by_pytds = await in_thread(_row_counts, _pytds_connect, tds_server, batch)
    batch = NOCOUNT_BATCH.replace("nc", "nc3")
    by_odbc = await in_thread(_row_counts, _odbc_connect, tds_server, batch)
    # SELECT @v = 1 counts 1 row, the INSERT 2; after SET NOCOUNT ON no statement reports a count
    assert by_pytds == by_odbc == [1, 2]


async def test_varchar_lengths_count_bytes_of_the_code_page(tds_server: TdsServer) -> None:
    # SQL_Latin1_General_CP1_CI_AS: varchar holds cp1252, one byte a character (é and € too)
    sql = (
        "SELECT DATALENGTH('é€'), DATALENGTH(N'é€'), DATALENGTH(CAST(N'é€' AS varchar(10))),"
        " LEN('é€')"
    )
    assert await both_clients(tds_server, sql) == [(2, 4, 2, 2)]
