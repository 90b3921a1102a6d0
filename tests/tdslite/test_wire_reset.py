"""tdslite wire: the request a pooling client sends before each query (RESETCONNECTION on its
first packet, then ONE RPC request holding the sp_set_session_context batch and the statement, as
the edgetds connector sends it through python-tds) resets whatever the connection held before the
statement runs, and the context it sets is the one the statement sees; and each RPC request is
parsed once (the inline check's parse is reused) without ever answering one request with another's
calls."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import pytest
from pytds import tds_base

from connector.encode import BoundParam
from connector.execute import CONTEXT_KEYS, reset_connection_flag, send_context_with
from tdslite import StatementLog, TdsServer
from tdslite.engine import Engine, load_users
from tdslite.server import _dispatch
from tdslite.server._connection import Connection
from tdslite.server._dispatch import Dispatcher
from tdslite.server._packets import Message, PacketType
from tdslite.server._reply import Reply
from tdslite.server._requests import Request, SessionState
from tests.tdslite._tds_helpers import PASSWORDS, in_thread, pytds_connect
from tests.tdslite._tds_raw import all_headers

#: what the statement reports of the session it runs in
PROBE = (
    "SELECT @@TRANCOUNT AS tc, @@DATEFIRST AS df, @@ERROR AS err, "
    "SESSION_CONTEXT(N'edgetds.sub') AS sub, SESSION_CONTEXT(N'other') AS other, "
    "(SELECT COUNT(*) FROM kept) AS kept"
)


def one_request(cursor: Any, sub: str) -> tuple[Any, ...]:
    """The connector's one-request form: reset + context + PROBE; PROBE's row."""
    ctx = [BoundParam(f"@c{i}", "nvarchar(4000)", v) for i, v in enumerate((sub, "iss", "q"))]
    sess = cursor._session
    with reset_connection_flag(sess):
        send_context_with(sess, ctx, PROBE, [])
    sess.find_result_or_done()
    row = tuple(cursor.fetchone())
    while cursor.nextset():
        pass
    return row


def pooled_connection_life(server: TdsServer) -> list[Any]:
    seen: list[Any] = []
    with (
        pytds_connect(server, "admin") as conn,
        conn.cursor() as cur,
    ):
        cur.execute("CREATE TABLE kept (a int); INSERT INTO kept VALUES (1)")
        seen.append(one_request(cur, "first"))
        # whatever the last user of the pooled connection left behind ...
        cur.execute(
            "CREATE TABLE #t (a int); SET DATEFIRST 1;"
            "EXEC sp_set_session_context @key = N'other', @value = N'left', @read_only = 1"
        )
        cur.execute("BEGIN TRANSACTION; INSERT INTO kept VALUES (2)")
        seen.append(one_request(cur, "second"))  # ... the reset takes away
        try:
            cur.execute("SELECT a FROM #t")
        except tds_base.Error as exc:
            seen.append(exc.msg_no)
        try:
            cur.execute("SELECT 1/0")
        except tds_base.Error as exc:
            seen.append(exc.msg_no)
        seen.append(one_request(cur, "third"))  # @@ERROR as new
        seen.append(one_request(cur, "fourth"))  # nothing left: the same answer
    return seen


async def test_the_reset_in_front_of_a_context_and_statement_clears_the_session(
    tds_server: TdsServer,
) -> None:
    seen = await in_thread(pooled_connection_life, tds_server)
    assert seen == [
        (0, 7, 0, "first", None, 1),
        (0, 7, 0, "second", None, 1),  # no transaction, DATEFIRST, key or uncommitted row left
        208,  # the #table is gone
        8134,
        (0, 7, 0, "third", None, 1),
        (0, 7, 0, "fourth", None, 1),
    ]
    assert len(CONTEXT_KEYS) == 3


# --- the inline check's parse, reused by the RPC handler -------------------------------------


def executesql(sql: str) -> bytes:
    """An RPC request payload: one sp_executesql (by ProcID) of ``sql``, without parameters."""
    text = sql.encode("utf-16-le")
    stmt = b"\x00\x00" + bytes([0xE7]) + struct.pack("<H", 8000) + bytes(5)
    stmt += struct.pack("<H", len(text)) + text
    return all_headers() + struct.pack("<HHH", 0xFFFF, 10, 0) + stmt


@pytest.mark.parametrize("same_bytes", [False, True], ids=["other-request", "equal-copy"])
def test_a_request_is_never_answered_with_the_calls_of_the_one_checked_before(
    tmp_path: Path, tds_users_file: Path, same_bytes: bool
) -> None:
    log = StatementLog()
    engine = Engine(tmp_path / "parse.sqlite", load_users(tds_users_file))
    try:
        session = engine.open_session(engine.authenticate("admin", PASSWORDS["admin"]))
        dispatcher = Dispatcher(
            SessionState(session=session, connection_id=1, login="admin", statement_log=log)
        )
        checked = Message(PacketType.RPC, 0x01, executesql("SELECT 1 AS checked"))
        payload = checked.payload if same_bytes else executesql("SELECT 2 AS answered")
        answered = Message(PacketType.RPC, 0x01, bytes(bytearray(payload)))  # a new object
        assert not dispatcher.runs_inline(checked, 0x74000004)
        request = Request(Reply(packet_size=4096, spid=1, tds_version=0x74000004))
        Connection._dispatch(dispatcher, request, answered)
        want = "SELECT 1 AS checked" if same_bytes else "SELECT 2 AS answered"
        assert log.statements() == [want]
        assert log.entries[-1]["outcome"] == {"rows": 1, "affected": 0}
        # and the message checked is answered with its own calls, parsed once
        request = Request(Reply(packet_size=4096, spid=1, tds_version=0x74000004))
        assert not dispatcher.runs_inline(checked, 0x74000004)
        Connection._dispatch(dispatcher, request, checked)
        assert log.statements()[-1] == "SELECT 1 AS checked"
    finally:
        engine.close()


async def test_each_rpc_request_is_parsed_once(
    tds_server: TdsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The inline check and the RPC handler share one parse of a request (a request of two
    RPCs, the connector's context and statement, costs one parse, not two)."""
    parsed: list[int] = []
    real_parse = _dispatch._rpc.parse

    def parse(payload: bytes, **kw: Any) -> Any:
        parsed.append(len(payload))
        return real_parse(payload, **kw)

    monkeypatch.setattr(_dispatch._rpc, "parse", parse)

    def queries() -> list[Any]:
        with pytds_connect(tds_server) as conn, conn.cursor() as cur:
            cur.execute("CREATE TABLE kept (a int); INSERT INTO kept VALUES (1)")  # a batch
            parsed.clear()
            rows = [one_request(cur, f"user{i}") for i in range(3)]
            cur.execute("SELECT %s AS n", (5,))  # python-tds: one sp_executesql RPC
            rows.append(tuple(cur.fetchone()))
            return rows

    rows = await in_thread(queries)
    assert rows == [(0, 7, 0, f"user{i}", None, 1) for i in range(3)] + [(5,)]
    assert len(parsed) == 4
