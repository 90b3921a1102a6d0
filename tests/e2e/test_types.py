"""Every SQL Server type tdslite supports, bound as a typed parameter and read back through the
whole path (HTTP -> relay -> connector -> python-tds -> tdslite -> back): values round-trip
exactly in the FIXED JSON encoding, and the column metadata names the type."""

from __future__ import annotations

import pytest
import trio

from tests.support.e2e_stack import Stack

# (declared type, JSON value, column type reported, column scale)
CASES = [
    ("bit", True, "bit", None),
    ("bit", False, "bit", None),
    ("tinyint", 255, "tinyint", None),
    ("smallint", -32768, "smallint", None),
    ("int", -2147483648, "int", None),
    ("bigint", "9223372036854775807", "bigint", None),
    ("bigint", "-9007199254740993", "bigint", None),
    ("decimal(18,4)", "12.3400", "decimal", 4),
    ("decimal(38,10)", "-1234567890123456789012345678.0123456789", "decimal", 10),
    ("numeric(5,2)", "999.99", "decimal", 2),
    ("money", "922337203685477.5807", "money", 4),
    ("money", "-922337203685477.5808", "money", 4),
    ("money", "-12.3400", "money", 4),
    ("money", "-0.0001", "money", 4),
    ("smallmoney", "-214748.3648", "smallmoney", 4),
    ("smallmoney", "214748.3647", "smallmoney", 4),
    ("real", 1.5, "real", None),
    ("real", 1.1, "real", None),
    ("float", 0.1, "float", None),
    ("float", -1.7976931348623157e308, "float", None),
    ("nvarchar(50)", "héllo ☃ 😀 ' ; DROP TABLE notes --", "nvarchar", None),
    ("nvarchar(max)", "x" * 5000, "nvarchar", None),
    ("nvarchar(2)", "😀", "nvarchar", None),  # two UTF-16 code units: its whole length
    ("varchar(3)", "€é£", "varchar", None),  # one byte each in the code page (cp1252)
    ("varchar(20)", "ascii", "varchar", None),
    ("nchar(5)", "ab   ", "nvarchar", None),  # python-tds reports nchar as nvarchar
    ("char(3)", "abc", "varchar", None),  # ... and char as varchar
    ("varbinary(max)", "AP9hYg==", "varbinary", None),
    ("varbinary(10)", "", "varbinary", None),
    ("binary(4)", "AAECAw==", "varbinary", None),
    ("date", "2024-02-29", "date", None),
    ("time(0)", "01:02:03", "time", 0),
    ("time(3)", "01:02:03.450", "time", 3),
    ("time(7)", "23:59:59.1234560", "time", 7),
    ("datetime", "2024-02-29T12:00:00.997", "datetime", 3),
    ("smalldatetime", "2024-01-02T03:04:00", "smalldatetime", 0),
    ("datetime2(2)", "2024-01-02T03:04:05.12", "datetime2", 2),
    ("datetime2(7)", "2024-01-02T03:04:05.1234560", "datetime2", 7),
    ("datetimeoffset(0)", "2024-01-02T03:04:05+02:00", "datetimeoffset", 0),
    ("datetimeoffset(7)", "2024-01-02T03:04:05.1234560-05:30", "datetimeoffset", 7),
    ("uniqueidentifier", "6f9619ff-8b86-d011-b42d-00c04fc964ff", "uniqueidentifier", None),
]


async def test_every_type_round_trips(stack: Stack) -> None:
    token = stack.token()
    with trio.fail_after(60):
        for declared, value, col_type, scale in CASES:
            resp = await stack.query(
                "SELECT @v AS v, @n AS n",
                token=token,
                params={"v": {"type": declared, "value": value}, "n": {"type": declared}},
            )
            assert resp.status == 200, (declared, resp.lines)
            assert resp.rows == [[value, None]], declared
            col = resp.columns[0]
            assert col["type"] == col_type, declared
            assert col["scale"] == scale, declared
            assert "done" in resp.terminal


async def test_100ns_digits_reach_the_server(stack: Stack) -> None:
    """python-tds carries microseconds; 7-digit values go as text, converted server-side."""
    with trio.fail_after(20):
        for declared, value in [
            ("time(7)", "23:59:59.1234567"),
            ("datetime2(7)", "9999-12-31T23:59:59.9999999"),
            ("datetimeoffset(7)", "2024-01-02T03:04:05.1234567-05:30"),
        ]:
            # compared server-side, and read back whole (the connector decodes 100 ns itself)
            resp = await stack.query(
                f"SELECT CASE WHEN @v = CAST(@s AS {declared}) THEN 1 ELSE 0 END AS same, @v",
                params={"v": {"type": declared, "value": value}, "s": value},
            )
            assert resp.rows == [[1, value]], declared


async def test_bare_json_params_and_injection_strings_are_data(stack: Stack) -> None:
    with trio.fail_after(20):
        resp = await stack.query(
            "SELECT @s AS s, @i AS i, @f AS f, @b AS b, @z AS z",
            params={"s": "'; DELETE FROM notes; --", "i": 42, "f": 2.5, "b": True, "z": None},
        )
        assert resp.rows == [["'; DELETE FROM notes; --", "42", 2.5, True, None]]
        assert [c["type"] for c in resp.columns][:4] == ["nvarchar", "bigint", "float", "bit"]
        still = await stack.query("SELECT COUNT(*) AS c FROM notes")
        assert still.rows == [[2]]


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"v": {"type": "decimal(18,2)", "value": 1.5}}, "not a float"),
        ({"v": {"type": "geography", "value": "POINT(0 0)"}}, "type 'geography'"),
        ({"v": {"type": "int", "value": 2**40}}, "out of range"),
    ],
)
async def test_bad_params_are_refused_before_the_database(
    stack: Stack, params: dict, fragment: str
) -> None:
    with trio.fail_after(20):
        before = len(stack.statements())
        resp = await stack.query("SELECT @v AS v", params=params)
    assert resp.status == 400
    assert resp.terminal["error"]["code"] == "request.invalid"
    assert fragment in resp.terminal["error"]["message"]
    assert len(stack.statements()) == before


async def test_values_outside_their_type_are_refused_by_name(stack: Stack) -> None:
    """A value the declared type cannot hold is a bad request naming the parameter and the type,
    never a failure inside the connector; the value is not echoed, and nothing of the query
    reaches the database."""
    with trio.fail_after(30):
        for declared, value, says in [
            ("money", "922337203685477.5808", "out of range for money"),
            ("smallmoney", "-214748.3649", "out of range for smallmoney"),
            ("decimal(5,2)", "1000.5", "decimal(5,2) holds at most 3 digits"),
            ("decimal", "1E+999999", "decimal(18,0) holds at most 18 digits"),
            # SQL Server refuses a value longer than its declared length (error 8016)
            ("nvarchar(3)", "abcd", "the value is longer than nvarchar(3) holds"),
            ("nvarchar(2)", "😀a", "the value is longer than nvarchar(2) holds"),
            ("nchar(2)", "abc", "the value is longer than nchar(2) holds"),
            ("varchar(3)", "abcd", "the value is longer than varchar(3) holds"),
            ("varbinary(2)", "AAEC", "the value is longer than varbinary(2) holds"),
            ("binary(2)", "AAEC", "the value is longer than binary(2) holds"),
            # python-tds cannot write it in the database's code page
            ("varchar(10)", "✓ ok", "varchar(10) holds only the characters of the database's"),
        ]:
            before = len(stack.statements())
            resp = await stack.query(
                "SELECT @v AS v", params={"v": {"type": declared, "value": value}}
            )
            assert len(stack.statements()) == before, declared  # nothing reached the database
            assert resp.status == 400, (declared, resp.lines)
            error = resp.terminal["error"]
            assert error["code"] == "request.invalid", declared
            assert "'v'" in error["message"], error
            assert says in error["message"], error
            assert value not in error["message"]
