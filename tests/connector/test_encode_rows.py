"""connector/encode.py RowEncoder: whole batches of rows through msgspec give exactly the bytes
of the per-row json.dumps encoding (the reference below), for every SQL type and edge value."""

from __future__ import annotations

import datetime as dt
import json
import math
import struct
import uuid
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pytds import tds_base, tds_types
from pytds.tz import FixedOffsetTimezone

from connector.encode import ColumnInfo, RowEncoder, _encoder, describe

_FACTORY = tds_types.SerializerFactory(tds_base.TDS74)


def _column(declaration: str) -> ColumnInfo:
    """The column python-tds describes for ``declaration`` (as its COLMETADATA builds it)."""
    ser = _FACTORY.serializer_by_type(tds_types.sql_type_by_declaration(declaration))
    entry = ("c", ser.get_typeid(), None, ser.size, ser.precision, ser.scale, 1)
    return describe([entry])[0]


_VARIANT = ColumnInfo("v", "sql_variant", True)


def reference_lines(columns: Sequence[ColumnInfo], rows: Sequence[Sequence[Any]]) -> bytes:
    """The NDJSON lines as the row encoder wrote them one row at a time with json.dumps."""
    dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    encoders = [_encoder(c) for c in columns]
    return b"".join(
        (dumps([None if v is None else encoders[i](v) for i, v in enumerate(row)]) + "\n").encode(
            "utf-8"
        )
        for row in rows
    )


def assert_same(columns: Sequence[ColumnInfo], rows: Sequence[Sequence[Any]]) -> bytes:
    encoder = RowEncoder(columns)
    expected = reference_lines(columns, rows)
    assert encoder.encode_rows(rows) == expected
    assert b"".join(encoder.encode(row) for row in rows) == expected
    return expected


#: every control character, the JSON escapes, non-ASCII of each UTF-8 length, non-BMP
_TRICKY_TEXT = [
    "",
    "".join(map(chr, range(0x20))) + "\x7f",
    'quote " backslash \\ slash / tab \t',
    "héllo ☃ \u2028\u2029 \ufeff \uffff",
    "\U0001f600 \U0010ffff 𝄞",
    "x" * 5000,
]
_FLOATS = [
    0.0,
    -0.0,
    0.1 + 0.2,
    1e16,
    1e-7,
    1e-5,
    123456789012345678.0,
    5e-324,
    1.7976931348623157e308,
    -2.5e-300,
    100.0,
    math.nan,
    math.inf,
    -math.inf,
]


def _f32(v: float) -> float:
    """``v`` as a REAL column carries it (python-tds widens the float32 to a float)."""
    return float(struct.unpack("<f", struct.pack("<f", v))[0])


# (declaration, values python-tds produces for it)
TYPED_VALUES: list[tuple[str, list[Any]]] = [
    ("bit", [True, False]),
    ("tinyint", [0, 255]),
    ("smallint", [-32768, 32767]),
    ("int", [-(2**31), 2**31 - 1, 0]),
    ("bigint", [-(2**63), 2**63 - 1, 0, 7]),
    ("decimal(18,4)", [Decimal("12.34"), Decimal("-0.0001"), Decimal("0")]),
    ("decimal(38,6)", [Decimal("-12345678901234567890123456789012.345678")]),
    ("numeric(5,0)", [Decimal("99999")]),
    ("money", [Decimal("922337203685477.5807"), Decimal("-922337203685477.5808")]),
    ("smallmoney", [Decimal("-1.5")]),
    ("float", _FLOATS),
    ("real", [_f32(v) for v in (1.1, 3.4028234663852886e38, 1e-45, *_FLOATS) if abs(v) < 1e39]),
    ("nvarchar(20)", _TRICKY_TEXT),
    ("nvarchar(max)", _TRICKY_TEXT),
    ("varchar(10)", ["abc", "é"]),
    ("varbinary(16)", [b"", b"\x00\xffab", bytes(range(256))]),
    ("date", [dt.date(1, 1, 1), dt.date(9999, 12, 31)]),
    ("time(7)", [dt.time(23, 59, 59, 123456), dt.time(0, 0)]),
    ("time(0)", [dt.time(1, 2, 3)]),
    ("time(3)", [dt.time(1, 2, 3, 450000)]),
    ("datetime", [dt.datetime(2024, 2, 29, 12, 0, 0, 997000)]),
    ("smalldatetime", [dt.datetime(2024, 1, 2, 3, 4)]),
    ("datetime2(7)", [dt.datetime(9999, 12, 31, 23, 59, 59, 999999), dt.datetime(1, 1, 1)]),
    ("datetime2(2)", [dt.datetime(2024, 1, 2, 3, 4, 5, 120000)]),
    (
        "datetimeoffset(7)",
        [
            dt.datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=FixedOffsetTimezone(-330)),
            dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=FixedOffsetTimezone(840)),
        ],
    ),
    ("datetimeoffset(0)", [dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=FixedOffsetTimezone(0))]),
    ("uniqueidentifier", [uuid.UUID("6F9619FF-8B86-D011-B42D-00C04FC964FF"), uuid.UUID(int=0)]),
]


@pytest.mark.parametrize(("decl", "values"), TYPED_VALUES, ids=[d for d, _ in TYPED_VALUES])
def test_each_type_encodes_as_the_per_row_json_encoding(decl: str, values: list[Any]) -> None:
    columns = [_column(decl), _column(decl)]
    rows = [(v, None) for v in values] + [(None, v) for v in values] + [(None, None)]
    lines = assert_same(columns, rows)
    assert lines.count(b"\n") == len(rows)


def test_nan_and_infinity_stay_as_json_dumps_writes_them() -> None:
    # not JSON numbers, but what the encoding has always written: nothing about a value changes
    for decl in ("float", "real"):
        line = RowEncoder([_column(decl)] * 3).encode((math.nan, math.inf, -math.inf))
        assert line == b"[NaN,Infinity,-Infinity]\n"


def test_floats_keep_pythons_repr_not_msgspecs() -> None:
    # msgspec alone would write 1e16 and 0.00001
    line = RowEncoder([_column("float")] * 3).encode((1e16, 1e-5, 1e-7))
    assert line == b"[1e+16,1e-05,1e-07]\n"


def test_every_code_point_is_escaped_as_json_dumps_escapes_it() -> None:
    text = "".join(chr(c) for c in range(0x110000) if not 0xD800 <= c < 0xE000)
    assert_same([_column("nvarchar(max)")], [(text,)])


def test_a_lone_surrogate_fails_as_before() -> None:
    # UTF-16 text python-tds decoded strictly never has one; if a value did, both encoders refuse
    columns = [_column("nvarchar(max)")]
    with pytest.raises(UnicodeEncodeError):
        reference_lines(columns, [("\ud800",)])
    with pytest.raises(UnicodeEncodeError):
        RowEncoder(columns).encode_rows([("\ud800",)])


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        0,
        2**53 - 1,
        2**53,
        -(2**63),
        1.5,
        1e16,
        math.nan,
        math.inf,
        'x\n"y"',
        Decimal("1.2300"),
        b"\x00\x01",
        uuid.UUID(int=1),
        dt.datetime(2024, 1, 2, 3, 4, 5),
        dt.datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=FixedOffsetTimezone(60)),
        dt.date(2024, 1, 2),
        dt.time(1, 2, 3, 4),
    ],
)
def test_sql_variant_values_encode_as_before(value: Any) -> None:
    assert_same([_VARIANT], [(value,)])


def test_values_of_an_unexpected_python_type_are_converted_as_before() -> None:
    class Int(int):
        pass

    class Text(str):
        pass

    # a column whose values are not all of the type it passes on unchanged is converted per value
    columns = [_column("int"), _column("nvarchar(10)"), _column("bit"), _VARIANT, _VARIANT]
    rows = [
        (Int(5), Text("a"), 1, Int(2**60), Text("b")),
        (6, b"caf\xc3\xa9 \xff", True, 1.5, None),
    ]
    assert_same(columns, rows)


def test_a_batch_is_one_line_per_row_in_order() -> None:
    columns = [_column("int"), _column("nvarchar(20)"), _column("bigint")]
    rows = [(i, f"row {i}", i * 10) for i in range(1000)]
    lines = assert_same(columns, rows).split(b"\n")
    assert lines[-1] == b""
    assert [json.loads(line) for line in lines[:-1]] == [
        [i, f"row {i}", str(i * 10)] for i in range(1000)
    ]


def test_no_rows_and_no_columns() -> None:
    assert RowEncoder([_column("int")]).encode_rows([]) == b""
    assert RowEncoder([]).encode_rows([(), ()]) == b"[]\n[]\n"


_TEXT = st.text(st.characters(exclude_categories=["Cs"]))
_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "bit": st.booleans(),
    "int": st.integers(-(2**31), 2**31 - 1),
    "bigint": st.integers(-(2**63), 2**63 - 1),
    "decimal(38,10)": st.decimals(allow_nan=False, allow_infinity=False, places=10),
    "float": st.floats(),
    "real": st.floats(width=32),
    "nvarchar(max)": _TEXT,
    "varbinary(max)": st.binary(),
    "date": st.dates(),
    "time(7)": st.times(),
    "datetime2(7)": st.datetimes(),
    "datetimeoffset(7)": st.datetimes(
        timezones=st.integers(-14 * 60, 14 * 60).map(FixedOffsetTimezone)
    ),
    "uniqueidentifier": st.uuids(),
}
_DECLS = list(_VALUES)


@st.composite
def _result(draw: st.DrawFn) -> tuple[list[ColumnInfo], list[tuple[Any, ...]]]:
    decls = draw(st.lists(st.sampled_from(_DECLS), min_size=1, max_size=5))
    row = st.tuples(*(st.none() | _VALUES[d] for d in decls))
    return [_column(d) for d in decls], draw(st.lists(row, max_size=20))


@settings(max_examples=300, deadline=None)
@given(_result())
def test_random_results_encode_as_the_per_row_json_encoding(
    result: tuple[list[ColumnInfo], list[tuple[Any, ...]]],
) -> None:
    assert_same(*result)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.none() | st.booleans() | st.integers() | st.floats() | _TEXT | st.binary()))
def test_random_variant_values_encode_as_the_per_row_json_encoding(values: list[Any]) -> None:
    assert_same([_VARIANT], [(v,) for v in values])
