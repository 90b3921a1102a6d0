"""connector/_tdsread.py: `FastReader` reads exactly what python-tds's own reader reads.

The same response (cut into TDS packets of any size, received in pieces of any size) is read by
python-tds 1.17.1's ``_TdsReader`` and by a `FastReader` with the same sequence of reads: every
value, every failure at the end of the response, the position and the packet at hand after each
read are the same. And a python-tds connection to tdslite whose reader was installed answers
results that span many packets exactly as a connection without it.
"""

from __future__ import annotations

import struct
from typing import Any

import trio
from hypothesis import given, settings
from hypothesis import strategies as st
from pytds.tds_reader import _TdsReader

from connector import _tdsread
from connector.execute import connection_cursor
from tests.support.e2e_stack import admin_connection

#: TDS packet header: type, status (1: the response's last packet), length (big-endian), SPID,
#: packet id, window
_HEADER = struct.Struct(">BBHHBB")

_READS = (
    "get_byte",
    "get_smallint",
    "get_usmallint",
    "get_int",
    "get_uint",
    "get_uint_be",
    "get_uint8",
    "get_int8",
)


class _Socket:
    """The bytes a server sent, received ``piece`` bytes at most per ``recv_into``."""

    def __init__(self, data: bytes, piece: int) -> None:
        self.data = data
        self.pos = 0
        self.piece = piece

    def recv_into(self, view: memoryview, size: int) -> int:
        n = min(size, self.piece, len(self.data) - self.pos)
        view[:n] = self.data[self.pos : self.pos + n]
        self.pos += n
        return n


def _packets(payload: bytes, room: int) -> bytes:
    """``payload`` as one response of packets with ``room`` payload bytes each (the last
    shorter, with status 1)."""
    chunks = [payload[i : i + room] for i in range(0, len(payload), room)] or [b""]
    out = bytearray()
    for i, chunk in enumerate(chunks):
        last = i == len(chunks) - 1
        out += _HEADER.pack(4, 1 if last else 0, _HEADER.size + len(chunk), 0, (i + 1) % 256, 0)
        out += chunk
    return bytes(out)


def _reader(cls: type, data: bytes, piece: int) -> Any:
    reader = _TdsReader(tds_session=None, transport=_Socket(data, piece), bufsize=4096)
    if cls is not _TdsReader:
        _tdsread.install(type("Session", (), {"_reader": reader})())
        assert type(reader) is _tdsread.FastReader
    reader.begin_response()
    return reader


def _read(reader: Any, name: str) -> tuple[str, Any]:
    try:
        return "value", getattr(reader, name)()
    except Exception as exc:  # the end of the response: python-tds's own failure
        return "raised", type(exc).__name__


@settings(max_examples=300, deadline=None)
@given(
    payload=st.binary(max_size=120),
    room=st.integers(min_value=1, max_value=40),
    piece=st.integers(min_value=1, max_value=64),
    reads=st.lists(st.sampled_from((*_READS, "unpack")), max_size=40),
)
def test_every_read_is_python_tds_own(
    payload: bytes, room: int, piece: int, reads: list[str]
) -> None:
    data = _packets(payload, room)
    plain, fast = _reader(_TdsReader, data, piece), _reader(_tdsread.FastReader, data, piece)
    for name in reads:
        if name == "unpack":
            got = [_read_unpack(r) for r in (plain, fast)]
        else:
            got = [_read(r, name) for r in (plain, fast)]
        assert got[0] == got[1], name
        state = [(r._pos, r._size, r._status, r._transport.pos) for r in (plain, fast)]
        assert state[0] == state[1], name
        if got[0][0] == "raised":
            return  # python-tds leaves the reader where it failed: nothing more to compare


def _read_unpack(reader: Any) -> tuple[str, Any]:
    try:
        return "value", reader.unpack(struct.Struct("<hI"))
    except Exception as exc:
        return "raised", type(exc).__name__


def test_install_is_idempotent_and_keeps_the_reader_state() -> None:
    data = _packets(bytes(range(40)), 16)
    reader = _reader(_TdsReader, data, 64)
    assert reader.get_int() == int.from_bytes(bytes(range(4)), "little")
    session = type("Session", (), {"_reader": reader})()
    for _ in range(2):
        _tdsread.install(session)
        assert type(reader) is _tdsread.FastReader
    assert reader.get_int() == int.from_bytes(bytes(range(4, 8)), "little")


_QUERIES = (
    "SELECT 1 AS a",
    # many rows of every integer width, NULLs and text: the answer spans many packets, and
    # values straddle packet boundaries
    "SELECT i, CAST(i AS bigint) * 4000000000 AS big, CAST(i % 200 AS tinyint) AS tiny, "
    "CAST(i - 500 AS smallint) AS small, CASE WHEN i % 7 = 0 THEN NULL ELSE i END AS maybe, "
    "REPLICATE(N'x', i % 13) AS s FROM (SELECT a.n * 100 + b.n * 10 + c.n + 1 AS i "
    "FROM d AS a CROSS JOIN d AS b CROSS JOIN d AS c) AS n ORDER BY i",
    "SELECT CAST(NULL AS int) AS empty",
)


async def test_answers_over_many_packets_are_the_same(server: Any) -> None:
    def run(conn: Any, fast: bool) -> list[Any]:
        results = []
        for sql in _QUERIES:
            cursor = connection_cursor(conn)
            if fast:
                _tdsread.install(cursor._session)
            assert (type(cursor._session._reader) is _tdsread.FastReader) is fast
            cursor.execute(sql)
            results.append(([d[0] for d in cursor.description], [tuple(r) for r in cursor]))
        return results

    plain_conn = await trio.to_thread.run_sync(admin_connection, server)
    fast_conn = await trio.to_thread.run_sync(admin_connection, server)
    try:
        plain = await trio.to_thread.run_sync(run, plain_conn, False)
        fast = await trio.to_thread.run_sync(run, fast_conn, True)
    finally:
        plain_conn.close()
        fast_conn.close()
    assert len(plain[1][1]) == 1000
    assert fast == plain
