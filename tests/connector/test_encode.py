"""connector/encode.py: python-tds column metadata and values -> the FIXED JSON encoding, and
JSON params -> typed python-tds parameters."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from decimal import Decimal

import pytest
from pytds import tds_base, tds_types
from pytds.collate import Collation, raw_collation
from pytds.tz import FixedOffsetTimezone

from connector._tdstypes import money_units
from connector.encode import (
    ParamError,
    RowEncoder,
    columns_line,
    decode_params,
    describe,
    result_shape,
)
from connector.execute import check_values_fit

_FACTORY = tds_types.SerializerFactory(tds_base.TDS74)


def _description(name: str, declaration: str, nullable: bool = True) -> tuple:
    """A cursor.description entry built exactly as python-tds builds it from COLMETADATA."""
    ser = _FACTORY.serializer_by_type(tds_types.sql_type_by_declaration(declaration))
    flags = tds_base.Column.fNullable if nullable else 0
    return (name, ser.get_typeid(), None, ser.size, ser.precision, ser.scale, flags)


# (declaration, python-tds value, expected JSON value, expected column type name)
CASES = [
    ("bit", True, True, "bit"),
    ("tinyint", 255, 255, "tinyint"),
    ("smallint", -32768, -32768, "smallint"),
    ("int", 2147483647, 2147483647, "int"),
    ("bigint", 9223372036854775807, "9223372036854775807", "bigint"),
    ("bigint", -5, "-5", "bigint"),
    ("decimal(18,4)", Decimal("12.34"), "12.3400", "decimal"),
    (
        "decimal(38,6)",
        Decimal("-12345678901234567890123456789012.345678"),
        "-12345678901234567890123456789012.345678",
        "decimal",
    ),
    ("numeric(5,0)", Decimal("99999"), "99999", "decimal"),
    ("money", Decimal("922337203685477.5807"), "922337203685477.5807", "money"),
    ("smallmoney", Decimal("-1.5"), "-1.5000", "smallmoney"),
    ("real", 1.100000023841858, 1.1, "real"),
    ("float", 0.1 + 0.2, 0.30000000000000004, "float"),
    ("nvarchar(20)", "héllo ☃", "héllo ☃", "nvarchar"),
    ("nvarchar(max)", "x" * 10, "x" * 10, "nvarchar"),
    ("varchar(10)", "abc", "abc", "varchar"),
    ("varbinary(16)", b"\x00\xffab", "AP9hYg==", "varbinary"),
    ("varbinary(max)", b"", "", "varbinary"),
    ("date", dt.date(1, 1, 1), "0001-01-01", "date"),
    ("time(7)", dt.time(23, 59, 59, 123456), "23:59:59.1234560", "time"),
    ("time(0)", dt.time(1, 2, 3), "01:02:03", "time"),
    ("time(3)", dt.time(1, 2, 3, 450000), "01:02:03.450", "time"),
    ("datetime", dt.datetime(2024, 2, 29, 12, 0, 0, 997000), "2024-02-29T12:00:00.997", "datetime"),
    ("smalldatetime", dt.datetime(2024, 1, 2, 3, 4), "2024-01-02T03:04:00", "smalldatetime"),
    (
        "datetime2(7)",
        dt.datetime(9999, 12, 31, 23, 59, 59, 999999),
        "9999-12-31T23:59:59.9999990",
        "datetime2",
    ),
    (
        "datetime2(2)",
        dt.datetime(2024, 1, 2, 3, 4, 5, 120000),
        "2024-01-02T03:04:05.12",
        "datetime2",
    ),
    (
        "datetimeoffset(7)",
        dt.datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=FixedOffsetTimezone(-330)),
        "2024-01-02T03:04:05.0000060-05:30",
        "datetimeoffset",
    ),
    (
        "datetimeoffset(0)",
        dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=FixedOffsetTimezone(120)),
        "2024-01-02T03:04:05+02:00",
        "datetimeoffset",
    ),
    (
        "uniqueidentifier",
        uuid.UUID("6F9619FF-8B86-D011-B42D-00C04FC964FF"),
        "6f9619ff-8b86-d011-b42d-00c04fc964ff",
        "uniqueidentifier",
    ),
]


@pytest.mark.parametrize(("decl", "value", "expected", "type_name"), CASES)
def test_value_encoding(decl: str, value: object, expected: object, type_name: str) -> None:
    cols = describe([_description("c", decl), _description("n", decl)])
    assert cols[0].type == type_name
    line = RowEncoder(cols).encode((value, None))
    assert line.endswith(b"\n")
    assert line.count(b"\n") == 1
    assert json.loads(line) == [expected, None]


def test_column_metadata() -> None:
    cols = describe(
        [
            _description("amount", "decimal(18,4)", nullable=False),
            _description("name", "nvarchar(50)"),
            _description("doc", "nvarchar(max)"),
            _description("blob", "varbinary(max)"),
            _description("code", "varchar(8)"),
            _description("at", "datetime2(3)"),
            _description("m", "money"),
        ]
    )
    meta = json.loads(columns_line(cols))["columns"]
    assert meta[0] == {
        "name": "amount",
        "type": "decimal",
        "nullable": False,
        "precision": 18,
        "scale": 4,
        "length": None,
    }
    assert (meta[1]["type"], meta[1]["length"]) == ("nvarchar", 50)
    assert isinstance(meta[1]["length"], int)
    assert (meta[2]["type"], meta[2]["length"]) == ("nvarchar", -1)
    assert (meta[3]["type"], meta[3]["length"]) == ("varbinary", -1)
    assert (meta[4]["type"], meta[4]["length"]) == ("varchar", 8)
    assert (meta[5]["type"], meta[5]["scale"], meta[5]["precision"]) == ("datetime2", 3, None)
    assert (meta[6]["type"], meta[6]["scale"]) == ("money", 4)


def test_bigint_is_always_a_string_even_when_small() -> None:
    cols = describe([_description("b", "bigint")])
    assert json.loads(RowEncoder(cols).encode((1,))) == ["1"]


# ----------------------------------------------------------------------- params


def test_bare_params() -> None:
    bound = decode_params({"s": "x", "i": 7, "f": 1.5, "b": False, "n": None})
    assert [(p.name, p.sql_type, p.value) for p in bound] == [
        ("@s", "nvarchar(max)", "x"),
        ("@i", "bigint", 7),
        ("@f", "float", 1.5),
        ("@b", "bit", False),
        ("@n", "nvarchar(4000)", None),
    ]
    # a NULL is bound as a typed parameter, never inlined (python-tds inlines a bare None)
    assert isinstance(bound[4].to_pytds(), tds_base.Param)
    assert bound[4].to_pytds().value is None


def test_typed_params_convert_to_python_values() -> None:
    bound = {
        p.name: p
        for p in decode_params(
            {
                "d": {"type": "decimal(18,4)", "value": "12.3400"},
                "m": {"type": "MONEY", "value": "-3.5"},
                "bin": {"type": "varbinary(max)", "value": "AP9hYg=="},
                "dt2": {"type": "datetime2(7)", "value": "2024-01-02T03:04:05.1234560"},
                "dto": {"type": "datetimeoffset", "value": "2024-01-02T03:04:05+02:00"},
                "t": {"type": "time(7)", "value": "01:02:03.5"},
                "day": {"type": "date", "value": "2024-02-29"},
                "g": {"type": "uniqueidentifier", "value": "6F9619FF-8B86-D011-B42D-00C04FC964FF"},
                "big": {"type": "bigint", "value": "9223372036854775807"},
                "nv": {"type": "nvarchar(10)", "value": "hi"},
                "tn": {"type": "int", "value": None},
            }
        )
    }
    assert bound["@d"].value == Decimal("12.3400")
    assert bound["@d"].sql_type == "decimal(18,4)"
    assert bound["@m"].value == Decimal("-3.5")
    assert isinstance(bound["@bin"].value, tds_types.Binary)  # not NVARCHAR (python-tds trap)
    assert bytes(bound["@bin"].value) == b"\x00\xffab"
    assert bound["@dt2"].value == dt.datetime(2024, 1, 2, 3, 4, 5, 123456)
    assert bound["@dto"].value.utcoffset() == dt.timedelta(hours=2)
    assert bound["@t"].value == dt.time(1, 2, 3, 500000)
    assert bound["@day"].value == dt.date(2024, 2, 29)
    assert bound["@g"].value == uuid.UUID("6f9619ff-8b86-d011-b42d-00c04fc964ff")
    assert bound["@big"].value == 2**63 - 1
    assert bound["@tn"].value is None
    assert bound["@tn"].sql_type == "int"
    decl = {p.name: p.to_pytds().type.get_declaration() for p in bound.values()}
    assert decl["@d"] == "DECIMAL(18, 4)"
    assert decl["@bin"] == "VARBINARY(MAX)"
    assert decl["@dt2"] == "DATETIME2(7)"


def test_100ns_digits_travel_as_text_with_the_declared_type() -> None:
    (p,) = decode_params({"t": {"type": "datetime2(7)", "value": "2026-01-02T03:04:05.1234567"}})
    assert p.sql_type == "datetime2(7)"  # what sp_executesql declares
    wire = p.to_pytds()
    assert wire.value == "2026-01-02T03:04:05.1234567"  # all 7 digits reach SQL Server
    assert wire.type.get_declaration() == "NVARCHAR(64)"
    (q,) = decode_params(
        {"t": {"type": "datetimeoffset(7)", "value": "2026-01-02T03:04:05.1234567+02:00"}}
    )
    assert q.to_pytds().value.endswith("+02:00")
    with pytest.raises(ParamError, match="needs an offset"):
        decode_params({"t": {"type": "datetimeoffset", "value": "2026-01-02T03:04:05.1234567"}})
    # a zero 7th digit binds natively
    (r,) = decode_params({"t": {"type": "time(7)", "value": "01:02:03.1234560"}})
    assert r.value == dt.time(1, 2, 3, 123456)


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"x": {"type": "decimal(18,4)", "value": 1.5}}, "not a float"),
        ({"x": {"type": "int", "value": 2**31}}, "out of range"),
        ({"x": {"type": "varbinary(10)", "value": "not base64!"}}, "not a valid varbinary"),
        ({"x": {"type": "datetime2", "value": "2024-13-02T03:04:05.1234567"}}, "not a valid"),
        ({"x": {"type": "datetime2", "value": "2024-01-02T03:04:05+01:00"}}, "without offset"),
        ({"x": {"type": "datetimeoffset", "value": "2024-01-02T03:04:05"}}, "needs an offset"),
        ({"x": {"type": "geography", "value": "x"}}, "unsupported type"),
        ({"x": {"type": "int; drop table t", "value": 1}}, "is not a SQL Server type"),
        ({"x": {"type": "decimal(40,2)", "value": "1"}}, "out of range"),
        ({"x": {"type": "money", "value": "922337203685477.5808"}}, "out of range for money"),
        ({"x": {"type": "money", "value": "-922337203685477.5809"}}, "out of range for money"),
        ({"x": {"type": "money", "value": "-1E+100000"}}, "out of range for money"),
        ({"x": {"type": "money", "value": "1E+999999"}}, "out of range for money"),
        ({"x": {"type": "smallmoney", "value": "214748.3648"}}, "out of range for smallmoney"),
        ({"x": {"type": "smallmoney", "value": "-214748.3649"}}, "out of range for smallmoney"),
        ({"x": {"type": "decimal(5,2)", "value": "1000"}}, "at most 3 digits before"),
        ({"x": {"type": "numeric(5,2)", "value": "-1000.5"}}, "at most 3 digits before"),
        ({"x": {"type": "decimal(38,0)", "value": "1" + "0" * 38}}, "at most 38 digits"),
        ({"x": {"type": "decimal", "value": "1E+999999"}}, "at most 18 digits"),
        ({"x": {"type": "decimal(4,4)", "value": "1"}}, "at most 0 digits"),
        ({"x": {"type": "nvarchar(5000)", "value": "a"}}, "length"),
        ({"x y": 1}, "names are"),
        ({"x": [1, 2]}, "arrays"),
        ({"x": 2**70}, "out of range"),
        ({"x": 1, "@X": 2}, "given twice"),
        ({"x": {"type": "int"}, "y": {"value": 1}}, "typed parameter"),
    ],
)
def test_bad_params_are_refused_without_echoing_values(params: dict, fragment: str) -> None:
    with pytest.raises(ParamError) as info:
        decode_params(params)
    assert fragment in str(info.value)
    assert "not base64!" not in str(info.value)


def test_result_shape_is_remembered_per_exact_description() -> None:
    description = [_description("n", "int"), _description("t", "nvarchar(20)")]
    encoder, line = result_shape(description)
    assert line == columns_line(describe(description))
    assert encoder.encode((7, "x")) == RowEncoder(describe(description)).encode((7, "x"))
    again = result_shape([tuple(column) for column in description])
    assert again[0] is encoder  # remembered: the same encoder, nothing rebuilt
    # any difference in the description is another shape: name, type, scale, nullability
    others = [
        [_description("m", "int"), _description("t", "nvarchar(20)")],
        [_description("n", "bigint"), _description("t", "nvarchar(20)")],
        [_description("n", "int"), _description("t", "nvarchar(20)", nullable=False)],
        [_description("n", "int")],
    ]
    for other in others:
        shape = result_shape(other)
        assert shape[1] == columns_line(describe(other)) != line
        assert shape[0] is not encoder
    prices = [_description("p", "decimal(10,2)")], [_description("p", "decimal(10,4)")]
    two, four = (result_shape(d)[0].encode((Decimal("1.5"),)) for d in prices)
    assert (two, four) == (b'["1.50"]\n', b'["1.5000"]\n')


@pytest.mark.parametrize(
    ("declared", "value", "units"),
    [
        ("money", "922337203685477.5807", 2**63 - 1),
        ("money", "922337203685477.58079", 2**63 - 1),  # truncated toward zero, as python-tds
        ("money", "-922337203685477.5808", -(2**63)),
        ("money", "-922337203685477.58089", -(2**63)),
        ("money", "-1", -10_000),
        ("money", "-0.0001", -1),
        ("money", "-0.00009", 0),
        ("money", "-4294967296.0001", -(2**32) * 10_000 - 1),
        ("smallmoney", "214748.3647", 2**31 - 1),
        ("smallmoney", "-214748.3648", -(2**31)),
    ],
)
def test_money_at_its_limits_is_accepted(declared: str, value: str, units: int) -> None:
    """The edges of money's range bind; what the connector then writes is tests/connector/
    test_request_bytes.py's (python-tds reads it back)."""
    (param,) = decode_params({"x": {"type": declared, "value": value}})
    assert param.sql_type == declared
    assert money_units(param.value) == units


@pytest.mark.parametrize(
    ("declared", "value"),
    [
        ("decimal(5,2)", "999.99"),
        ("decimal(5,2)", "-999.999"),  # the digits past the scale are cut when written
        ("decimal(38,0)", "9" * 38),
        ("decimal(4,4)", "-0.9999"),
        ("decimal(18,4)", "0"),
    ],
)
def test_decimals_that_fit_their_precision_are_accepted(declared: str, value: str) -> None:
    (param,) = decode_params({"x": {"type": declared, "value": value}})
    assert param.value == Decimal(value)


#: Japanese_CI_AS: code page 932, where a kana or kanji takes two bytes and a Latin letter one
_CP932 = Collation(0x411, 0, True, False, True, True, False, False, 0)


@pytest.mark.parametrize(
    ("declared", "value", "collation", "fits"),
    [
        ("nvarchar(3)", "abc", raw_collation, True),
        ("nvarchar(3)", "abcd", raw_collation, False),
        ("nvarchar(2)", "\U0001f600", raw_collation, True),  # two UTF-16 code units
        ("nvarchar(2)", "\U0001f600a", raw_collation, False),
        ("nchar(1)", "ab", raw_collation, False),
        # at most 4 bytes per character: up to a quarter of the limit fits uncounted; beyond, the
        # code units are counted
        ("nvarchar(4)", "\U0001f600\U0001f600", raw_collation, True),
        ("nvarchar(3)", "\U0001f600\U0001f600", raw_collation, False),
        ("nvarchar(4)", "\U0001f600\U0001f600a", raw_collation, False),
        ("nvarchar(4000)", "\U0001f600" * 2000, raw_collation, True),
        ("nvarchar(4000)", "\U0001f600" * 2000 + "a", raw_collation, False),
        ("nvarchar(4000)", "a" * 4000, raw_collation, True),
        ("nvarchar(4000)", "a" * 4001, raw_collation, False),
        ("varchar(3)", "\u20ac\u20ac\u20ac", raw_collation, True),  # cp1252: one byte each
        ("varchar(2)", "\u3042", _CP932, True),  # two bytes in cp932
        ("varchar(1)", "\u3042", _CP932, False),
        ("char(3)", "a\u3042", _CP932, True),
        ("varchar(max)", "\u3042" * 5000, _CP932, True),
        ("varbinary(2)", "AAE=", raw_collation, True),
        ("varbinary(2)", "AAEC", raw_collation, False),
        ("binary(2)", "AAEC", raw_collation, False),
        ("nvarchar(max)", "x" * 10_000, raw_collation, True),
        ("int", 5, raw_collation, True),
    ],
)
def test_values_are_measured_in_their_wire_unit(
    declared: str, value: object, collation: Collation, fits: bool
) -> None:
    params = decode_params({"x": {"type": declared, "value": value}})
    if fits:
        check_values_fit(params, collation)
        return
    with pytest.raises(ParamError) as refused:
        check_values_fit(params, collation)
    assert str(refused.value) == f"parameter 'x': the value is longer than {declared} holds" + (
        " (a character beyond U+FFFF takes two)" if declared.startswith("n") else ""
    )


@pytest.mark.parametrize("declared", ["varchar(10)", "char(5)", "varchar(max)"])
def test_a_character_outside_the_code_page_is_refused_by_name(declared: str) -> None:
    params = decode_params({"x": {"type": declared, "value": "ok \u2713"}})
    check_values_fit(decode_params({"x": {"type": declared, "value": "caf\u00e9"}}), raw_collation)
    with pytest.raises(ParamError) as refused:
        check_values_fit(params, raw_collation)
    message = str(refused.value)
    assert message.startswith(f"parameter 'x': {declared} holds only the characters"), message
    assert "(cp1252); declare nvarchar" in message
    assert "\u2713" not in message
