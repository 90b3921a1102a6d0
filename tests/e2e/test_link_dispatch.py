"""A QUERY is handed to its task straight from websockets' reader task, as its message arrives:
the link's own reader task, which handles HELLO, DRAIN, GOAWAY, PING and protocol errors, does
not run for it, and a small query costs the connector four rounds of its run loop (receive,
start, the worker's answer, the send) instead of five. Queries, their answers and cancels still
work as before (the rest of tests/e2e)."""

from __future__ import annotations

import trio

from tests.support.e2e_stack import Stack


class _Steps(trio.abc.Instrument):
    """The names of the coroutines of the tasks the run loop stepped while ``on``."""

    def __init__(self) -> None:
        self.on = False
        self.names: list[str] = []

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if self.on:
            self.names.append(task.coro.cr_code.co_name)


async def test_a_query_does_not_wake_the_links_reader(stack: Stack) -> None:
    steps = _Steps()
    with trio.fail_after(60):
        warm = await stack.query("SELECT 1 AS one")
        assert warm.status == 200
        trio.lowlevel.add_instrument(steps)
        try:
            steps.on = True
            for n in range(3):
                resp = await stack.query(
                    "SELECT @n AS n", params={"n": {"type": "int", "value": n}}
                )
                assert resp.status == 200
                assert resp.lines[1] == [n]
                assert "done" in resp.lines[-1]
            steps.on = False
        finally:
            trio.lowlevel.remove_instrument(steps)
    assert steps.names.count("_serve_query") >= 3  # the queries' tasks ran
    assert "_run_link" not in steps.names  # the link's reader did not
