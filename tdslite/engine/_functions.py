"""Python functions registered on every SQLite connection: what SQLite lacks of T-SQL.

They receive and return SQLite storage values (see _values.py).  Each takes the SQL Server type
names it needs as constant string arguments, written by the translator, e.g.
``tds_cast(x, 'decimal(18,4)', 'int')``.  A SqlError raised here cannot cross SQLite, so it is
parked on the connection's `FunctionErrors` and re-raised by the session.
"""

from __future__ import annotations

import calendar
import datetime as dt
import math
import operator
import sqlite3
import uuid
from collections.abc import Callable
from decimal import ROUND_DOWN, Decimal, localcontext
from functools import lru_cache
from typing import Any

from . import _errors, _variant
from ._errors import SqlError
from ._systypes import CODE_PAGE
from ._types import DECIMAL_TYPES, MONEY_TYPES, SqlType
from ._values import Storage, convert, convert_style, encode, utf16_len, utf16_slice


@lru_cache(maxsize=512)
def parse_type(text: str) -> SqlType | None:
    return SqlType.parse(text, in_cast=True) if text else None


class FunctionErrors:
    """Where functions park the SqlError they raised (one per connection)."""

    def __init__(self) -> None:
        self.error: SqlError | None = None

    def take(self) -> SqlError | None:
        error, self.error = self.error, None
        return error


def _cast(value: Storage, target: str, source: str) -> Storage:
    to = parse_type(target)
    assert to is not None
    return encode(to, convert(value, to, source=parse_type(source)))


def _try_cast(value: Storage, target: str, source: str) -> Storage:
    try:
        return _cast(value, target, source)
    except SqlError:
        return None


def _convert(value: Storage, target: str, source: str, style: int) -> Storage:
    to = parse_type(target)
    assert to is not None
    return encode(to, convert_style(value, to, int(style), source=parse_type(source)))


def _number(value: Storage) -> int | float | Decimal | None:
    if value is None or isinstance(value, int | float):
        return value
    try:
        return Decimal(str(value).strip())
    except ArithmeticError:
        raise _errors.conversion_failed("nvarchar", str(value), "numeric") from None


def _div(a: Storage, b: Storage) -> Storage:
    x, y = _number(a), _number(b)
    if x is None or y is None:
        return None
    if y == 0:
        raise _errors.divide_by_zero()
    if isinstance(x, int) and isinstance(y, int):
        quotient = abs(x) // abs(y)
        return quotient if (x >= 0) == (y >= 0) else -quotient
    if isinstance(x, Decimal) or isinstance(y, Decimal):
        result = Decimal(x) / Decimal(y)
        return float(result)
    return x / y


_EXACT_OPS: dict[str, Callable[[Decimal, Decimal], Decimal]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "%": operator.mod,  # Decimal's remainder takes the dividend's sign, as T-SQL's %
}


def _decimal_op(op: str, a: Storage, b: Storage, result: str) -> Storage:
    """``a op b`` for a decimal/money result type, exactly, then fitted to ``result``: + - * and
    % round half away from zero to the result scale, / truncates (SQL Server's 2.0/3 is
    0.666666); a value too large for the result type is error 8115."""
    x, y = _number(a), _number(b)
    if x is None or y is None:
        return None
    to = parse_type(result)
    assert to is not None
    dx, dy = (Decimal(repr(v)) if isinstance(v, float) else Decimal(v) for v in (x, y))
    if op in "/%" and dy == 0:
        raise _errors.divide_by_zero()
    with localcontext(prec=120):
        if op == "/":
            scale = 4 if to.name in MONEY_TYPES else int(to.scale or 0)
            value = (dx / dy).quantize(Decimal(1).scaleb(-scale), rounding=ROUND_DOWN)
        else:
            value = _EXACT_OPS[op](dx, dy)
    try:
        return encode(to, convert(value, to, source=to))
    except SqlError as exc:
        if exc.number == 8115:
            raise _errors.overflow("numeric" if to.name in DECIMAL_TYPES else to.name) from None
        raise


def _mod(a: Storage, b: Storage) -> Storage:
    x, y = _number(a), _number(b)
    if x is None or y is None:
        return None
    if y == 0:
        raise _errors.divide_by_zero()
    result = math.fmod(x, y) if not (isinstance(x, int) and isinstance(y, int)) else None
    if result is not None:
        return result
    assert isinstance(x, int)
    assert isinstance(y, int)
    remainder = abs(x) % abs(y)
    return remainder if x >= 0 else -remainder


def _now(kind: str) -> Storage:
    if kind == "getdate":
        return _cast(
            encode(SqlType("datetime2", scale=7), dt.datetime.now()), "datetime", "datetime2(7)"
        )
    if kind == "getutcdate":
        utc = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        return _cast(encode(SqlType("datetime2", scale=7), utc), "datetime", "datetime2(7)")
    if kind == "sysdatetime":
        return encode(SqlType("datetime2", scale=7), dt.datetime.now())
    if kind == "sysutcdatetime":
        return encode(SqlType("datetime2", scale=7), dt.datetime.now(dt.UTC).replace(tzinfo=None))
    return encode(SqlType("datetimeoffset", scale=7), dt.datetime.now().astimezone())


def _text(value: Storage) -> str | None:
    if value is None:
        return None
    return (
        value
        if isinstance(value, str)
        else str(convert(value, SqlType("nvarchar", length=-1), source=None))
    )


def _left(value: Storage, n: Storage) -> Storage:
    text = _text(value)
    if text is None or n is None:
        return None
    if int(n) < 0:
        raise SqlError(536, "Invalid length parameter passed to the left function.")
    return utf16_slice(text, 0, int(n))


def _right(value: Storage, n: Storage) -> Storage:
    text = _text(value)
    if text is None or n is None:
        return None
    if int(n) < 0:
        raise SqlError(536, "Invalid length parameter passed to the right function.")
    return utf16_slice(text, utf16_len(text) - int(n)) if int(n) else ""


def _substring(value: Storage, start: Storage, length: Storage) -> Storage:
    """SUBSTRING(value, start, length): 1-based, in UTF-16 code units (bytes for binary); a start
    before 1 eats into the length, as in SQL Server."""
    if value is None or start is None or length is None:
        return None
    if int(length) < 0:
        raise SqlError(537, "Invalid length parameter passed to the substring function.")
    first, stop = int(start) - 1, int(start) - 1 + int(length)
    if isinstance(value, bytes):
        return value[max(0, first) : max(0, stop)]
    text = _text(value)
    assert text is not None
    return utf16_slice(text, max(0, first), max(0, stop))


def _len(value: Storage) -> Storage:
    if isinstance(value, bytes):
        return len(value)
    text = _text(value)
    return None if text is None else utf16_len(text.rstrip(" "))


def _datalength(value: Storage, type_name: str) -> Storage:
    if value is None:
        return None
    if isinstance(value, bytes):
        return len(value)
    sql_type = parse_type(type_name)
    if isinstance(value, str) and sql_type is not None and sql_type.name in ("nvarchar", "nchar"):
        return 2 * utf16_len(value)
    if isinstance(value, str) and sql_type is not None and sql_type.name in ("varchar", "char"):
        # bytes in the code page of the database's collation (SQL_Latin1_General_CP1_CI_AS:
        # cp1252); SQL Server keeps a character the code page lacks as "?", one byte
        return len(value.encode(CODE_PAGE, errors="replace"))
    if isinstance(value, str):
        return len(value.encode("utf-8"))
    return 8 if isinstance(value, float) else 4


def _charindex(needle: Storage, haystack: Storage, start: Storage = 1) -> Storage:
    if needle is None or haystack is None:
        return None
    # positions in UTF-16 code units, as SQL Server counts them (an emoji counts 2)
    text = str(haystack).lower()
    head = utf16_slice(text, 0, max(int(start or 1), 1) - 1)
    found = text.find(str(needle).lower(), len(head))
    return 0 if found < 0 else utf16_len(text[:found]) + 1


def _concat(*values: Storage) -> Storage:
    return "".join(_text(v) or "" for v in values)


def _replicate(value: Storage, times: Storage) -> Storage:
    if value is None or times is None or int(times) < 0:
        return None
    return (_text(value) or "") * int(times)


_UNITS = {
    "year": "year", "yy": "year", "yyyy": "year", "quarter": "quarter", "qq": "quarter",
    "q": "quarter", "month": "month", "mm": "month", "m": "month", "dayofyear": "dayofyear",
    "dy": "dayofyear", "y": "dayofyear", "day": "day", "dd": "day", "d": "day", "week": "week",
    "wk": "week", "ww": "week", "weekday": "weekday", "dw": "weekday", "hour": "hour",
    "hh": "hour", "minute": "minute", "mi": "minute", "n": "minute", "second": "second",
    "ss": "second", "s": "second", "millisecond": "millisecond", "ms": "millisecond",
    "microsecond": "microsecond", "mcs": "microsecond",
}  # fmt: skip


def unit_name(text: str) -> str:
    unit = _UNITS.get(text.lower())
    if unit is None:
        raise SqlError(155, f"'{text}' is not a recognized datepart option.", severity=15)
    return unit


def _as_datetime(value: Storage, type_name: str) -> dt.datetime:
    source = parse_type(type_name)
    result = convert(value, SqlType("datetime2", scale=7), source=source)
    assert isinstance(result, dt.datetime)
    if source is not None and source.name == "datetimeoffset":
        local = convert(value, source, source=source)
        assert isinstance(local, dt.datetime)
        return local.replace(tzinfo=None)
    return result


def _dateadd(unit: str, number: Storage, value: Storage, type_name: str) -> Storage:
    if number is None or value is None:
        return None
    source = parse_type(type_name) or SqlType("datetime")
    moment = convert(value, source, source=source)
    assert isinstance(moment, dt.datetime | dt.date)
    amount = int(number)
    unit = unit_name(unit)
    if unit in ("year", "quarter", "month"):
        months = amount * {"year": 12, "quarter": 3, "month": 1}[unit]
        total = moment.year * 12 + moment.month - 1 + months
        year, month = divmod(total, 12)
        day = min(moment.day, calendar.monthrange(year, month + 1)[1])
        result: Any = moment.replace(year=year, month=month + 1, day=day)
    else:
        seconds = {
            "dayofyear": 86400, "day": 86400, "week": 604800, "weekday": 86400, "hour": 3600,
            "minute": 60, "second": 1, "millisecond": 0.001, "microsecond": 0.000001,
        }[unit]  # fmt: skip
        result = moment + dt.timedelta(seconds=amount * seconds)
    return encode(source, convert(result, source, source=None))


def _datediff(unit: str, a: Storage, a_type: str, b: Storage, b_type: str) -> Storage:
    if a is None or b is None:
        return None
    start, end = _as_datetime(a, a_type), _as_datetime(b, b_type)
    unit = unit_name(unit)
    if unit == "year":
        return end.year - start.year
    if unit == "quarter":
        return (end.year - start.year) * 4 + (end.month - 1) // 3 - (start.month - 1) // 3
    if unit == "month":
        return (end.year - start.year) * 12 + end.month - start.month
    if unit in ("day", "dayofyear", "weekday"):
        return (end.date() - start.date()).days
    if unit == "week":
        sunday = dt.timedelta(days=1)
        return ((end + sunday).date().toordinal() // 7) - ((start + sunday).date().toordinal() // 7)
    boundary = {"hour": 3600, "minute": 60, "second": 1, "millisecond": 0.001, "microsecond": 1e-6}[
        unit
    ]
    epoch = dt.datetime(1900, 1, 1)

    def ticks(moment: dt.datetime) -> int:
        return int((moment - epoch) // dt.timedelta(seconds=boundary))

    return ticks(end) - ticks(start)


def _datepart(unit: str, value: Storage, type_name: str) -> Storage:
    if value is None:
        return None
    moment = _as_datetime(value, type_name)
    unit = unit_name(unit)
    parts = {
        "year": moment.year, "quarter": (moment.month - 1) // 3 + 1, "month": moment.month,
        "dayofyear": moment.timetuple().tm_yday, "day": moment.day, "hour": moment.hour,
        "week": int(moment.strftime("%U")) + 1, "weekday": (moment.weekday() + 1) % 7 + 1,
        "minute": moment.minute, "second": moment.second,
        "millisecond": moment.microsecond // 1000, "microsecond": moment.microsecond,
    }  # fmt: skip
    return parts[unit]


def _eomonth(value: Storage, type_name: str) -> Storage:
    if value is None:
        return None
    moment = _as_datetime(value, type_name)
    last = calendar.monthrange(moment.year, moment.month)[1]
    return dt.date(moment.year, moment.month, last).isoformat()


def _rounding(fn: Callable[[float], float]) -> Callable[[Storage], Storage]:
    def apply(value: Storage) -> Storage:
        number = _number(value)
        if number is None:
            return None
        if isinstance(number, int):
            return number
        return int(fn(number))  # type: ignore[arg-type]

    return apply


def register(
    conn: sqlite3.Connection,
    errors: FunctionErrors,
    session_context: Callable[[Storage], Storage],
) -> None:
    """Register tdslite's functions on ``conn``; SqlErrors they raise go to ``errors``."""

    def guarded(fn: Callable[..., Storage]) -> Callable[..., Storage]:
        def call(*args: Storage) -> Storage:
            try:
                return fn(*args)
            except SqlError as exc:
                errors.error = exc
                raise
            except (ValueError, TypeError, OverflowError, ArithmeticError) as exc:
                errors.error = SqlError(8114, f"Error converting data type: {exc}")
                raise

        return call

    functions: dict[str, tuple[int, Callable[..., Storage], bool]] = {
        "tds_cast": (3, _cast, True),
        "tds_try_cast": (3, _try_cast, True),
        "tds_convert": (4, _convert, True),
        "tds_div": (2, _div, True),
        "tds_decimal_op": (4, _decimal_op, True),
        "tds_mod": (2, _mod, True),
        "tds_left": (2, _left, True),
        "tds_right": (2, _right, True),
        "tds_len": (1, _len, True),
        "tds_substring": (3, _substring, True),
        "tds_utf16_length": (1, lambda v: None if v is None else utf16_len(str(v)), True),
        "tds_datalength": (2, _datalength, True),
        "tds_charindex": (-1, _charindex, True),
        "tds_concat": (-1, _concat, True),
        "tds_replicate": (2, _replicate, True),
        "tds_dateadd": (4, _dateadd, True),
        "tds_datediff": (5, _datediff, True),
        "tds_datepart": (3, _datepart, True),
        "tds_eomonth": (2, _eomonth, True),
        "tds_floor": (1, _rounding(math.floor), True),
        "tds_ceiling": (1, _rounding(math.ceil), True),
        "tds_now": (1, _now, False),
        "tds_newid": (0, lambda: str(uuid.uuid4()).upper(), False),
        "tds_session_context": (1, session_context, False),
        "tds_variant_property": (2, _variant.property_of, True),
        "tds_unhex": (1, lambda v: None if v is None else bytes.fromhex(str(v)), True),
    }
    for name, (arity, fn, deterministic) in functions.items():
        conn.create_function(name, arity, guarded(fn), deterministic=deterministic)
