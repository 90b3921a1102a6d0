"""time, datetime2 and datetimeoffset keep their 7th fractional digit (100 ns) on the way from a
real TDS server (tdslite) through python-tds and connector/execute.py into NDJSON, at every scale
0-7 and at each type's extremes (connector/_tdstypes.py)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio

from connector import _tdstypes
from connector.encode import BoundParam, RowEncoder, decode_params, describe
from connector.execute import ExecRequest, execute
from connector.pool import LoginPool
from connector.results import CancelToken
from tests.connector.test_execute_reset import reader_pool
from tests.support.sinks import CollectSink


@pytest.fixture
async def pool(tmp_path: Path) -> AsyncIterator[LoginPool]:
    async with reader_pool(tmp_path) as login_pool:
        yield login_pool


async def run_query(
    pool: LoginPool, sql: str, params: list[BoundParam] | None = None
) -> tuple[list[dict[str, Any]], list[list[Any]]]:
    """Run `sql` through connector/execute.py: (column descriptions, JSON rows)."""
    sink = CollectSink()
    req = ExecRequest(
        query_id="q-values",
        sql=sql,
        params=params or [],
        context={"edgetds.sub": "u", "edgetds.iss": "https://idp", "edgetds.query_id": "q"},
    )
    with trio.fail_after(30):
        await execute(pool, req, sink, CancelToken())
    lines = [json.loads(line) for line in sink.data.splitlines()]
    columns = [c for line in lines if isinstance(line, dict) for c in line["columns"]]
    return columns, [line for line in lines if isinstance(line, list)]


def _rounded(digits: str, scale: int) -> str:
    """'1234567' at `scale` digits, rounded half up as SQL Server converts."""
    value = round(int(digits) / 10 ** (7 - scale))  # no .5 ties in the values used here
    return f".{value:0{scale}d}" if scale else ""


async def test_every_scale_keeps_the_100ns_digit(pool: LoginPool) -> None:
    selects = []
    expected = []
    for s in range(8):
        selects += [
            f"CAST('13:14:15.1234567' AS time({s}))",
            f"CAST('2024-02-29 13:14:15.1234567' AS datetime2({s}))",
            f"CAST('2024-02-29 13:14:15.1234567 -03:30' AS datetimeoffset({s}))",
        ]
        frac = _rounded("1234567", s)
        expected += [
            f"13:14:15{frac}",
            f"2024-02-29T13:14:15{frac}",
            f"2024-02-29T13:14:15{frac}-03:30",
        ]
    columns, rows = await run_query(pool, "SELECT " + ", ".join(selects))
    assert rows == [expected]
    assert [c["scale"] for c in columns] == [s for s in range(8) for _ in range(3)]


async def test_extremes_of_each_type(pool: LoginPool) -> None:
    cases = {
        "CAST('00:00:00' AS time(7))": "00:00:00.0000000",
        "CAST('00:00:00.0000001' AS time(7))": "00:00:00.0000001",
        "CAST('23:59:59.9999999' AS time(7))": "23:59:59.9999999",
        "CAST('0001-01-01 00:00:00.0000001' AS datetime2(7))": "0001-01-01T00:00:00.0000001",
        "CAST('9999-12-31 23:59:59.9999999' AS datetime2(7))": "9999-12-31T23:59:59.9999999",
        # the range holds in UTC: the earliest +14:00 value is 14:00 local
        "CAST('0001-01-01 14:00:00.0000001 +14:00' AS datetimeoffset(7))": (
            "0001-01-01T14:00:00.0000001+14:00"
        ),
        "CAST('0001-01-01 00:00:00.0000001 -14:00' AS datetimeoffset(7))": (
            "0001-01-01T00:00:00.0000001-14:00"
        ),
        "CAST('9999-12-31 09:59:59.9999999 -14:00' AS datetimeoffset(7))": (
            "9999-12-31T09:59:59.9999999-14:00"
        ),
        "CAST('9999-12-31 23:59:59.9999999 +14:00' AS datetimeoffset(7))": (
            "9999-12-31T23:59:59.9999999+14:00"
        ),
        "CAST(NULL AS datetime2(7))": None,
    }
    _, rows = await run_query(pool, "SELECT " + ", ".join(cases))
    assert rows == [list(cases.values())]


async def test_a_7_digit_parameter_comes_back_whole(pool: LoginPool) -> None:
    params = decode_params(
        {
            "t": {"type": "time(7)", "value": "13:14:15.1234567"},
            "d": {"type": "datetime2(7)", "value": "2024-02-29T13:14:15.1234567"},
            "o": {"type": "datetimeoffset(7)", "value": "2024-02-29T13:14:15.1234567+05:45"},
        }
    )
    _, rows = await run_query(pool, "SELECT @t, @d, @o", params)
    assert rows == [
        ["13:14:15.1234567", "2024-02-29T13:14:15.1234567", "2024-02-29T13:14:15.1234567+05:45"]
    ]


def test_precise_values_are_stdlib_values_with_one_more_digit() -> None:
    t = _tdstypes.PreciseTime(1, 2, 3, 4, nanosecond_100=5)
    d = _tdstypes.PreciseDateTime(2024, 1, 2, 3, 4, 5, 6, nanosecond_100=9)
    assert isinstance(t, dt.time)
    assert isinstance(d, dt.datetime)
    assert (_tdstypes.nanosecond_100(t), _tdstypes.nanosecond_100(d)) == (5, 9)
    assert _tdstypes.nanosecond_100(dt.time(1)) == 0
    with pytest.raises(ValueError, match="0..9"):
        _tdstypes.PreciseTime(1, nanosecond_100=10)
    enc = RowEncoder(describe([("t", 41, None, 5, 7, 0, 1)]))  # SYBMSTIME, time(7)
    assert json.loads(enc.encode([t])) == ["01:02:03.0000045"]
