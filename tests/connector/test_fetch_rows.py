"""connector/_tdsread.py `fetch_rows`: the rows python-tds's ``cursor.fetchmany`` returns.

Two ways, both against python-tds 1.17.1 as it is:

- token streams built here (a COLMETADATA of any mix of column types, ROW and NBCROW tokens with
  NULLs, sizes python-tds refuses, now and then another COLMETADATA with no DONE before it, then
  DONE; some cut short), cut into TDS packets of any size: read in batches by python-tds's
  cursor and by `fetch_rows`, the rows (values and their types), the failure, the row count and
  the reader's position after each batch are the same;
- tdslite's answers for every column type it has, spanning many packets: the same rows, most of
  them read without python-tds's ``fetchone``.
"""

from __future__ import annotations

import struct
from typing import Any

import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pytds import tds_base
from pytds.cursor import NonMarsCursor
from pytds.tds_session import _TdsSession

from connector import _tdsread, _tdstypes
from connector.execute import connection_cursor
from tests.connector.test_tds_reader import _packets, _Socket
from tests.support.e2e_stack import admin_connection

#: SQL_Latin1_General_CP1_CI_AS: python-tds decodes varchar in it as cp1252
_COLLATION = bytes.fromhex("0904d00034")


def _intn(size: int) -> Any:
    """The values of an integer of ``size`` bytes (one byte: tinyint, unsigned)."""
    if size == 1:
        return st.integers(0, 255)
    return st.integers(-(1 << (8 * size - 1)), (1 << (8 * size - 1)) - 1)


#: name -> (TYPE_INFO, nullable, the values' strategy, how a value is written (not NULL))
_TYPES: dict[str, tuple[bytes, bool, Any, Any]] = {
    **{
        f"intn{n}": (
            bytes([0x26, n]),
            True,
            _intn(n),
            lambda v, n=n: bytes([n]) + v.to_bytes(n, "little", signed=n > 1),
        )
        for n in (1, 2, 4, 8)
    },
    **{
        name: (bytes([code]), False, _intn(n), lambda v, n=n: v.to_bytes(n, "little", signed=n > 1))
        for name, code, n in (
            ("tinyint", 0x30, 1),
            ("smallint", 0x34, 2),
            ("int", 0x38, 4),
            ("bigint", 0x7F, 8),
        )
    },
    "bitn": (b"\x68\x01", True, st.integers(0, 255), lambda v: bytes([1, v])),
    "bit": (b"\x32", False, st.integers(0, 255), lambda v: bytes([v])),
    "floatn4": (b"\x6d\x04", True, st.floats(width=32), lambda v: b"\x04" + struct.pack("<f", v)),
    "floatn8": (b"\x6d\x08", True, st.floats(), lambda v: b"\x08" + struct.pack("<d", v)),
    "real": (b"\x3b", False, st.floats(width=32), lambda v: struct.pack("<f", v)),
    "float": (b"\x3e", False, st.floats(), lambda v: struct.pack("<d", v)),
    "nvarchar": (
        b"\xe7\x40\x1f" + _COLLATION,
        True,
        st.text(max_size=120),
        lambda v: struct.pack("<H", len(v.encode("utf-16-le"))) + v.encode("utf-16-le"),
    ),
    "varchar": (
        b"\xa7\x40\x1f" + _COLLATION,
        True,
        st.text(st.characters(codec="cp1252"), max_size=120),
        lambda v: struct.pack("<H", len(v.encode("cp1252"))) + v.encode("cp1252"),
    ),
    # read by its own serializer (a MAX column's is, too: tdslite's answers below have one)
    "datetimen": (
        b"\x6f\x08",
        True,
        st.tuples(st.integers(-53690, 2958463), st.integers(0, 300 * 86400 - 1)),
        lambda v: b"\x08" + struct.pack("<iI", *v),
    ),
}

#: what a NULL is in a ROW token, per type (fixed-size types have none: NBCROW only)
_NULLS = {"nvarchar": b"\xff\xff", "varchar": b"\xff\xff"}


def _colmetadata(types: list[str]) -> bytes:
    out = b"\x81" + struct.pack("<h", len(types))
    for i, name in enumerate(types):
        type_info, nullable, _, _ = _TYPES[name]
        column = f"c{i}".encode("utf-16-le")
        out += struct.pack("<IH", 0, 1 if nullable else 0) + type_info
        out += bytes([len(column) // 2]) + column
    return out


_DONE = b"\xfd" + struct.pack("<HHQ", 0x10, 0xC1, 0)


@st.composite
def _streams(draw: Any) -> bytes:
    """A result's token stream: COLMETADATA, rows (ROW or NBCROW, NULLs), maybe a size python-tds
    refuses or a cut, DONE."""
    types = draw(st.lists(st.sampled_from(sorted(_TYPES)), min_size=1, max_size=6))
    out = _colmetadata(types)
    for _ in range(draw(st.integers(0, 25))):
        if draw(st.integers(0, 40)) == 0:  # another result's columns, no DONE between
            types = draw(st.lists(st.sampled_from(sorted(_TYPES)), min_size=1, max_size=6))
            out += _colmetadata(types)
        nbc = draw(st.booleans())
        values = []
        for name in types:
            _, nullable, strategy, _ = _TYPES[name]
            can_null = nbc or nullable  # NBCROW's bitmap: any column; ROW: a nullable type's
            values.append(None if can_null and draw(st.booleans()) else draw(strategy))
        if nbc:
            bitmap = bytearray((len(types) + 7) // 8)
            for i, v in enumerate(values):
                if v is None:
                    bitmap[i >> 3] |= 1 << (i & 7)
            out += b"\xd2" + bytes(bitmap)
        else:
            out += b"\xd1"
        for name, v in zip(types, values, strict=True):
            if v is None and nbc:
                continue
            out += _NULLS.get(name, b"\x00") if v is None else _TYPES[name][3](v)
        if draw(st.integers(0, 30)) == 0:  # a size byte no serializer takes
            out += bytes([draw(st.sampled_from([3, 5, 7, 9, 200]))])
    out += _DONE
    if draw(st.integers(0, 10)) == 0:  # cut short: the response ends there
        out = out[: draw(st.integers(0, len(out)))]
    return out


def _typed(rows: list[Any]) -> list[Any]:
    """Rows with each value's type (1 and True, 0.0 and -0.0 differ)."""
    return [[(type(v).__name__, repr(v)) for v in row] for row in rows]


def _read(conn: Any, data: bytes, room: int, piece: int, batch: int, fast: bool) -> list[Any]:
    """Every batch of the stream's result (python-tds's cursor, or `fetch_rows`), with the
    result's row count and the reader's position after it; the failure that ended it, if any."""
    tds = conn._tds_socket
    # a session of the connection over the stream, as python-tds makes one (create_session)
    sess = _TdsSession(
        tds=tds,
        transport=_Socket(_packets(data, room), piece),
        tzinfo_factory=tds._tzinfo_factory,
        row_strategy=tds._row_strategy,
        bufsize=tds.bufsize,
        env=tds.env,
    )
    sess.set_state(tds_base.TDS_QUERYING)  # what sending a request does
    sess.set_state(tds_base.TDS_PENDING)
    if fast:
        _tdsread.install(sess)
    cursor = NonMarsCursor(connection=conn, session=sess)
    out: list[Any] = []
    try:
        sess.begin_response()
        sess.find_result_or_done()
        while True:
            rows = _tdsread.fetch_rows(sess, batch) if fast else cursor.fetchmany(batch)
            r = sess._reader
            info = sess.res_info
            out.append((_typed(rows), info and info.row_count, r._pos, r._size, r._status))
            if not rows:
                return out
    except Exception as exc:  # python-tds's failure: the same one both ways
        out.append(("raised", type(exc).__name__, str(exc)))
        return out


async def test_built_streams_read_as_python_tds_reads_them(server: Any) -> None:
    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(
        data=_streams(),
        room=st.integers(8, 600),
        piece=st.integers(1, 4096),
        batch=st.integers(1, 9),
    )
    def check(data: bytes, room: int, piece: int, batch: int) -> None:
        got = []
        for fast in (False, True):
            # a connection each: python-tds closes its connection on a stream it refuses
            conn = admin_connection(server)
            try:
                got.append(_read(conn, data, room, piece, batch, fast))
            finally:
                conn.close()
        assert got[1] == got[0]

    await trio.to_thread.run_sync(check)


#: every column type tdslite answers, NULLs of each, over many packets (ROW tokens; values
#: straddle the packets' boundaries)
_ALL_TYPES = (
    "SELECT i, CAST(i % 256 AS tinyint) AS t, CAST(i - 500 AS smallint) AS s, "
    "CAST(i AS bigint) * 4000000000 AS b, CAST(i % 2 AS bit) AS flag, "
    "CAST(i AS float) / 7 AS f, CAST(i AS real) / 3 AS r, CAST(i AS decimal(12, 3)) / 8 AS d, "
    "CAST(i AS money) / 3 AS m, REPLICATE(N'\u00e9\U0001f600x', i % 60) AS nv, "
    "REPLICATE('ab', i % 90) AS v, CAST(REPLICATE(N'z', i % 5) AS nvarchar(max)) AS nmax, "
    "CAST(CAST(i AS varchar(10)) AS varbinary(10)) AS vb, DATEADD(day, i, CAST('2020-01-01' AS "
    "datetime2)) AS dt2, DATEADD(minute, i, CAST('2020-01-01' AS datetime)) AS dt, "
    "CAST(DATEADD(day, i, '2020-01-01') AS date) AS dd, "
    "CASE WHEN i % 7 = 0 THEN NULL ELSE i END AS maybe_int, "
    "CASE WHEN i % 5 = 0 THEN NULL ELSE N'text' END AS maybe_text, "
    "CASE WHEN i % 3 = 0 THEN NULL ELSE CAST(i AS float) END AS maybe_float, "
    "CASE WHEN i % 4 = 0 THEN NULL ELSE CAST(1 AS bit) END AS maybe_bit "
    "FROM (SELECT a.n * 100 + b.n * 10 + c.n + 1 AS i "
    "FROM d AS a CROSS JOIN d AS b CROSS JOIN d AS c) AS n ORDER BY i; SELECT 7 AS after"
)


async def test_tdslite_answers_are_the_same_and_mostly_read_without_fetchone(
    server: Any,
) -> None:
    def run(fast: bool) -> tuple[list[Any], int]:
        conn = admin_connection(server)
        try:
            _tdstypes.install(conn)  # as the connector's connections are
            cursor = connection_cursor(conn)
            _tdsread.install(cursor._session)
            sess = cursor._session
            calls = 0
            fetchone = sess.fetchone

            def counted() -> Any:
                nonlocal calls
                calls += 1
                return fetchone()

            sess.fetchone = counted
            cursor.execute(_ALL_TYPES)
            sets = []
            while True:
                names = [d[0] for d in cursor.description]
                rows: list[Any] = []
                while batch := (_tdsread.fetch_rows(sess, 64) if fast else cursor.fetchmany(64)):
                    rows.extend(batch)
                sets.append((names, _typed(rows), cursor.rowcount))
                if not cursor.nextset():
                    return sets, calls
        finally:
            conn.close()

    plain, plain_calls = await trio.to_thread.run_sync(run, False)
    fast, fast_calls = await trio.to_thread.run_sync(run, True)
    assert len(plain[0][1]) == 1000
    assert [v for _, v in plain[0][1][6][:2]] == ["7", "7"]  # what was read is the data
    assert plain[1][1] == [[("int", "7")]]
    assert fast == plain
    assert plain_calls > 1000
    # a row in the next packet or the result's end goes through fetchone: few of them
    assert fast_calls < plain_calls / 4, (fast_calls, plain_calls)
