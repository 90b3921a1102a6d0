"""A query's answers read from the Trio thread (connector/_tdsio.py, connector/execute.py
`_begin_here`), against a real tdslite over plaintext TCP and over TLS:

- a small answer takes no worker-thread call, on a new and on a reused connection, the session
  context and the statement in one request or in two, or a session's statement alone, and gives
  the same bytes each way;
- a long answer is read on, and parsed, in the worker thread, every row exact, and the
  connection's next small answer again takes no worker-thread call;
- a Trio cancellation while the answer is awaited leaves the connection broken, never reused;
- a read past the answer raises, never blocks; an answer that is no TDS message (a short packet,
  bytes after its end, a closed connection) raises."""

from __future__ import annotations

import dataclasses
import json
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import trio
import trio.testing
import trustme
from pytds import tds_base

import tdslite
from connector import _tdsio
from connector.config import DatabaseConfig, LoginConfig
from connector.execute import ExecRequest, execute, execute_pinned
from connector.pool import LoginPool
from connector.results import CancelToken
from tdslite import StatementLog
from tests.support.e2e_stack import SETUP_SQL, TDSLITE_USERS, admin_batch
from tests.support.sinks import CollectSink
from tests.support.waiting import eventually

SLOW = "SELECT COUNT(*) AS c FROM d a, d b, d c, d e, d f, d g, d h, d i, d j"
#: 10,000 rows of four ints: about 200 KB of TDS, past the 64 KiB read from the Trio thread
LONG = "SELECT a.n AS a, b.n AS b, c.n AS c, e.n AS e FROM d a, d b, d c, d e ORDER BY a, b, c, e"
SMALL = "SELECT n, n * 2 AS twice FROM d WHERE n < 3 ORDER BY n"


@pytest.fixture(params=["plaintext", "tls"])
def tls(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, str]]:
    """{} for plaintext TCP; else tdslite's certificate and key and the CA to trust (trustme)."""
    if request.param == "plaintext":
        yield {}
        return
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", common_name="localhost")
    files = {"ca": tmp_path / "ca.pem", "cert": tmp_path / "cert.pem", "key": tmp_path / "k.pem"}
    ca.cert_pem.write_to_path(str(files["ca"]))
    for i, pem in enumerate(cert.cert_chain_pems):
        pem.write_to_path(str(files["cert"]), append=bool(i))
    cert.private_key_pem.write_to_path(str(files["key"]))
    yield {name: str(path) for name, path in files.items()}


@asynccontextmanager
async def pool_of_one(
    tmp_path: Path, tls: dict[str, str], log: StatementLog | None = None
) -> AsyncIterator[LoginPool]:
    """A fresh tdslite (TLS when ``tls`` names files) with SETUP_SQL's tables, and a pool of ONE
    reader connection to it."""
    users = tmp_path / "users.toml"
    users.write_text(TDSLITE_USERS)
    async with tdslite.open_server(
        users=users, statement_log=log, tls_cert=tls.get("cert"), tls_key=tls.get("key")
    ) as server:
        await trio.to_thread.run_sync(admin_batch, server, SETUP_SQL)
        db = DatabaseConfig(
            host="localhost" if tls else server.host,
            port=server.port,
            database=server.engine.database,
            logins={"reader": LoginConfig("reader", "reader", "reader-pw", pool_size=1)},
            cafile=tls.get("ca", ""),
            validate_host=bool(tls),
        )
        pool = LoginPool(db, db.logins["reader"], query_timeout_s=30)
        try:
            yield pool
        finally:
            await pool.aclose()


def _req(sql: str, *, one: bool = True) -> ExecRequest:
    context = {"edgetds.sub": "alice", "edgetds.iss": "https://idp", "edgetds.query_id": "q"}
    return ExecRequest(query_id="q", sql=sql, params=[], context=context, one_request=one)


async def _run(pool: LoginPool, sql: str, *, one: bool = True) -> bytes:
    sink = CollectSink()
    await execute(pool, _req(sql, one=one), sink, CancelToken())
    return sink.data


async def test_a_small_answer_takes_no_worker_thread_call(
    tmp_path: Path, tls: dict[str, str], worker_calls: list[int]
) -> None:
    with trio.fail_after(60):
        async with pool_of_one(tmp_path, tls) as pool:
            # the first on a new connection, the others reused (RESETCONNECTION); the session
            # context and the statement in one request, and in two
            one = [await _run(pool, SMALL) for _ in range(3)]
            two = [await _run(pool, SMALL, one=False) for _ in range(3)]
            async with pool.borrow() as pc:
                assert pc.encrypted == bool(tls)
                alone = CollectSink()  # as a session's statement: no reset, no context
                req = dataclasses.replace(_req(SMALL), setup=False)
                await execute_pinned(pool, pc, req, alone, CancelToken())
            assert worker_calls == []
            assert pool.statistics().opened == 1
    assert one == two == [alone.data] * 3
    rows = [json.loads(line) for line in one[0].splitlines()[1:]]
    assert rows == [[0, 0], [1, 2], [2, 4]]


async def test_a_long_answer_is_read_on_in_the_worker_thread(
    tmp_path: Path, tls: dict[str, str], worker_calls: list[int]
) -> None:
    with trio.fail_after(120):
        async with pool_of_one(tmp_path, tls) as pool:
            data = await _run(pool, LONG)
            assert worker_calls  # the rest of the answer, and the chunks after the first
            worker_calls.clear()
            assert await _run(pool, SMALL) == await _run(pool, SMALL, one=False)
            assert worker_calls == []
            assert pool.statistics().opened == 1
    rows = [json.loads(line) for line in data.splitlines()[1:]]
    expected = [
        [a, b, c, e] for a in range(10) for b in range(10) for c in range(10) for e in range(10)
    ]
    assert rows == expected


async def test_a_cancel_while_the_answer_is_awaited_discards_the_connection(
    tmp_path: Path, tls: dict[str, str], worker_calls: list[int]
) -> None:
    log = StatementLog()
    with trio.fail_after(60):
        async with pool_of_one(tmp_path, tls, log) as pool:
            await _run(pool, SMALL)
            with trio.CancelScope() as scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_run, pool, SLOW)
                    await eventually(lambda: SLOW in log.running.values())
                    [pc] = pool._in_use
                    assert pc.busy  # awaiting the answer, in the Trio thread
                    assert worker_calls == []
                    scope.cancel()
            assert pc.broken
            assert await _run(pool, SMALL) == await _run(pool, SMALL, one=False)
            stats = pool.statistics()
            assert (stats.opened, stats.discarded) == (2, 1)


# ------------------------------------------------------------------ the answer as bytes


class _Original:
    """A transport that hands out what it was given, and says when it was read."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.reads = 0

    def recv_into(self, buffer: Any, size: int = 0, flags: int = 0) -> int:
        self.reads += 1
        n = min(size or len(buffer), len(self.data))
        buffer[:n] = self.data[:n]
        self.data = self.data[n:]
        return n


def test_a_read_past_the_answer_raises_when_strict_and_reads_on_when_not() -> None:
    original = _Original(b"more")
    reader = SimpleNamespace(_transport=None)
    buffered = _tdsio.Buffered(reader, bytearray(b"answer"), original)
    reader._transport = buffered
    buffered.strict = True
    out = bytearray(16)
    assert buffered.recv_into(memoryview(out), 4) == 4
    assert buffered.recv_into(memoryview(out)[4:], 10) == 2
    assert bytes(out[:6]) == b"answer"
    with pytest.raises(tds_base.InterfaceError, match="past the end"):
        buffered.recv_into(memoryview(out), 4)
    assert original.reads == 0
    buffered.release()  # every byte served: the reader's own transport is back
    assert reader._transport is original
    buffered.strict = False
    assert buffered.recv_into(memoryview(out), 4) == 4
    assert bytes(out[:4]) == b"more"


def _packet(payload: bytes, *, eom: bool, length: int | None = None) -> bytes:
    size = len(payload) + 8 if length is None else length
    return bytes([4, 1 if eom else 0]) + size.to_bytes(2, "big") + b"\0\0\1\0" + payload


async def _exchange(answer: bytes, *, close: bool = False, limit: int = 1 << 16) -> bool:
    """`Link.exchange` of a request on one end of a socket pair; the other end's answer is
    waiting for it (a socket pair holds it)."""
    ours, theirs = socket.socketpair()
    with ours, theirs:
        ours.settimeout(5.0)
        reader = SimpleNamespace(_transport=ours)
        link = _tdsio.Link(SimpleNamespace(_reader=reader), ours, ours, None)
        theirs.sendall(answer)
        if close:
            theirs.shutdown(socket.SHUT_WR)
        complete = await link.exchange(b"request", limit)
        assert theirs.recv(100) == b"request"
        assert ours.gettimeout() == 5.0  # the socket is as python-tds left it
        assert reader._transport is link.buffered
        return complete


async def test_the_answer_is_read_to_the_packet_with_eom() -> None:
    two = _packet(b"a" * 10, eom=False) + _packet(b"b" * 10, eom=True)
    assert await _exchange(two) is True
    # more than the limit, and no EOM yet: the rest is read in the worker thread
    assert await _exchange(_packet(b"a" * 30, eom=False), limit=20) is False


@pytest.mark.parametrize(
    ("answer", "close", "error"),
    [
        (_packet(b"", eom=True, length=4), False, "a TDS packet of 4 bytes"),
        (_packet(b"x", eom=True) + b"extra", False, "bytes after the end"),
        (_packet(b"x", eom=False), True, None),
    ],
    ids=["short packet", "bytes after EOM", "closed before EOM"],
)
async def test_an_answer_that_is_no_tds_message_raises(
    answer: bytes, close: bool, error: str | None
) -> None:
    with trio.fail_after(10), pytest.raises(tds_base.InterfaceError, match=error) as info:
        await _exchange(answer, close=close)
    if close:
        assert isinstance(info.value, tds_base.ClosedConnectionError)
