"""connector/_watchdog.py against a real tdslite, on a clock the test moves past deadlines: one
watchdog task per run stops a query blocked in python-tds (its statement running in tdslite) at
its deadline or on its cancel token, and never acts for a query that has ended (its connection
may already serve the next one)."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import trio
import trio.testing

from connector.execute import ExecRequest, execute
from connector.pool import LoginPool, PooledConnection
from connector.results import CancelToken, QueryFailed
from protocol import ErrorCode
from tdslite import StatementLog
from tests.connector.test_execute_reset import reader_pool
from tests.support.e2e_stack import SETUP_SQL
from tests.support.sinks import CollectSink
from tests.support.waiting import eventually

SLOW = "SELECT COUNT(*) AS c FROM d a, d b, d c, d e, d f, d g, d h, d i, d j"


def _request(sql: str, timeout_s: float, *, one: bool = False) -> ExecRequest:
    """``one``: the context and the statement in one request, its answer awaited in the Trio
    thread (connector/_tdsio.py); else two requests, in the connection's worker thread."""
    context = {"edgetds.sub": "alice", "edgetds.iss": "https://idp", "edgetds.query_id": "q"}
    return ExecRequest(
        query_id="q", sql=sql, params=[], context=context, timeout_s=timeout_s, one_request=one
    )


async def _running(log: StatementLog, pc: PooledConnection) -> None:
    """Wait until the statement runs in tdslite (a worker thread is blocked in python-tds, or
    the Trio thread awaits its answer)."""
    await eventually(lambda: SLOW in log.running.values())
    assert pc.busy


async def _stopped_by_the_watchdog(
    pool: LoginPool,
    log: StatementLog,
    clock: trio.testing.MockClock,
    cancel: CancelToken,
    *,
    jump: float,
    one: bool,
) -> QueryFailed:
    failed: list[QueryFailed] = []

    async def run() -> None:
        with pytest.raises(QueryFailed) as info:
            await execute(pool, _request(SLOW, timeout_s=30, one=one), CollectSink(), cancel)
        failed.append(info.value)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run)
        await trio.testing.wait_all_tasks_blocked()
        [pc] = pool._in_use
        await _running(log, pc)
        if jump:
            clock.jump(jump)
        else:
            cancel.cancel("the client went away")
    return failed[0]


@pytest.mark.parametrize("one", [False, True], ids=["two requests", "one request"])
@pytest.mark.parametrize("how", ["deadline", "cancel"])
async def test_a_blocked_statement_is_stopped(
    tmp_path: Path,
    mock_clock: trio.testing.MockClock,
    worker_calls: list[int],
    how: str,
    one: bool,
) -> None:
    """The statement's answer awaited in the Trio thread (connector/_tdsio.py), the session
    context and the statement in two requests or in one. (A worker thread blocked in
    python-tds, which reads on a long answer, is interrupted the same way: ATTENTION, then the
    socket cut; tdslite sends a batch's answer only once the batch ran, so that is not staged
    here.)"""
    mock_clock.rate = 1  # real time, plus the jumps
    log = StatementLog()
    with trio.fail_after(120):
        async with reader_pool(tmp_path, log, setup=SETUP_SQL) as pool:
            # the pool's one connection opened and idle: the query below borrows it at once
            await execute(
                pool, _request("SELECT 1 AS one", timeout_s=5), CollectSink(), CancelToken()
            )
            cancel = CancelToken()
            worker_calls.clear()
            failed = await _stopped_by_the_watchdog(
                pool,
                log,
                mock_clock,
                cancel,
                jump=31 if how == "deadline" else 0,
                one=one,
            )
            assert worker_calls == []
            expected = ErrorCode.QUERY_TIMEOUT if how == "deadline" else ErrorCode.QUERY_CANCELLED
            assert failed.code == expected
            assert cancel.on_cancel is None  # the watchdog let go of the query


async def test_an_ended_query_is_never_acted_on(
    tmp_path: Path, mock_clock: trio.testing.MockClock
) -> None:
    mock_clock.rate = 1  # real time, plus the jump
    log = StatementLog()
    with trio.fail_after(120):
        async with reader_pool(tmp_path, log, setup=SETUP_SQL) as pool:
            cancel = CancelToken()
            await execute(pool, _request("SELECT 1 AS one", timeout_s=30), CollectSink(), cancel)
            async with pool.borrow() as pc:  # the same connection (pool of 1), a new borrower
                ended: list[bool] = []

                async def slow() -> None:
                    with contextlib.suppress(Exception):  # stopped by the ATTENTION below
                        await pool.call(pc, lambda conn: conn.cursor().execute(SLOW))
                    ended.append(True)

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(slow)
                    await _running(log, pc)
                    mock_clock.jump(31)  # past the ended query's deadline
                    cancel.cancel("late")  # and its token cancelled after it ended
                    await trio.testing.wait_all_tasks_blocked()
                    assert pc.busy
                    assert not pc.broken
                    assert pc.send_attention()  # the test stops it itself
                assert ended == [True]  # the ATTENTION stopped it
