"""Every type at its extremes and NULL, stored in tdslite and read back two ways: through the whole
tunnel (HTTP -> Python relay -> connector -> python-tds -> tdslite) as NDJSON, and directly with
python-tds (with the connector's 100 ns type handler). Each cell is compared with the value
SQL Server holds: the JSON against SPEC.md section 12, the direct read against the Python value.

The 5 MiB varbinary(max) is read whole directly; through the tunnel one row must fit one frame
(1 MiB by default, SPEC.md), so the tunnel reads a 700,000-byte value and refuses the 5 MiB row
with limits.result_too_large."""

from __future__ import annotations

import base64
import datetime as dt
import uuid
from decimal import Decimal
from typing import Any

import pytds
import pytest
import trio

from connector import _tdstypes
from tdslite import TdsServer
from tests.e2e.test_worker_relay import worker_stack  # noqa: F401 - the Worker relay fixture
from tests.support.e2e_stack import Stack, admin_connection
from tests.support.node import NODE
from tests.support.worker_relay import WORKERD

BIG_BLOB = bytes(range(256)) * (5 * 1024 * 1024 // 256)  # varbinary(max) of 5 MiB
FRAME_BLOB = BIG_BLOB[:700_000]  # as base64 in one row, within the default 1 MiB frame
NVARCHAR_4000 = "é" * 3998 + "😀"  # 4,000 UTF-16 code units (the emoji counts 2)
GUID = "6F9619FF-8B86-D011-B42D-00C04FC964FF"
XML_DOC = '<order id="7"><line sku="a&amp;b">Grüße 😀</line></order>'  # as SQL Server keeps it


def _dto(text: str, minutes: int) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(
        tzinfo=dt.timezone(dt.timedelta(minutes=minutes))
    )


# column, declared type, (SQL literal, JSON, Python value) for the minimum and the maximum
COLUMNS: list[tuple[str, str, tuple[Any, ...], tuple[Any, ...]]] = [
    ("c_bit", "bit", ("0", False, False), ("1", True, True)),
    ("c_tinyint", "tinyint", ("0", 0, 0), ("255", 255, 255)),
    ("c_smallint", "smallint", ("-32768", -32768, -32768), ("32767", 32767, 32767)),
    ("c_int", "int", ("-2147483648", -(2**31), -(2**31)), ("2147483647", 2**31 - 1, 2**31 - 1)),
    (
        "c_bigint",
        "bigint",
        ("-9223372036854775808", "-9223372036854775808", -(2**63)),
        ("9223372036854775807", "9223372036854775807", 2**63 - 1),
    ),
    (
        "c_dec38_0",
        "decimal(38,0)",
        ("-" + "9" * 38, "-" + "9" * 38, Decimal("-" + "9" * 38)),
        ("9" * 38, "9" * 38, Decimal("9" * 38)),
    ),
    (
        "c_dec38_38",
        "decimal(38,38)",
        ("-0." + "9" * 38, "-0." + "9" * 38, Decimal("-0." + "9" * 38)),
        ("0." + "9" * 38, "0." + "9" * 38, Decimal("0." + "9" * 38)),
    ),
    (
        "c_dec38_10",
        "decimal(38,10)",
        (
            "-" + "9" * 28 + "." + "9" * 10,
            "-" + "9" * 28 + "." + "9" * 10,
            Decimal("-" + "9" * 28 + "." + "9" * 10),
        ),
        ("0.0000000001", "0.0000000001", Decimal("0.0000000001")),
    ),
    (
        "c_money",
        "money",
        ("-922337203685477.5808", "-922337203685477.5808", Decimal("-922337203685477.5808")),
        ("922337203685477.5807", "922337203685477.5807", Decimal("922337203685477.5807")),
    ),
    (
        "c_smallmoney",
        "smallmoney",
        ("-214748.3648", "-214748.3648", Decimal("-214748.3648")),
        ("214748.3647", "214748.3647", Decimal("214748.3647")),
    ),
    (
        "c_real",
        "real",
        ("-3.4028235E+38", -3.4028235e38, -3.4028234663852886e38),
        ("1.17549435E-38", 1.1754944e-38, 1.1754943508222875e-38),
    ),
    (
        "c_float",
        "float",
        ("-1.7976931348623157E+308", -1.7976931348623157e308, -1.7976931348623157e308),
        ("1.7976931348623157E+308", 1.7976931348623157e308, 1.7976931348623157e308),
    ),
    (
        "c_float_tiny",
        "float",
        ("-2.2250738585072014E-308", -2.2250738585072014e-308, -2.2250738585072014e-308),
        ("2.2250738585072014E-308", 2.2250738585072014e-308, 2.2250738585072014e-308),
    ),
    (
        "c_varchar",
        "varchar(8000)",
        ("''", "", ""),
        ("REPLICATE('a', 8000)", "a" * 8000, "a" * 8000),
    ),
    (
        "c_nvarchar",
        "nvarchar(4000)",
        ("N''", "", ""),
        (f"N'{NVARCHAR_4000}'", NVARCHAR_4000, NVARCHAR_4000),
    ),
    ("c_blob", "varbinary(max)", ("0x", "", b""), ("0x00", None, FRAME_BLOB)),  # set by parameter
    ("c_char", "char(10)", ("''", " " * 10, " " * 10), ("'abc'", "abc" + " " * 7, "abc" + " " * 7)),
    ("c_nchar", "nchar(4)", ("N''", " " * 4, " " * 4), ("N'é😀'", "é😀 ", "é😀 ")),
    (
        "c_binary",
        "binary(4)",
        ("0x", "AAAAAA==", b"\x00" * 4),
        ("0xFF01", "/wEAAA==", b"\xff\x01\x00\x00"),
    ),
    (
        "c_varbinary",
        "varbinary(8000)",
        ("0x", "", b""),
        ("0x" + "AB" * 8000, base64.b64encode(b"\xab" * 8000).decode(), b"\xab" * 8000),
    ),
    (
        "c_numeric",
        "numeric(10,3)",
        ("-9999999.999", "-9999999.999", Decimal("-9999999.999")),
        ("9999999.999", "9999999.999", Decimal("9999999.999")),
    ),
    (
        "c_varchar_max",
        "varchar(max)",
        ("''", "", ""),
        ("REPLICATE(CAST('b' AS varchar(max)), 9000)", "b" * 9000, "b" * 9000),
    ),
    (
        "c_nvarchar_max",
        "nvarchar(max)",
        ("N''", "", ""),
        ("REPLICATE(CAST(N'ü' AS nvarchar(max)), 5000)", "ü" * 5000, "ü" * 5000),
    ),
    ("c_text", "text", ("''", "", ""), ("'plain text'", "plain text", "plain text")),
    ("c_ntext", "ntext", ("N''", "", ""), ("N'Grüße 😀'", "Grüße 😀", "Grüße 😀")),
    ("c_image", "image", ("0x", "", b""), ("0x00FF", "AP8=", b"\x00\xff")),
    ("c_xml", "xml", ("N'<a>b</a>'", "<a>b</a>", "<a>b</a>"), (f"N'{XML_DOC}'", XML_DOC, XML_DOC)),
    (
        "c_variant",
        "sql_variant",
        ("CAST(CAST(-12.25 AS decimal(5,2)) AS sql_variant)", "-12.25", Decimal("-12.25")),
        ("CAST(N'Grüße' AS sql_variant)", "Grüße", "Grüße"),
    ),
    (
        "c_time0",
        "time(0)",
        ("'00:00:00'", "00:00:00", dt.time(0)),
        ("'23:59:59'", "23:59:59", dt.time(23, 59, 59)),
    ),
    (
        "c_time3",
        "time(3)",
        ("'00:00:00.001'", "00:00:00.001", dt.time(0, 0, 0, 1000)),
        ("'23:59:59.999'", "23:59:59.999", dt.time(23, 59, 59, 999000)),
    ),
    (
        "c_dt2_0",
        "datetime2(0)",
        ("'0001-01-01'", "0001-01-01T00:00:00", dt.datetime(1, 1, 1)),
        ("'9999-12-31 23:59:59'", "9999-12-31T23:59:59", dt.datetime(9999, 12, 31, 23, 59, 59)),
    ),
    (
        "c_guid",
        "uniqueidentifier",
        ("'00000000-0000-0000-0000-000000000000'", str(uuid.UUID(int=0)), uuid.UUID(int=0)),
        (f"'{GUID}'", GUID.lower(), uuid.UUID(GUID)),
    ),
    (
        "c_date",
        "date",
        ("'0001-01-01'", "0001-01-01", dt.date(1, 1, 1)),
        ("'9999-12-31'", "9999-12-31", dt.date(9999, 12, 31)),
    ),
    (
        "c_datetime2",
        "datetime2(7)",
        ("'0001-01-01 00:00:00'", "0001-01-01T00:00:00.0000000", dt.datetime(1, 1, 1)),
        (
            "'9999-12-31 23:59:59.9999999'",
            "9999-12-31T23:59:59.9999999",
            _tdstypes.PreciseDateTime(9999, 12, 31, 23, 59, 59, 999999, nanosecond_100=9),
        ),
    ),
    (
        "c_datetime",
        "datetime",
        ("'1753-01-01'", "1753-01-01T00:00:00.000", dt.datetime(1753, 1, 1)),
        (
            "'9999-12-31 23:59:59.997'",
            "9999-12-31T23:59:59.997",
            dt.datetime(9999, 12, 31, 23, 59, 59, 997000),
        ),
    ),
    (
        "c_smalldatetime",
        "smalldatetime",
        ("'1900-01-01'", "1900-01-01T00:00:00", dt.datetime(1900, 1, 1)),
        ("'2079-06-06 23:59'", "2079-06-06T23:59:00", dt.datetime(2079, 6, 6, 23, 59)),
    ),
    (
        "c_time",
        "time(7)",
        ("'00:00:00'", "00:00:00.0000000", dt.time(0)),
        (
            "'23:59:59.9999999'",
            "23:59:59.9999999",
            _tdstypes.PreciseTime(23, 59, 59, 999999, nanosecond_100=9),
        ),
    ),
    (
        "c_dto",
        "datetimeoffset(7)",
        (
            "'0001-01-01 00:00:00 -14:00'",
            "0001-01-01T00:00:00.0000000-14:00",
            _dto("0001-01-01T00:00:00", -840),
        ),
        (
            "'9999-12-31 23:59:59.9999999 +14:00'",
            "9999-12-31T23:59:59.9999999+14:00",
            _tdstypes.PreciseDateTime(
                9999, 12, 31, 23, 59, 59, 999999, _dto("9999-12-31", 840).tzinfo, nanosecond_100=9
            ),
        ),
    ),
]
OFFSETS = range(-14 * 60, 14 * 60 + 1, 15)  # every quarter hour from -14:00 to +14:00


def _offset_text(minutes: int) -> str:
    sign = "-" if minutes < 0 else "+"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def _fill(db: TdsServer) -> None:
    """Rows 1 (minimum), 2 (maximum), 3 (NULL); and one datetimeoffset per offset."""
    conn = admin_connection(db, timeout=60)
    try:
        cur = conn.cursor()
        cur.execute(
            "CREATE TABLE rt (id int NOT NULL, "
            + ", ".join(f"{name} {declared}" for name, declared, _, _ in COLUMNS)
            + ")"
        )
        for row_id, pick in ((1, 2), (2, 3)):
            values = ", ".join(lo[0] if pick == 2 else hi[0] for _, _, lo, hi in COLUMNS)
            cur.execute(f"INSERT INTO rt VALUES ({row_id}, {values})")
        cur.execute("INSERT INTO rt (id) VALUES (3)")
        cur.execute("UPDATE rt SET c_blob = %s WHERE id = 2", (pytds.Binary(FRAME_BLOB),))
        cur.execute("CREATE TABLE big (v varbinary(max))")
        cur.execute("INSERT INTO big VALUES (%s)", (pytds.Binary(BIG_BLOB),))
        cur.execute("CREATE TABLE tz_offsets (minutes int NOT NULL, v datetimeoffset(0))")
        cur.execute(
            "INSERT INTO tz_offsets VALUES "
            + ", ".join(f"({m}, '2024-02-29 12:00:00 {_offset_text(m)}')" for m in OFFSETS)
        )
    finally:
        conn.close()


def _direct(db: TdsServer, sql: str) -> list[tuple[Any, ...]]:
    conn = admin_connection(db, timeout=60)
    try:
        _tdstypes.install(conn)
        cur = conn.cursor()
        cur.execute(sql)
        return [tuple(r) for r in cur.fetchall()]
    finally:
        conn.close()


def _expected_json(row: int) -> list[Any]:
    if row == 3:
        return [3] + [None] * len(COLUMNS)
    cells = [lo if row == 1 else hi for _, _, lo, hi in COLUMNS]
    return [row] + [c[1] for c in cells]


async def test_every_type_at_its_extremes_through_the_tunnel_and_directly(stack: Stack) -> None:
    await _check_extremes(stack)


@pytest.mark.skipif(
    not WORKERD.exists() or not NODE.exists(),
    reason="workerd (npm) or node is not installed: run `make node-deps`",
)
async def test_every_type_at_its_extremes_through_the_worker_relay(
    worker_stack: Stack,  # noqa: F811 - the fixture imported above
) -> None:
    """The same rows through the Cloudflare Worker relay under workerd (it passes rows through
    untouched)."""
    await _check_extremes(worker_stack)


async def _check_extremes(stack: Stack) -> None:
    with trio.fail_after(120):
        await trio.to_thread.run_sync(_fill, stack.db)
        resp = await stack.query("SELECT * FROM rt ORDER BY id")
        direct = await trio.to_thread.run_sync(_direct, stack.db, "SELECT * FROM rt ORDER BY id")
    assert resp.status == 200, resp.lines[-1]
    assert "done" in resp.terminal
    names = [c["name"] for c in resp.columns]
    assert names == ["id"] + [name for name, _, _, _ in COLUMNS]
    tunnel = resp.rows
    assert len(tunnel) == len(direct) == 3
    for r, (t_row, d_row) in enumerate(zip(tunnel, direct, strict=True), start=1):
        expected = _expected_json(r)
        for i, name in enumerate(names):
            if name == "c_blob" and r == 2:
                assert base64.b64decode(t_row[i]) == FRAME_BLOB, "c_blob via the tunnel"
                assert d_row[i] == FRAME_BLOB, "c_blob directly"
                continue
            assert t_row[i] == expected[i], f"{name} row {r} via the tunnel"
            if r == 3 or i == 0:
                assert d_row[i] == expected[i], f"{name} row {r} directly"
                continue
            _, _, lo, hi = COLUMNS[i - 1]
            want = (lo if r == 1 else hi)[2]
            assert d_row[i] == want, f"{name} row {r} directly"
            assert type(d_row[i]) is type(want), f"{name} row {r} directly"
            assert _tdstypes.nanosecond_100(d_row[i]) == _tdstypes.nanosecond_100(want)


async def test_uniqueidentifier_byte_order_and_every_offset(stack: Stack) -> None:
    with trio.fail_after(120):
        await trio.to_thread.run_sync(_fill, stack.db)
        guid = await stack.query(
            "SELECT c_guid, CAST(c_guid AS varbinary(16)) FROM rt WHERE id = 2"
        )
        offsets = await stack.query("SELECT minutes, v FROM tz_offsets ORDER BY minutes")
        direct = await trio.to_thread.run_sync(
            _direct, stack.db, "SELECT minutes, v FROM tz_offsets ORDER BY minutes"
        )
    # the first three groups are stored little-endian: 6F9619FF-8B86-D011 -> FF19966F 868B 11D0
    raw = bytes.fromhex("FF19966F868B11D0B42D00C04FC964FF")
    assert guid.rows == [[GUID.lower(), base64.b64encode(raw).decode()]]
    assert offsets.status == 200, offsets.lines[-1]
    assert offsets.rows == [[m, f"2024-02-29T12:00:00{_offset_text(m)}"] for m in OFFSETS]
    assert direct == [(m, _dto("2024-02-29T12:00:00", m)) for m in OFFSETS]
    assert [d[1].utcoffset() for d in direct] == [dt.timedelta(minutes=m) for m in OFFSETS]


async def test_a_5_mib_varbinary_directly_and_refused_clearly_by_the_tunnel(stack: Stack) -> None:
    with trio.fail_after(120):
        await trio.to_thread.run_sync(_fill, stack.db)
        direct = await trio.to_thread.run_sync(
            _direct, stack.db, "SELECT v, DATALENGTH(v) FROM big"
        )
        resp = await stack.query("SELECT v FROM big")
    assert direct == [(BIG_BLOB, len(BIG_BLOB))]
    assert resp.terminal["error"]["code"] == "limits.result_too_large"
