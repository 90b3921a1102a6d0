"""The one-request form's bytes (connector/execute.py `send_context_with`): the session context
and the statement as two sp_executesql RPCs of one request, serialized once per statement and per
parameter name and type and remembered, the values each time. Every byte must be what
python-tds 1.17.1's own ``_TdsSession.submit_rpc`` writes for each RPC (ALL_HEADERS once, the
batch flag between), for every parameter type, long and non-BMP text, a statement too long to be
remembered, and a change of the session's collation; and repeating a request (from the memory)
writes the same bytes.

A money parameter below zero, which python-tds 1.17.1 cannot write, is written as python-tds (an
independent reader of MS-TDS's MONEY) reads it back.

Also: the server's RESETCONNECTION acknowledgement (ENVCHANGE type 18) is read past without
python-tds logging it, and a pooled connection's cursor is taken again only while it is open.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytds
import pytest
import trio
from pytds import tds_base, tds_types
from pytds.collate import Collation

import tdslite
from connector import _tdstypes
from connector._tdsio import Kept
from connector.encode import BoundParam, decode_params
from connector.execute import (
    _executesql_params,
    _submit_executesql_batch,
    connection_cursor,
    preamble_batch,
    reset_connection_flag,
    send_context_with,
)
from tests.support.connector_stack import TDSLITE_USERS

#: TDS packet header: type, status, length (big-endian), SPID, packet id, window
_HEADER = 8
#: ALL_HEADERS with the transaction descriptor (python-tds's ``_start_query``)
_ALL_HEADERS = 22


@contextmanager
def recording(sess: Any) -> Iterator[Kept]:
    """Record the packets of one request instead of sending them; the session is left idle."""
    writer = sess._writer
    original, recorder = writer._transport, Kept()
    writer._transport = recorder
    writer._packet_no = 0
    try:
        yield recorder
    finally:
        writer._transport = original
        sess.state = tds_base.TDS_IDLE


def payload(packets: Sequence[bytes]) -> bytes:
    """A request's payload, after checking its packets' headers (RPC, full packets, last EOM)."""
    for i, packet in enumerate(packets):
        last = i == len(packets) - 1
        assert packet[0] == tds_base.PacketType.RPC
        assert packet[1] == (1 if last else 0)
        assert int.from_bytes(packet[2:4], "big") == len(packet)
        assert packet[6] == i
    return b"".join(packet[_HEADER:] for packet in packets)


def python_tds_rpc(sess: Any, sql: str, params: Sequence[BoundParam]) -> bytes:
    """What python-tds's own submit_rpc writes for ``sql`` (sp_executesql): ALL_HEADERS, the RPC."""
    with recording(sess) as rec:
        sess.submit_rpc(tds_base.SP_EXECUTESQL, _executesql_params(sess, sql, params), 0)
    return payload(rec.parts)


def one_request(
    sess: Any, ctx: Sequence[BoundParam], sql: str, params: Sequence[BoundParam]
) -> bytes:
    """What send_context_with sends (it then reads the answer: not here, nothing is sent)."""
    with recording(sess) as rec:
        _submit_executesql_batch(sess, [(preamble_batch(), ctx), (sql, params)])
    return payload(rec.parts)


def context(values: Sequence[str]) -> list[BoundParam]:
    return [BoundParam(f"@c{i}", "nvarchar(4000)", v) for i, v in enumerate(values)]


TYPED = {
    "d": {"type": "decimal(18,4)", "value": "12.3400"},
    "m": {"type": "MONEY", "value": "3.5"},
    "bin": {"type": "varbinary(max)", "value": "AP9hYg=="},
    "b4": {"type": "binary(4)", "value": "AP9hYg=="},
    "dt2": {"type": "datetime2(7)", "value": "2024-01-02T03:04:05.1234560"},
    "dt7": {"type": "datetime2(7)", "value": "2024-01-02T03:04:05.1234567"},
    "dto": {"type": "datetimeoffset", "value": "2024-01-02T03:04:05+02:00"},
    "t": {"type": "time(7)", "value": "01:02:03.5"},
    "day": {"type": "date", "value": "2024-02-29"},
    "g": {"type": "uniqueidentifier", "value": "6F9619FF-8B86-D011-B42D-00C04FC964FF"},
    "big": {"type": "bigint", "value": "9223372036854775807"},
    "nv": {"type": "nvarchar(10)", "value": "hi"},
    "vc": {"type": "varchar(20)", "value": "plain"},
    "tn": {"type": "int", "value": None},
    "bit": {"type": "bit", "value": True},
}

CASES: list[tuple[str, str, dict[str, Any]]] = [
    ("small", "SELECT @n AS n", {"n": 7}),
    ("none", "SELECT 1 AS one", {}),
    (
        "bare",
        "SELECT @s, @i, @f, @b, @z",
        {"s": "x\u00e9\U0001f600", "i": -1, "f": 1.5, "b": False, "z": None},
    ),
    ("typed", "SELECT " + ", ".join(f"@{name}" for name in TYPED), TYPED),
    ("long", "SELECT @n AS n -- " + "\u00e9x" * 3000, {"n": 1}),
    ("longer than a packet", "SELECT @s AS s /* " + "y" * 9000 + " */", {"s": "z" * 5000}),
]


@pytest.fixture
async def conn(tmp_path: Path) -> AsyncIterator[Any]:
    """A python-tds connection to a fresh tdslite (its TDS version, type factory and collation are
    the ones the connector's connections get)."""
    users = tmp_path / "users.toml"
    users.write_text(TDSLITE_USERS)
    async with tdslite.open_server(users=users) as server:
        connection = await trio.to_thread.run_sync(
            lambda: pytds.connect(
                "127.0.0.1",
                port=server.port,
                database=server.engine.database,
                user="reader",
                password="reader-pw",
                autocommit=True,
                timeout=10,
            )
        )
        try:
            yield connection
        finally:
            connection.close()


@pytest.mark.parametrize(("name", "sql", "raw"), CASES, ids=[case[0] for case in CASES])
async def test_the_request_is_python_tds_own_rpcs_in_one_message(
    conn: Any, name: str, sql: str, raw: dict[str, Any]
) -> None:
    sess = conn._tds_socket.main_session
    params = decode_params(raw)
    for ctx in (
        context(["alice", "https://idp", "q-1"]),
        context(["", "\U0001f600" * 10, "x" * 4000]),
    ):
        first = python_tds_rpc(sess, preamble_batch(), ctx)
        second = python_tds_rpc(sess, sql, params)
        expected = first + bytes([0xFF]) + second[_ALL_HEADERS:]
        for _ in range(3):  # the first time serialized, then from what was remembered
            assert one_request(sess, ctx, sql, params) == expected


async def test_a_changed_collation_is_never_answered_from_memory(conn: Any) -> None:
    sess = conn._tds_socket.main_session
    (param,) = decode_params({"s": {"type": "nvarchar(20)", "value": "x"}})
    ctx = context(["a", "b", "c"])
    before = one_request(sess, ctx, "SELECT @s AS s", [param])
    original = conn._tds_socket.collation
    assert original is not None
    conn._tds_socket.collation = Collation(
        lcid=1031,
        sort_id=0,
        ignore_case=False,
        ignore_accent=False,
        ignore_width=True,
        ignore_kana=True,
        binary=False,
        binary2=False,
        version=2,
    )
    try:
        changed = one_request(sess, ctx, "SELECT @s AS s", [param])
        expected = (
            python_tds_rpc(sess, preamble_batch(), ctx)
            + bytes([0xFF])
            + python_tds_rpc(sess, "SELECT @s AS s", [param])[_ALL_HEADERS:]
        )
        assert changed == expected
        assert changed != before
    finally:
        conn._tds_socket.collation = original
    assert one_request(sess, ctx, "SELECT @s AS s", [param]) == before


class _Bytes:
    """The reader side of a python-tds serializer, over bytes already received."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def unpack(self, struc: struct.Struct) -> tuple[Any, ...]:
        value, self.data = struc.unpack(self.data[: struc.size]), self.data[struc.size :]
        return value


@pytest.mark.parametrize(
    "value",
    ["-922337203685477.5808", "-4294967296.0001", "-1.0000", "-0.0001", "922337203685477.5807"],
)
async def test_a_money_parameter_below_zero_is_written_as_money_is_read(
    conn: Any, value: str
) -> None:
    sess = conn._tds_socket.main_session
    (param,) = decode_params({"negative_money": {"type": "money", "value": value}})
    ctx = context(["a", "b", "c"])
    _tdstypes.install(conn)
    request = one_request(sess, ctx, "SELECT @negative_money AS m", [param])
    # the request ends with the last parameter's value: MONEYN's length, then the 8 bytes
    assert request[-9] == 8
    assert tds_types.Money8Serializer().read(_Bytes(request[-8:])) == param.value
    # python-tds's own submit_rpc (the two-request form) writes it with the same serializer
    own = python_tds_rpc(sess, "SELECT @negative_money AS m", [param])
    assert request.endswith(own[_ALL_HEADERS:])


class _Count(logging.Filter):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def filter(self, record: logging.LogRecord) -> bool:
        self.messages.append(record.getMessage())
        return True


async def test_the_reset_acknowledgement_is_read_past_unlogged(conn: Any) -> None:
    """Each reused-connection request is answered with ENVCHANGE 18 first: read past without a log
    record, and the statement's answer follows intact."""
    counted = _Count()
    pytds_log = logging.getLogger("pytds")
    pytds_log.filters.insert(0, counted)  # before the connector's own filter drops the record

    def run(n: int) -> list[Any]:
        cursor = connection_cursor(conn)
        sess = cursor._session
        with reset_connection_flag(sess):
            send_context_with(
                sess,
                context(["alice", "iss", f"q{n}"]),
                "SELECT @n AS n, SESSION_CONTEXT(N'edgetds.query_id') AS q",
                decode_params({"n": n}),
            )
        sess.find_result_or_done()
        rows = cursor.fetchall()
        while cursor.nextset():
            pass
        return [tuple(row) for row in rows]

    try:
        for n in range(3):
            assert await trio.to_thread.run_sync(run, n) == [(n, f"q{n}")]
    finally:
        pytds_log.removeFilter(counted)
    assert not [m for m in counted.messages if "env type" in m]


async def test_the_cursor_is_taken_again_only_while_open(conn: Any) -> None:
    def run() -> None:
        first = connection_cursor(conn)
        # a statement left mid-result: taking the cursor again cancels it, as conn.cursor() does
        first.execute("SELECT a.n FROM (SELECT 1 AS n UNION ALL SELECT 2) AS a")
        assert first.fetchone() is not None
        again = connection_cursor(conn)
        assert again is first
        again.execute("SELECT 3 AS n")
        assert [tuple(r) for r in again.fetchall()] == [(3,)]
        # a cursor closed by its user (ops' `with conn.cursor()`) is never taken again
        with conn.cursor() as other:
            other.execute("SELECT 4 AS n")
            assert [tuple(r) for r in other.fetchall()] == [(4,)]
        fresh = connection_cursor(conn)
        assert fresh is not first
        assert fresh is not other
        fresh.execute("SELECT 5 AS n")
        assert [tuple(r) for r in fresh.fetchall()] == [(5,)]

    await trio.to_thread.run_sync(run)
