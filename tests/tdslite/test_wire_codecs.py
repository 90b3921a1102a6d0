"""Value codecs: what tdslite encodes into ROW tokens decodes back to the same value (Hypothesis),
and a few byte layouts pinned against MS-TDS examples."""

from __future__ import annotations

import datetime
import decimal
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tdslite.engine._types import ticks_of
from tdslite.server import _datatypes as d

TZ = st.integers(-14 * 60, 14 * 60).map(lambda m: datetime.timezone(datetime.timedelta(minutes=m)))


@given(st.integers(1, 38).flatmap(lambda p: st.tuples(st.just(p), st.integers(0, p))), st.data())
def test_decimal_round_trip(ps: tuple[int, int], data: st.DataObject) -> None:
    precision, scale = ps
    units = data.draw(st.integers(-(10**precision) + 1, 10**precision - 1))
    value = decimal.Decimal(units).scaleb(-scale, decimal.Context(prec=80))
    raw = d.encode_decimal(value, precision, scale)
    assert len(raw) == d.decimal_size(precision)
    assert d.decode_decimal(raw, scale) == value


@given(st.integers(-(2**63), 2**63 - 1))
def test_money_round_trip(units: int) -> None:
    value = decimal.Decimal(units).scaleb(-4)
    assert d.decode_money(d.encode_money(value, 8)) == value


@given(st.integers(-(2**31), 2**31 - 1))
def test_smallmoney_round_trip(units: int) -> None:
    value = decimal.Decimal(units).scaleb(-4)
    assert d.decode_money(d.encode_money(value, 4)) == value


@given(st.datetimes(min_value=datetime.datetime(1, 1, 1)), st.integers(0, 7))
def test_datetime2_round_trip_at_scale(value: datetime.datetime, scale: int) -> None:
    got = d.decode_datetime2(d.encode_datetime2(value, scale), scale)
    step = datetime.timedelta(microseconds=10 ** max(0, 6 - scale))
    assert got.date() == value.date()
    assert abs(got - value) <= step  # half a step when rounding; under a step when clamped at 23:59
    if scale >= 6:
        assert got == value


@given(st.datetimes(min_value=datetime.datetime(2, 1, 1), timezones=TZ))
def test_datetimeoffset_round_trip(value: datetime.datetime) -> None:
    got = d.decode_datetimeoffset(d.encode_datetimeoffset(value, 7), 7)
    assert got == value
    assert got.utcoffset() == value.utcoffset()


@given(st.dates())
def test_date_round_trip(value: datetime.date) -> None:
    assert d.decode_date(d.encode_date(value)) == value


@given(
    st.datetimes(min_value=datetime.datetime(1900, 1, 1), max_value=datetime.datetime(9999, 12, 30))
)
def test_datetime_is_rounded_to_three_hundredths(value: datetime.datetime) -> None:
    got = d.decode_datetime(d.encode_datetime(value, 8))
    assert abs(got - value) <= datetime.timedelta(microseconds=2000)


def test_byte_layouts() -> None:
    # uniqueidentifier: the first three groups little-endian, as SQL Server stores it
    g = uuid.UUID("00112233-4455-6677-8899-aabbccddeeff")
    assert d.encode_guid(g).hex() == "33221100554477668899aabbccddeeff"
    # decimal: sign byte (1 = positive) then the scaled integer, little-endian
    assert d.encode_decimal(decimal.Decimal("-1.25"), 5, 2) == bytes([0, 125, 0, 0, 0])
    # date: days since 0001-01-01 in 3 bytes
    assert d.encode_date(datetime.date(1, 1, 2)) == b"\x01\x00\x00"
    # money: high 32 bits first, then low 32 bits, of value * 10000
    assert d.encode_money(decimal.Decimal("1"), 8) == (0).to_bytes(4, "little") + (10000).to_bytes(
        4, "little"
    )
    # datetime: days since 1900-01-01, then 1/300 s ticks
    one_sec = d.encode_datetime(datetime.datetime(1900, 1, 2, 0, 0, 1), 8)
    assert one_sec == (1).to_bytes(4, "little") + (300).to_bytes(4, "little")


def test_nbcrow_when_nulls_pay_and_row_otherwise() -> None:
    from tdslite.engine import Column, SqlType
    from tdslite.server._columns import RowEncoder

    enc = RowEncoder([Column(f"c{i}", SqlType("int")) for i in range(10)])
    sparse = enc.row([None] * 9 + [7])
    dense = enc.row(list(range(10)))
    # NBCROW: token, 2-byte null bitmap (bits 0-8 set), then only the one non-NULL INTN value
    assert sparse == bytes([0xD2, 0xFF, 0x01, 4]) + (7).to_bytes(4, "little")
    assert dense[0] == 0xD1
    assert len(dense) == 1 + 10 * 5


def test_plp_value_is_chunked_and_terminated() -> None:
    from tdslite.engine import SqlType
    from tdslite.server._columns import codec_for

    codec = codec_for(SqlType("nvarchar", length=-1))
    raw = codec.encode("x" * 5000)  # 10,000 bytes: two chunks of 8,000 and 2,000
    assert raw[:8] == (10000).to_bytes(8, "little")
    assert raw[8:12] == (8000).to_bytes(4, "little")
    assert raw[12 + 8000 : 16 + 8000] == (2000).to_bytes(4, "little")
    assert raw[-4:] == b"\x00\x00\x00\x00"
    assert codec.null == b"\xff" * 8


@pytest.mark.parametrize("scale", range(8))
def test_temporal_parameters_keep_the_100ns_digit_at_every_scale(scale: int) -> None:
    units = 13 * 36_000_000_000 + 14 * 600_000_000 + 15 * 10_000_000 + 1_234_567  # 13:14:15.1234567
    wire = units // 10 ** (7 - scale)  # what a client sends at `scale`
    data = wire.to_bytes(d.time_size(scale), "little")
    kept = wire * 10 ** (7 - scale) % 10_000_000  # the fraction in 100 ns units
    t = d.decode_time(data, scale)
    assert (t.microsecond, ticks_of(t)) == divmod(kept, 10)
    day = (738_944).to_bytes(3, "little")  # 2024-02-29
    v = d.decode_datetime2(data + day, scale)
    assert (v.date(), v.microsecond, ticks_of(v)) == (datetime.date(2024, 2, 29), *divmod(kept, 10))
    o = d.decode_datetimeoffset(data + day + (-210).to_bytes(2, "little", signed=True), scale)
    assert (o.hour, o.minute, o.microsecond, ticks_of(o)) == (9, 44, *divmod(kept, 10))
    assert o.utcoffset() == datetime.timedelta(minutes=-210)
    assert d.encode_datetimeoffset(o, scale) == data + day + (-210).to_bytes(
        2, "little", signed=True
    )
