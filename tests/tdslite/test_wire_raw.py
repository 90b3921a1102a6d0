"""What real clients rarely send, sent on purpose by a small raw client (_tds_raw) to tdslite over
the stand-in engine: the IGNORE and RESETCONNECTION bits, a lone ATTENTION, bulk load, malformed
and batched RPCs, garbage instead of PRELOGIN. The server must answer each with TDS and survive."""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator

import pytest
import trio

from tdslite.engine import User
from tdslite.server import TdsServer, open_server
from tests.tdslite._tds_helpers import wait_until
from tests.tdslite._tds_raw import IGNORE, RESETCONNECTION, RawClient, all_headers, sql_batch, utf16
from tests.tdslite._tds_standin import StandinEngine

USERS = {"alice": User("alice", "pw-alice", "admin", "alice")}
DONE, DONEPROC, DONEINPROC = 0xFD, 0xFE, 0xFF


@pytest.fixture
async def server() -> AsyncIterator[tuple[TdsServer, StandinEngine]]:
    engine = StandinEngine(USERS)
    async with open_server(users=USERS, engine=engine) as srv:  # type: ignore[arg-type]
        yield srv, engine


@pytest.fixture
async def client(server: tuple[TdsServer, StandinEngine]) -> AsyncIterator[RawClient]:
    srv, _ = server
    with trio.fail_after(10):
        raw = await RawClient.connect(srv.host, srv.port, "alice", "pw-alice")
    yield raw
    await raw.aclose()


async def test_ignore_bit_drops_the_message_but_replies(
    client: RawClient, server: tuple[TdsServer, StandinEngine]
) -> None:
    _, engine = server
    with trio.fail_after(10):
        ignored = await client.request(0x01, sql_batch("COUNT 5"), status=IGNORE)
        normal = await client.request(0x01, sql_batch("COUNT 6"))
    assert ignored.dones == [(DONE, 0, 0)]
    assert normal.dones == [(DONE, 0x10, 6)]
    assert engine.sessions[0].executed == ["COUNT 6"]


async def test_reset_connection_bit(
    client: RawClient, server: tuple[TdsServer, StandinEngine]
) -> None:
    _, engine = server
    with trio.fail_after(10):
        reply = await client.request(0x01, sql_batch("COUNT 1"), status=RESETCONNECTION)
    assert engine.sessions[0].resets == 1
    assert 18 in reply.envchanges  # ENVCHANGE type 18: reset acknowledged
    assert reply.dones == [(DONE, 0x10, 1)]


async def test_reset_connection_bit_in_a_transaction_reports_the_rollback_first(
    client: RawClient, server: tuple[TdsServer, StandinEngine]
) -> None:
    _, engine = server
    with trio.fail_after(10):
        begun = await client.request(0x01, sql_batch("BEGIN"))
        reply = await client.request(0x01, sql_batch("COUNT 1"), status=RESETCONNECTION)
    assert begun.envchanges == [8]
    assert engine.sessions[0].in_transaction is False
    # ENVCHANGE 10 (rollback) before 18 (reset acknowledged), as the reset's first effect
    assert reply.envchanges == [10, 18]
    assert reply.dones == [(DONE, 0x10, 1)]


async def test_lone_attention_is_acknowledged(client: RawClient) -> None:
    with trio.fail_after(10):
        reply = await client.request(0x06, b"")
    assert reply.dones == [(DONE, 0x20, 0)]


async def test_bulk_load_refused_clearly(client: RawClient) -> None:
    with trio.fail_after(10):
        reply = await client.request(0x07, b"\x00" * 10)
        after = await client.request(0x01, sql_batch("COUNT 2"))
    assert reply.errors == [4815]
    assert reply.dones == [(DONE, 0x02, 0)]
    assert after.dones == [(DONE, 0x10, 2)]


def rpc_by_id(proc_id: int, params: bytes) -> bytes:
    return struct.pack("<HHH", 0xFFFF, proc_id, 0) + params


def nvarchar_param(name: str, value: str) -> bytes:
    raw = utf16(value)
    head = bytes([len(name)]) + utf16(name) + b"\x00"
    return (
        head
        + bytes([0xE7])
        + struct.pack("<H", 8000)
        + b"\x09\x04\xd0\x00\x34"
        + struct.pack("<H", len(raw))
        + raw
    )


async def test_two_rpcs_in_one_message(client: RawClient) -> None:
    first = rpc_by_id(10, nvarchar_param("@stmt", "COUNT 3"))
    second = rpc_by_id(10, nvarchar_param("@stmt", "COUNT 4"))
    with trio.fail_after(10):
        reply = await client.request(0x03, all_headers() + first + b"\xff" + second)
    # DONE_RPCINBATCH (0x80) on the DONEPROC of every RPC but the last (MS-TDS 2.2.7.8)
    assert reply.dones == [
        (DONEINPROC, 0x11, 3),
        (DONEPROC, 0x81, 0),
        (DONEINPROC, 0x11, 4),
        (DONEPROC, 0x00, 0),
    ]


async def test_the_rpc_after_a_failed_one_still_runs(client: RawClient) -> None:
    """As SQL Server: a non-fatal error in one RPC of a batch ends that RPC (ERROR, DONEPROC with
    DONE_ERROR), and the next RPC of the same message runs."""
    first = rpc_by_id(10, nvarchar_param("@stmt", "FAIL 15664"))
    second = rpc_by_id(10, nvarchar_param("@stmt", "COUNT 4"))
    with trio.fail_after(10):
        reply = await client.request(0x03, all_headers() + first + b"\xff" + second)
    assert reply.errors == [15664]
    assert reply.dones[-2:] == [(DONEINPROC, 0x11, 4), (DONEPROC, 0x00, 0)]
    failed = [d for d in reply.dones[:-2] if d[0] == DONEPROC]
    assert failed == [(DONEPROC, 0x83, 0)]  # MORE | ERROR | RPCINBATCH


async def test_malformed_rpc_is_an_error_not_a_disconnect(client: RawClient) -> None:
    truncated = rpc_by_id(10, nvarchar_param("@stmt", "COUNT 3"))[:-5]
    with trio.fail_after(10):
        reply = await client.request(0x03, all_headers() + truncated)
        after = await client.request(0x01, sql_batch("COUNT 2"))
    assert reply.errors == [8009]
    assert after.dones == [(DONE, 0x10, 2)]


async def test_unknown_proc_id_and_cursor_procs(client: RawClient) -> None:
    with trio.fail_after(10):
        cursor = await client.request(0x03, all_headers() + rpc_by_id(2, b""))
    assert cursor.errors == [2812]
    assert cursor.dones[-1][0] == DONEPROC
    assert cursor.dones[-1][1] & 0x02


async def test_garbage_instead_of_prelogin(server: tuple[TdsServer, StandinEngine]) -> None:
    srv, _ = server
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream(srv.host, srv.port)
        await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert await stream.receive_some(100) == b""  # closed, not hung
        await stream.aclose()
        # and the server still serves
        ok = await RawClient.connect(srv.host, srv.port, "alice", "pw-alice")
        reply = await ok.request(0x01, sql_batch("COUNT 1"))
        await ok.aclose()
    assert reply.dones == [(DONE, 0x10, 1)]


def ntext_param(value: str) -> bytes:
    """An unnamed NTEXT parameter, as FreeTDS ODBC sends statements and declarations."""
    raw = utf16(value)
    return (
        b"\x00\x00"
        + bytes([0x63])
        + struct.pack("<I", 0x7FFFFFFF)
        + b"\x09\x04\xd0\x00\x34"
        + (struct.pack("<i", len(raw)) + raw)
    )


def int_param(value: int | None, *, output: bool = False) -> bytes:
    body = b"\x00" if value is None else b"\x04" + struct.pack("<i", value)
    return b"\x00" + (b"\x01" if output else b"\x00") + bytes([0x26, 4]) + body


async def test_prepexec_with_ntext_and_unnamed_params(
    client: RawClient, server: tuple[TdsServer, StandinEngine]
) -> None:
    """sp_prepexec (13) the FreeTDS ODBC way: NTEXT @params/@stmt, parameters without names
    (named from the declaration), the handle back as RETURNVALUE; then sp_execute (12) by handle."""
    _, engine = server
    params = (
        int_param(None, output=True)
        + ntext_param("@P1 int,@P2 int")
        + ntext_param("COUNT 3")
        + int_param(7)
        + int_param(None)
    )
    with trio.fail_after(10):
        reply = await client.request(0x03, all_headers() + rpc_by_id(13, params))
        assert reply.errors == []
        assert len(reply.returns) == 1
        handle = reply.returns[0][1]
        again = await client.request(
            0x03, all_headers() + rpc_by_id(12, int_param(handle) + int_param(8) + int_param(9))
        )
    assert reply.dones == [(DONEINPROC, 0x11, 3), (DONEPROC, 0x00, 0)]
    assert again.errors == []
    session = engine.sessions[0]
    assert session.executed == ["COUNT 3", "COUNT 3"]
    assert [(p.name, str(p.type), p.value) for p in session.params[0]] == [
        ("@P1", "int", 7),
        ("@P2", "int", None),
    ]
    assert [p.value for p in session.params[1]] == [8, 9]


async def test_client_vanishing_mid_statement_cancels_it(
    server: tuple[TdsServer, StandinEngine],
) -> None:
    srv, engine = server
    with trio.fail_after(10):
        raw = await RawClient.connect(srv.host, srv.port, "alice", "pw-alice")
        await raw.send(0x01, sql_batch("SLEEP"))
        await wait_until(lambda: bool(engine.sessions and engine.sessions[0].executed))
        await raw.aclose()
        await wait_until(lambda: any(e["statement"] == "SLEEP" for e in srv.statement_log.entries))
    entry = next(e for e in srv.statement_log.entries if e["statement"] == "SLEEP")
    assert entry["outcome"] == {"cancelled": True}


async def test_transaction_envchanges(client: RawClient) -> None:
    """ENVCHANGE 8 (begin), 9 (commit), 10 (rollback), from T-SQL and from TM requests, and
    the INXACT bit on DONE while a transaction is open."""
    tm_begin = all_headers() + struct.pack("<HBB", 5, 0, 0)
    tm_commit = all_headers() + struct.pack("<HBB", 7, 0, 0)
    tm_rollback_and_begin = all_headers() + struct.pack("<HBBBB", 8, 0, 1, 0, 0)
    with trio.fail_after(10):
        begin = await client.request(0x01, sql_batch("BEGIN"))
        inside = await client.request(0x01, sql_batch("COUNT 1"))
        rollback = await client.request(0x01, sql_batch("ROLLBACK"))
        tm_b = await client.request(0x0E, tm_begin)
        tm_c = await client.request(0x0E, tm_commit)
        tm_b2 = await client.request(0x0E, tm_begin)
        tm_rb = await client.request(0x0E, tm_rollback_and_begin)
    assert begin.envchanges == [8]
    assert inside.dones == [(DONE, 0x10 | 0x04, 1)]
    assert rollback.envchanges == [10]
    assert (tm_b.envchanges, tm_c.envchanges, tm_b2.envchanges) == ([8], [9], [8])
    assert tm_rb.envchanges == [10, 8]  # rolled back, and the next one begun
    assert tm_rb.dones == [(DONE, 0x04, 0)]


def temporal_param(name: str, type_id: int, value: bytes) -> bytes:
    """A TIMEN (0x29) / DATETIME2N (0x2A) / DATETIMEOFFSETN (0x2B) parameter at scale 7."""
    head = bytes([len(name)]) + utf16(name) + b"\x00"
    return head + bytes([type_id, 7, len(value)]) + value


async def test_7_digit_temporal_parameters_keep_the_100ns_digit(
    client: RawClient, server: tuple[TdsServer, StandinEngine]
) -> None:
    _, engine = server
    units = (13 * 3600 + 14 * 60 + 15) * 10_000_000 + 1_234_567  # 13:14:15.1234567
    time7 = units.to_bytes(5, "little")
    day = (738_944).to_bytes(3, "little")  # 2024-02-29 (days since 0001-01-01)
    offset = struct.pack("<h", 330)  # +05:30
    params = (
        nvarchar_param("@stmt", "COUNT 1")
        + nvarchar_param("@params", "@t time(7),@d datetime2(7),@o datetimeoffset(7)")
        + temporal_param("@t", 0x29, time7)
        + temporal_param("@d", 0x2A, time7 + day)
        + temporal_param("@o", 0x2B, time7 + day + offset)
    )
    with trio.fail_after(10):
        reply = await client.request(0x03, all_headers() + rpc_by_id(10, params))
    assert reply.errors == []
    t, d, o = (p.value for p in engine.sessions[0].params[0])
    assert (t.microsecond, t.nanosecond_100) == (123456, 7)  # type: ignore[attr-defined]
    assert (d.isoformat(), d.nanosecond_100) == (  # type: ignore[attr-defined]
        "2024-02-29T13:14:15.123456",
        7,
    )
    assert (o.hour, o.minute, o.microsecond, o.nanosecond_100) == (18, 44, 123456, 7)  # type: ignore[attr-defined]
