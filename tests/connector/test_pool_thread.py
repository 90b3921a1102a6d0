"""connector/pool.py against a real tdslite: every pooled connection runs its python-tds calls on
its own worker thread, the same one for its whole life and ended by its close; a call is waited
for, never abandoned, when its task is cancelled; and what the call raised is raised to the
caller."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import trio
import trio.testing

from tests.connector.test_execute_reset import reader_pool


def _select_one(conn: object) -> tuple[threading.Thread, object]:
    cursor = conn.cursor()  # type: ignore[attr-defined]
    cursor.execute("SELECT 1")
    return threading.current_thread(), cursor.fetchall()[0][0]


async def test_each_connection_has_one_thread_of_its_own_until_closed(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with reader_pool(tmp_path, size=2) as pool:
            async with pool.borrow() as a, pool.borrow() as b:
                seen = [await pool.call(pc, _select_one) for pc in (a, a, b, b, a)]
        threads = [thread for thread, _ in seen]
        assert [value for _, value in seen] == [1] * 5
        assert threads[0] is threads[1] is threads[4]
        assert threads[2] is threads[3]
        assert threads[0] is not threads[2]
        assert threading.current_thread() not in threads
        assert threads[0].name == "edgetds reader connection"
        for thread in (threads[0], threads[2]):  # the pool closed them: their threads end
            await trio.to_thread.run_sync(thread.join, 10)
            assert not thread.is_alive()


async def test_a_cancelled_call_is_waited_for_not_abandoned(tmp_path: Path) -> None:
    entered, release = threading.Event(), threading.Event()
    finished: list[bool] = []

    def blocked(conn: object) -> str:
        entered.set()
        assert release.wait(20)
        finished.append(True)
        return "done"

    with trio.fail_after(30):
        async with reader_pool(tmp_path) as pool, pool.borrow() as pc:
            returned: list[str] = []
            scope = trio.CancelScope()

            async def run() -> None:
                with scope:
                    returned.append(await pool.call(pc, blocked))
                    await trio.lowlevel.checkpoint()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(run)
                assert await trio.to_thread.run_sync(entered.wait, 20)
                scope.cancel()
                await trio.testing.wait_all_tasks_blocked()
                assert pc.busy
                assert not finished
                release.set()
            # the call's value arrived; the cancel took effect at the next checkpoint
            assert finished == [True]
            assert returned == ["done"]
            assert scope.cancelled_caught
            assert not pc.broken
            assert await pool.call(pc, lambda conn: _select_one(conn)[1]) == 1


async def test_what_the_call_raised_is_raised_to_the_caller(tmp_path: Path) -> None:
    def fails(conn: object) -> None:
        raise LookupError("from the worker thread")

    with trio.fail_after(30):
        async with reader_pool(tmp_path) as pool, pool.borrow() as pc:
            with pytest.raises(LookupError, match="from the worker thread"):
                await pool.call(pc, fails)
            assert not pc.broken  # not a connection failure: the connection stays usable
            assert await pool.call(pc, lambda conn: _select_one(conn)[1]) == 1


async def test_a_free_slot_with_an_idle_connection_is_taken_without_a_schedule_point(
    tmp_path: Path,
) -> None:
    with trio.fail_after(30):
        async with reader_pool(tmp_path, size=1) as pool:
            async with pool.borrow() as first:
                assert await pool.call(first, _select_one)
            # the slot is free and the connection idle: borrowing and returning it are no
            # round of the run loop (each would be an epoll call per query)
            with trio.testing.assert_no_checkpoints():
                async with pool.borrow() as again:
                    assert again is first
            # and the slot still bounds the pool: a second borrower waits for the first
            order: list[str] = []
            async with trio.open_nursery() as nursery:
                async with pool.borrow():

                    async def second() -> None:
                        async with pool.borrow():
                            order.append("second")

                    nursery.start_soon(second)
                    await trio.testing.wait_all_tasks_blocked()
                    order.append("first done")
            assert order == ["first done", "second"]


class _RunLoop(trio.abc.Instrument):
    """Counts the run loop's I/O waits and the tasks it stepped while ``on``."""

    def __init__(self) -> None:
        self.on = False
        self.io_waits = 0
        self.stepped: list[trio.lowlevel.Task] = []

    def before_io_wait(self, timeout: float) -> None:
        if self.on:
            self.io_waits += 1

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if self.on:
            self.stepped.append(task)


async def test_the_call_wakes_its_caller_from_the_io_wait(tmp_path: Path) -> None:
    """The worker's byte on the thread's socket pair wakes the waiting task itself: one I/O wait
    of the run loop per call, and no other task steps (trio's run_sync_soon would wake its own
    system task first, which then reschedules the caller: a second round of the run loop)."""
    loop = _RunLoop()
    with trio.fail_after(30):
        async with reader_pool(tmp_path) as pool, pool.borrow() as pc:
            assert await pool.call(pc, lambda conn: "warm") == "warm"
            await trio.testing.wait_all_tasks_blocked()
            trio.lowlevel.add_instrument(loop)
            try:
                for n in range(5):
                    loop.on = True
                    assert await pool.call(pc, lambda conn, n=n: n) == n
                    loop.on = False
                    assert loop.io_waits == 1
                    assert loop.stepped == [trio.lowlevel.current_task()]
                    loop.io_waits, loop.stepped = 0, []
            finally:
                trio.lowlevel.remove_instrument(loop)
