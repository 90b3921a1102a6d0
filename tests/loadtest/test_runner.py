"""The driver: it stops by itself (count, duration), runs slots exclusively, and in open loop
measures latency from when a query was due (a stall is not hidden by coordinated omission).

The target here is a plain async callable that sleeps: the driver's input, not a stand-in for
any of our components (those are exercised in test_loadtest_stack.py)."""

from __future__ import annotations

import random
import time
from typing import Any

import trio

from edgetds.loadtest.runner import drive
from edgetds.loadtest.scenario import QuerySpec, parse_scenario
from edgetds.loadtest.stats import Outcome, Recorder


def scenario(**load: Any):  # type: ignore[no-untyped-def]
    return parse_scenario({"load": load, "queries": [{"name": "q", "sql": "SELECT 1"}]})


class SleepTarget:
    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.busy: set[int] = set()
        self.max_in_flight = 0
        self.calls = 0

    async def __call__(self, slot: int, vu: int, query: QuerySpec, rng: random.Random) -> Outcome:
        assert slot not in self.busy, "a slot was used by two queries at once"
        self.busy.add(slot)
        self.calls += 1
        number = self.calls
        self.max_in_flight = max(self.max_in_flight, len(self.busy))
        try:
            await trio.sleep(self.delay)
        finally:
            self.busy.discard(slot)
        return Outcome(None if number % 10 else "sql.error", rows=2, nbytes=10)


async def test_closed_loop_stops_at_count() -> None:
    target = SleepTarget(0.001)
    recorder = Recorder("t")
    with trio.fail_after(10):
        await drive(scenario(concurrency=4, count=50), target, recorder)
    assert recorder.count == 50
    assert target.calls == 50
    assert target.max_in_flight == 4
    assert recorder.errors == {"sql.error": 5}
    assert recorder.rows == 100


async def test_closed_loop_stops_at_duration() -> None:
    target = SleepTarget(0.01)
    recorder = Recorder("t")
    start = time.perf_counter()
    with trio.fail_after(10):
        await drive(scenario(concurrency=2, duration_s=0.3), target, recorder)
    assert 0.3 <= time.perf_counter() - start < 2
    assert 10 < recorder.count < 70


async def test_per_query_timeout_is_counted() -> None:
    recorder = Recorder("t")
    with trio.fail_after(10):
        await drive(scenario(concurrency=2, count=4, timeout_s=0.05), SleepTarget(5), recorder)
    assert recorder.errors == {"client.timeout": 4}


async def test_open_loop_counts_lateness_as_latency() -> None:
    # 100 queries/s due, but one slot and 30 ms each: they fall behind, latency grows.
    target = SleepTarget(0.03)
    recorder = Recorder("t")
    with trio.fail_after(10):
        await drive(scenario(rate=100, concurrency=1, count=20), target, recorder)
    assert recorder.count == 20
    assert target.max_in_flight == 1
    snap = recorder.snapshot()
    assert snap.p99_ms > 200  # the 20th query was due at 0.19 s and ran at ~0.6 s
    fast = Recorder("t")
    with trio.fail_after(10):
        await drive(scenario(rate=100, concurrency=8, count=20), SleepTarget(0.03), fast)
    assert fast.snapshot().p99_ms < snap.p99_ms
