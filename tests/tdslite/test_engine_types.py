"""tdslite engine: every SQL Server type round-trips exactly (parameters, tables, CAST)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from decimal import Decimal

import pytest

from tdslite.engine import (
    Engine,
    Param,
    PreciseDateTime,
    PreciseTime,
    ResultSet,
    RowCount,
    Session,
    SqlError,
    SqlType,
    User,
)

ADMIN = User(login="sa", password="pw", role="admin", database_user="dbo")

#: (type, a value that stresses it): limits, full precision, non-ASCII, large values.
VALUES: list[tuple[str, object]] = [
    ("bit", True),
    ("tinyint", 255),
    ("smallint", -32768),
    ("int", -2147483648),
    ("bigint", 2**63 - 1),
    ("decimal(18,4)", Decimal("12345678901234.5678")),
    ("numeric(38,10)", Decimal("1234567890123456789012345678.0123456789")),
    ("decimal(5,2)", Decimal("-999.99")),
    ("money", Decimal("922337203685477.5807")),
    ("smallmoney", Decimal("-214748.3648")),
    ("real", 3.5),
    ("float", 2.718281828459045),
    ("char(10)", "char      "),
    ("varchar(50)", "varchar"),
    ("nchar(10)", "nchär     "),
    ("nvarchar(50)", "ünïcødé ✓ 漢字"),
    ("nvarchar(max)", "x" * 100_000 + "✓"),
    ("varchar(max)", "ascii " * 5000),
    ("binary(4)", b"\x01\x02\x03\x04"),
    ("varbinary(50)", b"\xde\xad\x00\xef"),
    ("varbinary(max)", bytes(range(256)) * 400),
    ("date", dt.date(2024, 2, 29)),
    ("time(7)", PreciseTime(23, 59, 59, 999999, nanosecond_100=9)),
    ("time(0)", dt.time(1, 2, 3)),
    ("datetime", dt.datetime(2024, 2, 29, 13, 14, 15, 997000)),
    ("smalldatetime", dt.datetime(2024, 2, 29, 13, 14)),
    ("datetime2(7)", PreciseDateTime(2024, 2, 29, 13, 14, 15, 123456, nanosecond_100=7)),
    ("datetime2(3)", dt.datetime(1, 1, 1, 0, 0, 0, 1000)),
    (
        "datetimeoffset(7)",
        PreciseDateTime(
            2024,
            2,
            29,
            13,
            14,
            15,
            123456,
            dt.timezone(-dt.timedelta(hours=5, minutes=30)),
            nanosecond_100=1,
        ),
    ),  # fmt: skip
    (
        "datetimeoffset(0)",
        dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=dt.timezone(dt.timedelta(hours=14))),
    ),
    ("uniqueidentifier", uuid.UUID("6f9619ff-8b86-d011-b42d-00c04fc964ff")),
]


@pytest.fixture
def session() -> Iterator[Session]:
    engine = Engine(":memory:", {"sa": ADMIN})
    try:
        yield engine.open_session(ADMIN)
    finally:
        engine.close()


def results(
    session: Session, sql: str, params: tuple[Param, ...] = ()
) -> list[ResultSet | RowCount]:
    """Run a batch; result sets come back with their rows materialised as lists."""
    out: list[ResultSet | RowCount] = []
    for result in session.execute(sql, params):
        if isinstance(result, ResultSet):
            result = ResultSet(result.columns, iter(list(result.rows)))
        out.append(result)
    return out


def one(
    session: Session, sql: str, params: tuple[Param, ...] = ()
) -> tuple[ResultSet, list[tuple[object, ...]]]:
    (result,) = [r for r in results(session, sql, params) if isinstance(r, ResultSet)]
    return result, list(result.rows)


def assert_same(actual: object, expected: object) -> None:
    """Equal, of the same class, and for Decimals with the same exponent (12.3400 != 12.34)."""
    assert actual == expected
    assert type(actual) is type(expected) or (
        isinstance(expected, dt.datetime | dt.time) and type(actual) in (dt.datetime, dt.time)
    )
    if isinstance(expected, Decimal):
        assert isinstance(actual, Decimal)
        assert actual.as_tuple() == expected.as_tuple()
    if isinstance(expected, dt.datetime) and expected.tzinfo is not None:
        assert isinstance(actual, dt.datetime)
        assert actual.utcoffset() == expected.utcoffset()
    nanos = getattr(expected, "nanosecond_100", 0)
    assert getattr(actual, "nanosecond_100", 0) == nanos


@pytest.mark.parametrize(("type_name", "value"), VALUES, ids=[v[0] for v in VALUES])
def test_parameter_round_trips_through_a_table(
    session: Session, type_name: str, value: object
) -> None:
    sql_type = SqlType.parse(type_name)
    results(session, f"CREATE TABLE t (id int PRIMARY KEY, v {type_name} NULL)")
    inserted = results(
        session,
        "INSERT INTO t (id, v) VALUES (1, @v); INSERT INTO t (id, v) VALUES (2, @n)",
        (Param("@v", sql_type, value), Param("@n", sql_type, None)),
    )
    assert inserted == [RowCount(1), RowCount(1)]
    result, rows = one(session, "SELECT v FROM t ORDER BY id")
    assert result.columns[0].type == sql_type
    assert result.columns[0].name == "v"
    assert_same(rows[0][0], value)
    assert rows[1][0] is None


@pytest.mark.parametrize(("type_name", "value"), VALUES, ids=[v[0] for v in VALUES])
def test_parameter_echoed_keeps_its_type(session: Session, type_name: str, value: object) -> None:
    sql_type = SqlType.parse(type_name)
    result, rows = one(session, "SELECT @p AS p", (Param("@p", sql_type, value),))
    assert result.columns[0].type == sql_type
    assert_same(rows[0][0], value)


@pytest.mark.parametrize(
    ("expression", "type_text", "expected"),
    [
        ("CAST(8 AS tinyint)", "tinyint", 8),
        ("CAST('12.34' AS decimal(18,4))", "decimal(18,4)", Decimal("12.3400")),
        ("CAST(2.5 AS decimal(5,0))", "decimal(5,0)", Decimal("3")),
        ("CAST(-2.5 AS int)", "int", -2),
        ("CAST('2024-02-29 13:14:15.1234567' AS datetime2(7))", "datetime2(7)",
         PreciseDateTime(2024, 2, 29, 13, 14, 15, 123456, nanosecond_100=7)),
        ("CAST('2024-02-29 13:14:15.1234567' AS datetime2(2))", "datetime2(2)",
         dt.datetime(2024, 2, 29, 13, 14, 15, 120000)),
        ("CAST('2024-02-29 13:14:15.999' AS datetime)", "datetime",
         dt.datetime(2024, 2, 29, 13, 14, 16)),
        ("CAST('2024-02-29 10:00:00 +02:00' AS datetimeoffset(0))", "datetimeoffset(0)",
         dt.datetime(2024, 2, 29, 10, tzinfo=dt.timezone(dt.timedelta(hours=2)))),
        ("CAST('6F9619FF-8B86-D011-B42D-00C04FC964FF' AS uniqueidentifier)", "uniqueidentifier",
         uuid.UUID("6f9619ff-8b86-d011-b42d-00c04fc964ff")),
        ("CAST(0x0102 AS varbinary(max))", "varbinary(max)", b"\x01\x02"),
        ("CAST(N'abc' AS nvarchar(max))", "nvarchar(max)", "abc"),
        ("CAST('abcdef' AS varchar(3))", "varchar(3)", "abc"),
        ("CAST(12.5 AS money)", "money", Decimal("12.5000")),
        ("CAST(1 AS bit)", "bit", True),
        ("CAST('23:59:59.9999999' AS time)", "time(7)",
         PreciseTime(23, 59, 59, 999999, nanosecond_100=9)),
        ("CAST('2024-02-29' AS date)", "date", dt.date(2024, 2, 29)),
        ("CAST(1.5 AS real)", "real", 1.5),
        ("CONVERT(int, '42')", "int", 42),
        ("CONVERT(varchar(10), CAST('2024-02-29' AS date), 23)", "varchar(10)", "2024-02-29"),
        ("TRY_CAST('x' AS int)", "int", None),
    ],
)  # fmt: skip
def test_cast_keeps_the_sql_server_result_type(
    session: Session, expression: str, type_text: str, expected: object
) -> None:
    result, rows = one(session, f"SELECT {expression}")
    assert str(result.columns[0].type) == type_text
    if expected is None:
        assert rows[0][0] is None
    else:
        assert_same(rows[0][0], expected)


@pytest.mark.parametrize(
    ("expression", "type_text", "expected"),
    [
        ("8", "int", 8),
        ("3000000000", "decimal(10,0)", Decimal("3000000000")),
        ("1.50", "decimal(3,2)", Decimal("1.50")),
        ("N'ab' + 'c'", "nvarchar(3)", "abc"),
        ("'ab' + 'c'", "varchar(3)", "abc"),
        ("'5' + 1", "int", 6),
        ("7 / 2", "int", 3),
        ("-7 / 2", "int", -3),
        ("7 % 3", "int", 1),
        ("7.0 / 2", "decimal(7,6)", Decimal("3.500000")),
        ("1.5 * 2", "decimal(4,1)", Decimal("3.0")),
        ("ISNULL(NULL, 5)", "int", 5),
        ("COALESCE(NULL, 1, 2.5)", "decimal(11,1)", Decimal("1.0")),
        ("LEN(N'abc  ')", "int", 3),
        ("N'a😀b'", "nvarchar(4)", "a😀b"),
        ("0x", "varbinary(1)", b""),  # the empty binary constant  # lengths in UTF-16 code units
        ("SUBSTRING(N'a😀b', 2, 2)", "nvarchar(4)", "😀"),
        ("LEFT(N'abcdef', 2) + RIGHT(N'abcdef', 2)", "nvarchar(12)", "abef"),
        ("CHARINDEX('C', 'abc')", "int", 3),
        ("DATEADD(day, 1, CAST('2024-02-28' AS date))", "date", dt.date(2024, 2, 29)),
        ("DATEDIFF(month, '2024-01-31', '2024-03-01')", "int", 2),
        ("YEAR(CAST('2024-02-29' AS date))", "int", 2024),
        ("CONCAT('a', 1, NULL, N'b')", "nvarchar(4000)", "a1b"),
        ("CASE WHEN 1 = 1 THEN 'yes' ELSE 'no' END", "varchar(3)", "yes"),
        ("NULLIF(2, 1)", "int", 2),
        ("POWER(2, 10)", "int", 1024),
        ("SQRT(16)", "float", 4.0),
        ("5 & 3", "int", 1),
        ("ABS(-2.50)", "decimal(3,2)", Decimal("2.50")),
    ],
)
def test_expression_types(
    session: Session, expression: str, type_text: str, expected: object
) -> None:
    result, rows = one(session, f"SELECT {expression}")
    assert str(result.columns[0].type) == type_text
    assert_same(rows[0][0], expected)


def test_aggregate_types_follow_sql_server(session: Session) -> None:
    results(
        session,
        "CREATE TABLE m (a int, b decimal(10,2), c float, d bigint);"
        "INSERT INTO m VALUES (1, 1.10, 0.5, 10), (2, 2.20, 1.5, 20), (4, 3.30, NULL, 30)",
    )
    result, rows = one(
        session,
        "SELECT COUNT(*), COUNT_BIG(*), SUM(a), AVG(a), SUM(b), AVG(b), SUM(c), SUM(d), MIN(b),"
        " MAX(a) FROM m",
    )
    assert [str(c.type) for c in result.columns] == [
        "int", "bigint", "int", "int", "decimal(38,2)", "decimal(38,6)", "float", "bigint",
        "decimal(10,2)", "int",
    ]  # fmt: skip
    assert rows == [(3, 3, 7, 2, Decimal("6.60"), Decimal("2.200000"), 2.0, 60, Decimal("1.10"), 4)]


def test_decimal_arithmetic_and_ordering_are_numeric(session: Session) -> None:
    results(
        session,
        "CREATE TABLE p (id int PRIMARY KEY, price decimal(12,2));"
        "INSERT INTO p VALUES (1, 9.99), (2, 10.00), (3, 100.50), (4, 2.5)",
    )
    _, rows = one(session, "SELECT id FROM p WHERE price > 9.995 ORDER BY price DESC")
    assert rows == [(3,), (2,)]
    _, rows = one(session, "SELECT SUM(price) FROM p WHERE price < '11'")
    assert rows == [(Decimal("22.49"),)]


def test_datetimeoffset_compares_by_instant(session: Session) -> None:
    results(
        session,
        "CREATE TABLE e (id int PRIMARY KEY, at datetimeoffset(0));"
        "INSERT INTO e VALUES (1, '2024-01-01 10:00:00 +05:00'), (2, '2024-01-01 06:00:00 +00:00')",
    )
    _, rows = one(session, "SELECT id FROM e ORDER BY at")
    assert rows == [(1,), (2,)]  # 05:00 UTC before 06:00 UTC
    _, rows = one(session, "SELECT id FROM e WHERE at = '2024-01-01 05:00:00 +00:00'")
    assert rows == [(1,)]


def test_sqltype_parse_and_str() -> None:
    assert SqlType.parse("decimal(18,4)") == SqlType("decimal", precision=18, scale=4)
    assert SqlType.parse("NVARCHAR(MAX)") == SqlType("nvarchar", length=-1)
    assert SqlType.parse("float(24)") == SqlType("real")
    assert SqlType.parse("datetime2") == SqlType("datetime2", scale=7)
    assert SqlType.parse("varchar") == SqlType("varchar", length=1)
    assert SqlType.parse("varchar", in_cast=True) == SqlType("varchar", length=30)
    for text in ("decimal(38,10)", "nvarchar(max)", "varbinary(16)", "datetimeoffset(3)", "int"):
        assert str(SqlType.parse(text)) == text
    for bad in ("decimal(39,0)", "varchar(9000)", "geography", "char(max)", "int(4)"):
        with pytest.raises(ValueError, match=r"\S"):
            SqlType.parse(bad)


def test_conversion_errors_have_sql_server_numbers(session: Session) -> None:
    for sql, number in [
        ("SELECT CAST('abc' AS int)", 245),
        ("SELECT CAST(300 AS tinyint)", 8115),
        ("SELECT CAST(12345.6 AS decimal(5,1))", 8115),
        ("SELECT CAST('not a date' AS datetime2)", 241),
        ("SELECT CAST('xyz' AS uniqueidentifier)", 8169),
        ("SELECT CAST('1.2.3' AS decimal(5,2))", 8114),
    ]:
        with pytest.raises(SqlError) as caught:
            results(session, sql)
        assert caught.value.number == number, sql
