"""tdslite wire: the per-query preamble (sp_set_session_context keys on a request with the
RESETCONNECTION flag, as the edgetds connector sends it through python-tds) is answered on the
event loop without a worker thread, with the same answers as the worker-thread path: the same
SESSION_CONTEXT values, the same 15664 for a read-only key set again without a reset, and the
general path (in a worker thread) for whatever else."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import trio
from pytds import tds_base

from connector.encode import BoundParam
from connector.execute import (
    CONTEXT_KEYS,
    preamble_batch,
    reset_connection_flag,
    run_statement,
    send_context_with,
)
from tdslite import TdsServer, open_server
from tdslite.server import _connection
from tests.tdslite._tds_helpers import in_thread, pytds_connect


@pytest.fixture
def dispatched(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """How each request of tdslite was dispatched: "thread" or "inline"."""
    seen: list[str] = []
    real_dispatch = _connection.Connection._dispatch
    real_run_sync = trio.to_thread.run_sync

    def dispatch(*args: Any) -> None:
        seen.append("call")
        real_dispatch(*args)

    async def run_sync(fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        if fn is dispatch:
            seen.append("thread")
        return await real_run_sync(fn, *args, **kw)

    monkeypatch.setattr(_connection.trio.to_thread, "run_sync", run_sync)
    monkeypatch.setattr(_connection.Connection, "_dispatch", staticmethod(dispatch))
    return seen


def preamble(cursor: Any, values: tuple[str, str, str], *, reset: bool) -> None:
    params = [BoundParam(f"@c{i}", "nvarchar(4000)", v) for i, v in enumerate(values)]
    if reset:
        with reset_connection_flag(cursor._session):
            run_statement(cursor, preamble_batch(), params)
    else:
        run_statement(cursor, preamble_batch(), params)
    while cursor.nextset():
        pass


def session(server: TdsServer) -> tuple[list[Any], int | None]:
    """Three queries as the connector runs them on one pooled connection: (context values seen
    after each, the error number of setting the keys again without a reset)."""
    seen: list[Any] = []
    with (
        pytds_connect(server, "reader") as conn,
        conn.cursor() as cur,
    ):
        for i in range(3):
            preamble(cur, (f"user{i}", "https://idp", f"q{i}"), reset=i > 0)
            columns = ", ".join(f"SESSION_CONTEXT(N'{k}')" for k in CONTEXT_KEYS)
            cur.execute(f"SELECT {columns}")
            seen.append(tuple(cur.fetchone()))
        try:
            preamble(cur, ("mallory", "x", "q9"), reset=False)
        except tds_base.Error as exc:
            return seen, exc.msg_no
    return seen, None


@pytest.fixture
async def logged_server(tmp_path: Path, tds_users_file: Path) -> AsyncIterator[TdsServer]:
    """A server whose statement log is a file: every request takes the worker thread."""
    async with open_server(
        db=tmp_path / "other.sqlite",
        users=tds_users_file,
        statement_log=tmp_path / "statements.jsonl",
    ) as server:
        yield server


async def test_preamble_inline_answers_as_the_worker_thread_does(
    tds_server: TdsServer, logged_server: TdsServer, dispatched: list[str]
) -> None:
    inline = await in_thread(session, tds_server)
    inline_dispatch, dispatched[:] = list(dispatched), []
    threaded = await in_thread(session, logged_server)
    assert inline == threaded
    assert inline[0] == [(f"user{i}", "https://idp", f"q{i}") for i in range(3)]
    assert inline[1] == 15664
    # in memory: the three preambles (the first without reset) ran inline, the rest in threads
    assert inline_dispatch.count("call") - inline_dispatch.count("thread") == 3
    assert dispatched.count("call") == dispatched.count("thread")  # statement log file: none


def logged(server: TdsServer) -> list[dict[str, Any]]:
    """The server's statement-log entries without their time and connection id."""
    drop = ("time", "connection")
    return [{k: v for k, v in e.items() if k not in drop} for e in server.statement_log.entries]


async def test_preamble_inline_logs_as_the_worker_thread_does(
    tds_server: TdsServer, logged_server: TdsServer, dispatched: list[str]
) -> None:
    def one_request(server: TdsServer) -> None:
        """The connector's one-request form, twice: the reset, the preamble and a SELECT."""
        with (
            pytds_connect(server, "reader") as conn,
            conn.cursor() as cur,
        ):
            for i in range(2):
                values = (f"user{i}", "https://idp", f"q{i}")
                params = [BoundParam(f"@c{i}", "nvarchar(4000)", v) for i, v in enumerate(values)]
                with reset_connection_flag(cur._session):
                    send_context_with(
                        cur._session, params, "SELECT @n AS n", [BoundParam("@n", "int", i)]
                    )
                cur._session.find_result_or_done()
                assert cur.fetchall() == [(i,)]
                while cur.nextset():
                    pass

    await in_thread(one_request, tds_server)
    assert dispatched.count("call") > dispatched.count("thread")  # the requests ran inline
    await in_thread(one_request, logged_server)
    inline, threaded = logged(tds_server), logged(logged_server)
    assert inline == threaded
    kinds = [(e["kind"], e["statement"][:4]) for e in inline[-3:]]
    assert kinds == [("reset", "RESE"), ("rpc", "EXEC"), ("rpc", "SELE")]
    assert inline[-2]["params"] == [{"name": f"@c{i}", "type": "nvarchar(4000)"} for i in range(3)]
    assert inline[-2]["outcome"] == {"rows": 0, "affected": 0}


async def test_other_requests_take_the_worker_thread(
    tds_server: TdsServer, dispatched: list[str]
) -> None:
    def run() -> Any:
        with (
            pytds_connect(tds_server, "admin") as conn,
            conn.cursor() as cur,
        ):
            cur.execute("CREATE TABLE #t (a int)")  # a #table: a reset has work to do
            preamble(cur, ("a", "b", "c"), reset=False)
            cur.execute("BEGIN TRANSACTION")  # an open transaction: the reset rolls it back
            preamble(cur, ("a", "b", "c"), reset=True)
            cur.execute("SELECT SESSION_CONTEXT(N'edgetds.sub'), @@TRANCOUNT")
            return tuple(cur.fetchone())

    assert await in_thread(run) == ("a", 0)
    assert dispatched.count("call") == dispatched.count("thread")


# --- the one-request form and SELECTs of values only ---------------------------------------------


def values_queries(server: TdsServer) -> list[Any]:
    """What a pooling client sends per query, then a pool's probe and a SELECT that reads a table:
    the connector's one-request form (reset, the session context and ``SELECT @n AS n`` as two
    RPCs of one request), python-tds's ``SELECT @n AS n``, ``SELECT 1`` and a SELECT of a
    table. Each answer's rows."""
    seen: list[Any] = []
    with (
        pytds_connect(server, "reader") as conn,
        conn.cursor() as cur,
    ):
        for i in range(3):
            ctx = [BoundParam(f"@c{k}", "nvarchar(4000)", f"v{i}") for k in range(3)]
            sql, n = (
                "SELECT @n AS n, SESSION_CONTEXT(N'edgetds.sub') AS s",
                [BoundParam("@n", "int", i)],
            )
            flag = reset_connection_flag(cur._session) if i else contextlib.nullcontext()
            with flag:
                send_context_with(cur._session, ctx, "SELECT @n AS n", n)
            cur._session.find_result_or_done()
            seen.append(cur.fetchall())
            while cur.nextset():
                pass
            run_statement(cur, sql, n)
            seen.append(cur.fetchall())
        run_statement(cur, "SELECT @n AS n", [BoundParam("@n", "nvarchar(10)", "x")])
        seen.append(cur.fetchall())
        cur.execute("SELECT 1 AS one")  # a SQL batch: never inline
        seen.append(cur.fetchall())
        run_statement(
            cur, "SELECT name FROM sys.tables WHERE name = @n", [BoundParam("@n", "int", 1)]
        )
        seen.append(cur.fetchall())
    return seen


async def test_select_of_values_answers_inline_as_the_worker_thread_does(
    tds_server: TdsServer, logged_server: TdsServer, dispatched: list[str]
) -> None:
    inline = await in_thread(values_queries, tds_server)
    inline_dispatch, dispatched[:] = list(dispatched), []
    threaded = await in_thread(values_queries, logged_server)
    assert inline == threaded
    assert inline[:6:2] == [[(0,)], [(1,)], [(2,)]]
    assert inline[6] == [("x",)]
    # in memory: the three one-request queries and the nvarchar SELECT ran inline; the SELECTs
    # with a function, the SQL batch and the SELECT of a catalog view in threads
    assert inline_dispatch.count("call") - inline_dispatch.count("thread") == 4
    assert dispatched.count("call") == dispatched.count("thread")  # statement log file: none
