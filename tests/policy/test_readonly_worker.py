"""ReadOnlyChecker: statements over ``inline_chars`` parse in worker processes (their own limiter),
so the event loop neither parses nor shares the GIL with a parse; a check over its budget is
refused and its worker process killed; a worker that dies mid-check refuses, never passes; small
statements parse in a thread lane of their own."""

from __future__ import annotations

import functools
import math
import os
import signal
import threading
import uuid
from pathlib import Path

import pytest
import trio
import trio.testing

from connector._readonly import (
    CheckTimeout,
    ReadOnlyChecker,
    ReadOnlyVerdict,
    _check,
    _check_in_worker,
    remembered_verdict,
)
from tests.support.processes import alive


def big_select(terms: int = 20_000) -> str:
    """A fresh (never checked) read-only statement of about 4 characters per term."""
    return f"SELECT '{uuid.uuid4().hex}' AS tag, {' + '.join(['1'] * terms)} AS n"


@pytest.fixture
async def checker() -> ReadOnlyChecker:  # type: ignore[misc]
    checker = ReadOnlyChecker(processes=1, max_budget_s=math.inf)
    try:
        yield checker
    finally:
        await checker.aclose()


async def test_a_big_statement_is_checked_in_a_worker_process(checker: ReadOnlyChecker) -> None:
    sql = big_select()
    done = trio.Event()
    verdicts = []

    async def check() -> None:
        verdicts.append(await checker.check(sql, budget_s=math.inf))
        done.set()

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(check)
            await trio.testing.wait_all_tasks_blocked()
            # the check waits for its worker process; this task still gets scheduled
            for _ in range(100):
                await trio.lowlevel.checkpoint()
            assert not done.is_set()
            assert checker.process_limiter.borrowed_tokens == 1
            assert checker.small_limiter.borrowed_tokens == 0  # its own lane
    assert verdicts[0].allowed
    [pid] = checker.worker_pids
    assert pid != os.getpid()
    assert alive(pid)  # long-lived: it waits for the next statement
    # remembered in this process: answered on the loop without a worker
    assert remembered_verdict(sql) is verdicts[0]
    assert await checker.check(sql, budget_s=0) is verdicts[0]
    # closing the checker stops its worker processes
    await checker.aclose()
    assert not alive(pid)
    refused = await checker.check(big_select(300), budget_s=math.inf)
    assert not refused.allowed
    assert "could not be checked" in refused.reason


async def test_a_check_over_its_budget_is_refused_and_its_worker_killed(
    checker: ReadOnlyChecker, autojump_clock: trio.testing.MockClock
) -> None:
    await checker.check(big_select(300), budget_s=math.inf)  # starts the worker
    [pid] = checker.worker_pids
    sql = big_select()
    started = trio.current_time()
    with pytest.raises(CheckTimeout, match=r"within 0.5 s"):
        await checker.check(sql, budget_s=0.5)
    assert trio.current_time() - started == pytest.approx(0.5)
    # the parse did not outlive its budget: its process is gone, its slot free, no verdict
    assert not alive(pid)
    assert checker.process_limiter.borrowed_tokens == 0
    assert remembered_verdict(sql) is None
    # the next check starts a new worker process
    verdict = await checker.check(sql, budget_s=math.inf)
    assert verdict.allowed
    assert len(checker.worker_pids) == 2
    assert all(alive(p) for p in checker.worker_pids - {pid})


def announce_then_hang(fifo: str, sql: str) -> tuple[ReadOnlyVerdict, bool, int]:
    """A worker job: for a statement marked HANG, tell the test its pid and never finish."""
    if "HANG" in sql:
        with open(fifo, "w") as out:
            out.write(str(os.getpid()))
        threading.Event().wait()
    return _check_in_worker(sql)


async def test_a_worker_killed_mid_check_refuses_then_the_next_check_works(
    tmp_path: Path,
) -> None:
    fifo = tmp_path / "pid"
    os.mkfifo(fifo)

    class Hanging(ReadOnlyChecker):
        _job = staticmethod(functools.partial(announce_then_hang, str(fifo)))

    checker = Hanging(processes=1, max_budget_s=math.inf)
    verdicts: list[ReadOnlyVerdict] = []
    hanging = f"SELECT 'HANG' AS h, {' + '.join(['1'] * 500)} AS n"
    try:
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(
                    lambda: _append(verdicts, checker.check(hanging, budget_s=math.inf))
                )
                pid = int(await trio.to_thread.run_sync(fifo.read_text))
                os.kill(pid, signal.SIGKILL)  # from outside, mid-check
            [refused] = verdicts
            assert not refused.allowed
            assert "could not be checked: the parse worker process died" in refused.reason
            assert remembered_verdict(hanging) is None  # a crash says nothing about the text
            # the next check gets a new worker process
            verdict = await checker.check(big_select(300), budget_s=math.inf)
            assert verdict.allowed
            assert pid not in checker.worker_pids
    finally:
        await checker.aclose()


async def _append(verdicts: list[ReadOnlyVerdict], check: object) -> None:
    verdicts.append(await check)  # type: ignore[misc]


STATEMENTS = [
    "SELECT 1 AS one",
    "SELECT a, b FROM t WHERE c IN (1, 2, 3) ORDER BY a OFFSET 0 ROWS FETCH NEXT 5 ROWS ONLY",
    "WITH x AS (SELECT 1 AS n) SELECT n FROM x UNION ALL SELECT 2",
    "SELECT 'DELETE FROM t' AS s, [delete] FROM t",
    "DELETE FROM t",
    "SELECT 1; DELETE FROM t",
    "SELECT 1 # DELETE FROM t",
    "SELECT * INTO t2 FROM t",
    "IF 1 = 1 DELETE FROM t",
    "SELECT 1 /* -- */ AS x",
    "SELECT 'unterminated",
    "EXEC sp_who",
    "",
]


async def test_the_worker_process_gives_the_in_process_verdict(checker: ReadOnlyChecker) -> None:
    checker.inline_chars = 0  # every statement goes to the worker process
    with trio.fail_after(60):
        for sql in STATEMENTS:
            fresh = f"{sql}\n-- {uuid.uuid4().hex}"
            assert remembered_verdict(fresh) is None
            assert await checker.check(fresh, budget_s=math.inf) == _check(fresh), sql
    assert len(checker.worker_pids) == 1


async def test_small_statements_do_not_wait_behind_big_ones(checker: ReadOnlyChecker) -> None:
    big_done = trio.Event()

    async def big() -> None:
        await checker.check(big_select(), budget_s=math.inf)
        big_done.set()

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(big)
            await trio.testing.wait_all_tasks_blocked()
            assert checker.process_limiter.borrowed_tokens == 1  # the only worker is busy
            verdict = await checker.check(
                f"SELECT 1 AS one -- {uuid.uuid4().hex}", budget_s=math.inf
            )
            assert verdict.allowed
            assert not big_done.is_set()
