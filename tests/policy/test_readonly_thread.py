"""ReadOnlyChecker: the read-only parse runs in a worker thread with its own limiter, so the event
loop keeps running while a big statement is checked; a check over its budget is refused at once
(the abandoned parse keeps its thread slot and still leaves its verdict for the next try)."""

from __future__ import annotations

import uuid

import pytest
import trio
import trio.testing

from connector._readonly import CheckTimeout, ReadOnlyChecker, remembered_verdict


def big_select(terms: int = 20_000) -> str:
    """A fresh (never checked) read-only statement of about 5 characters per term."""
    return f"SELECT '{uuid.uuid4().hex}' AS tag, {' + '.join(['1'] * terms)} AS n"


async def test_the_event_loop_runs_while_a_big_statement_is_checked() -> None:
    checker = ReadOnlyChecker(threads=1)
    sql = big_select()
    done = trio.Event()
    verdicts = []

    async def check() -> None:
        verdicts.append(await checker.check(sql, budget_s=60))
        done.set()

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(check)
            await trio.testing.wait_all_tasks_blocked()
            # the check is waiting for its thread; this task still gets scheduled, many times
            ticks = 0
            while ticks < 100:
                await trio.lowlevel.checkpoint()
                ticks += 1
            assert not done.is_set()
            assert checker.limiter.borrowed_tokens == 1
            assert checker.small_limiter.borrowed_tokens == 0  # its own lane
    assert verdicts[0].allowed
    assert remembered_verdict(sql) is verdicts[0]
    # remembered: answered on the loop without a thread
    assert await checker.check(sql, budget_s=0) is verdicts[0]


async def test_a_check_over_its_budget_is_refused_not_waited_for(
    autojump_clock: trio.testing.MockClock,
) -> None:
    checker = ReadOnlyChecker(threads=1, max_budget_s=0.5)
    sql = big_select()
    started = trio.current_time()
    with pytest.raises(CheckTimeout, match=r"within 0.5 s"):
        await checker.check(sql, budget_s=30)  # the checker's own cap is the smaller
    assert trio.current_time() - started == pytest.approx(0.5)
    # refused while the parse still runs in its (abandoned) thread, which keeps its slot
    assert checker.limiter.borrowed_tokens == 1
    with pytest.raises(CheckTimeout, match=r"within 0.25 s"):
        await checker.check(big_select(), budget_s=0.25)  # waiting for a slot counts too
    # the slot comes back when the abandoned parse ends; its verdict is remembered
    await trio.to_thread.run_sync(lambda: None, limiter=checker.limiter)
    verdict = remembered_verdict(sql)
    assert verdict is not None
    assert verdict.allowed
    assert await checker.check(sql, budget_s=0) is verdict


async def test_small_statements_do_not_wait_behind_big_ones() -> None:
    checker = ReadOnlyChecker(threads=1, small_threads=1)
    big_done = trio.Event()

    async def big() -> None:
        await checker.check(big_select(), budget_s=60)
        big_done.set()

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(big)
            await trio.testing.wait_all_tasks_blocked()
            assert checker.limiter.borrowed_tokens == 1  # the big lane is busy
            verdict = await checker.check(f"SELECT 1 AS one -- {uuid.uuid4().hex}", budget_s=60)
            assert verdict.allowed
            assert not big_done.is_set()
