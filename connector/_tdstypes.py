"""python-tds's type handling where it loses or refuses values: time, datetime2 and
datetimeoffset results at 100 ns, and negative money parameters.

SQL Server keeps these types to 100 ns (scale 7); python-tds (1.17.1) decodes the wire value
exactly (its ``Time`` holds nanoseconds) but then hands back a Python ``datetime``/``time``, which
stops at microseconds, so the 7th fractional digit is lost: ``13:14:15.1234567`` arrives as
``13:14:15.123456``.

`install(conn)` swaps the three serializers in the connection's python-tds type factory for
subclasses that return `PreciseTime` / `PreciseDateTime` when that digit is not 0: the stdlib
classes plus the lost digit in ``nanosecond_100`` (1-9 hundreds of nanoseconds past
``microsecond``). Everything that takes a
``datetime``/``time`` takes them; the JSON encoder (encode.py) prints the digit. Writing parameters
is unchanged (python-tds sends microseconds; encode.py binds a 7-digit value as text instead).

python-tds (1.17.1) cannot write a negative money parameter: it splits the scaled value with
``Decimal`` ``//`` and ``%``, which truncate toward zero, so the low half comes out negative and
``struct`` refuses it. `install` also swaps the money serializer for one that writes the two
halves of the 64-bit two's complement value, as MS-TDS lays out MONEY (high 32 bits first, each
half little-endian). Values are scaled by 10,000 and truncated toward zero, as python-tds does for
a positive value; encode.py has already refused a value outside money's range.

The type factory belongs to the connection's socket (python-tds builds a new one on every login),
so `install` runs before each statement and is idempotent.
"""

from __future__ import annotations

import datetime as dt
import struct
from decimal import Decimal
from typing import Any, Self

from pytds import tds_base, tds_types

__all__ = ["PreciseDateTime", "PreciseTime", "install", "money_units", "nanosecond_100"]


class _HundredNanoseconds:
    """Mixin: the 100 ns digit (0-9) past ``microsecond``."""

    nanosecond_100: int

    def __new__(cls, *args: Any, nanosecond_100: int = 0, **kwargs: Any) -> Self:
        self = super().__new__(cls, *args, **kwargs)
        if not 0 <= nanosecond_100 <= 9:
            raise ValueError("nanosecond_100 must be 0..9")
        self.nanosecond_100 = nanosecond_100
        return self


# NB: ``replace()`` and arithmetic return values without the digit (they build a new object).


class PreciseTime(_HundredNanoseconds, dt.time):
    """A ``datetime.time`` with the 100 ns digit in ``nanosecond_100``."""


class PreciseDateTime(_HundredNanoseconds, dt.datetime):
    """A ``datetime.datetime`` with the 100 ns digit in ``nanosecond_100``."""


def nanosecond_100(value: object) -> int:
    """The 100 ns digit of a time/datetime (0 for the plain stdlib classes)."""
    return int(getattr(value, "nanosecond_100", 0))


def _digit(time: tds_types.Time) -> int:
    return int(time.nsec // 100 % 10)


def _with_digit(value: Any, digit: int) -> Any:
    """`value` with the 100 ns digit; the plain stdlib value when that digit is 0."""
    if not digit:
        return value
    clock = (value.hour, value.minute, value.second, value.microsecond, value.tzinfo)
    if isinstance(value, dt.datetime):
        date = (value.year, value.month, value.day)
        return PreciseDateTime(*date, *clock, nanosecond_100=digit)
    return PreciseTime(*clock, nanosecond_100=digit)


def _session_tz(r: Any, value: Any) -> Any:
    """python-tds attaches the session's ``tzinfo_factory`` zone to time and datetime2 values."""
    factory = r.session.tzinfo_factory
    return value if factory is None else value.replace(tzinfo=factory(0))


class _TimeSerializer(tds_types.MsTimeSerializer):  # type: ignore[misc]
    def read_fixed(self, r: Any, size: int) -> Any:
        time = self._read_time(r, size, self._typ.precision)
        return _with_digit(_session_tz(r, time.to_pytime()), _digit(time))


class _DateTime2Serializer(tds_types.DateTime2Serializer):  # type: ignore[misc]
    def read_fixed(self, r: Any, size: int) -> Any:
        time = self._read_time(r, size - 3, self._typ.precision)
        value = tds_types.DateTime2(date=self._read_date(r), time=time).to_pydatetime()
        return _with_digit(_session_tz(r, value), _digit(time))


class _DateTimeOffsetSerializer(tds_types.DateTimeOffsetSerializer):  # type: ignore[misc]
    def read_fixed(self, r: Any, size: int) -> Any:
        time = self._read_time(r, size - 5, self._typ.precision)
        date = self._read_date(r)
        offset = r.get_smallint()
        value = tds_types.DateTimeOffset(date=date, time=time, offset=offset).to_pydatetime()
        return _with_digit(value, _digit(time))


def money_units(value: Decimal | int) -> int:
    """A money value in the wire's units (1/10,000), truncated toward zero."""
    return int(Decimal(value).scaleb(4))


class _Money8Serializer(tds_types.Money8Serializer):  # type: ignore[misc]
    _halves = struct.Struct("<lL")

    def write(self, w: Any, val: Any) -> None:
        units = money_units(val)
        w.pack(self._halves, units >> 32, units & 0xFFFFFFFF)


class _MoneyNSerializer(tds_types.MoneyNSerializer):  # type: ignore[misc]
    subtypes = {**tds_types.MoneyNSerializer.subtypes, 8: _Money8Serializer()}


_OVERRIDES: dict[int, type] = {
    tds_base.SYBMSTIME: _TimeSerializer,
    tds_base.SYBMSDATETIME2: _DateTime2Serializer,
    tds_base.SYBMSDATETIMEOFFSET: _DateTimeOffsetSerializer,
    tds_base.SYBMONEYN: _MoneyNSerializer,
}


def install(conn: Any) -> None:
    """Make `conn` (a ``pytds.Connection``) decode time/datetime2/datetimeoffset at 100 ns and
    write negative money parameters."""
    # (attribute reads, as getattr with a default of None reads them, without its calls: this
    # runs once per query)
    try:
        factory: Any = conn._tds_socket.type_factory
        type_map = factory._type_map
    except AttributeError:
        return
    if type_map is None or type_map.get(tds_base.SYBMSTIME) is _TimeSerializer:
        return
    factory._type_map = {**type_map, **_OVERRIDES}  # a copy: the module's map stays as it was
