"""The driver: it stops by itself (count, duration), runs slots exclusively, and in open loop
measures latency from when a query was due (a stall is not hidden by coordinated omission).

The target here is a plain async callable that sleeps: the driver's input, not a stand-in for
any of our components (those are exercised in test_loadtest_stack.py). Every test runs under
trio's MockClock (autojump): the driver measures on the recorder's clock (trio time), so the
sleeps, durations and latencies are virtual and exact, and the module takes no real time."""

from __future__ import annotations

import random
from typing import Any

import pytest
import trio
import trio.testing

from edgetds.loadtest.runner import QueryRandom, _Budget, drive
from edgetds.loadtest.scenario import QuerySpec, parse_scenario
from edgetds.loadtest.stats import QueryOutcome, Recorder


def scenario(**load: Any):  # type: ignore[no-untyped-def]
    return parse_scenario({"load": load, "queries": [{"name": "q", "sql": "SELECT 1"}]})


class SleepTarget:
    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.busy: set[int] = set()
        self.max_in_flight = 0
        self.calls = 0

    async def __call__(
        self, slot: int, vu: int, query: QuerySpec, rng: random.Random
    ) -> QueryOutcome:
        assert slot not in self.busy, "a slot was used by two queries at once"
        self.busy.add(slot)
        self.calls += 1
        number = self.calls
        self.max_in_flight = max(self.max_in_flight, len(self.busy))
        try:
            await trio.sleep(self.delay)
        finally:
            self.busy.discard(slot)
        return QueryOutcome(None if number % 10 else "sql.error", rows=2, nbytes=10)


async def test_closed_loop_stops_at_count(autojump_clock: trio.testing.MockClock) -> None:
    target = SleepTarget(0.001)
    recorder = Recorder("t")
    with trio.fail_after(10):
        await drive(scenario(concurrency=4, count=50), target, recorder)
    assert recorder.count == 50
    assert target.calls == 50
    assert target.max_in_flight == 4
    assert recorder.errors == {"sql.error": 5}
    assert recorder.rows == 100


async def test_closed_loop_stops_at_duration(autojump_clock: trio.testing.MockClock) -> None:
    target = SleepTarget(0.01)
    recorder = Recorder("t")
    start = trio.current_time()
    with trio.fail_after(10):
        await drive(scenario(concurrency=2, duration_s=0.3), target, recorder)
    # no query starts after 0.3 s; the two in flight then finish 0.01 s later
    assert 0.3 <= trio.current_time() - start <= 0.31 + 1e-9
    assert 10 < recorder.count < 70
    assert recorder.count in (60, 62)


async def test_per_query_timeout_is_counted(autojump_clock: trio.testing.MockClock) -> None:
    recorder = Recorder("t")
    with trio.fail_after(10):
        await drive(scenario(concurrency=2, count=4, timeout_s=0.05), SleepTarget(5), recorder)
    assert recorder.errors == {"client.timeout": 4}


async def test_each_query_gets_its_own_timeout(autojump_clock: trio.testing.MockClock) -> None:
    """Every other query hangs: it times out 50 ms after its own start, and the next query
    (a new cancel scope after a timeout, the same scope after a success) gets its full 50 ms."""
    calls = 0

    async def target(slot: int, vu: int, query: QuerySpec, rng: random.Random) -> QueryOutcome:
        nonlocal calls
        calls += 1
        await trio.sleep(5 if calls % 2 else 0.04)  # 40 ms: within its own 50 ms only
        return QueryOutcome(None)

    recorder = Recorder("t")
    with trio.fail_after(10):
        await drive(scenario(concurrency=1, count=6, timeout_s=0.05), target, recorder)
    assert (recorder.ok, recorder.errors) == (3, {"client.timeout": 3})
    latencies = sorted(p[1] for p in recorder.timeline)
    assert latencies == pytest.approx([40.0] * 3 + [50.0] * 3, abs=0.01)


async def test_open_loop_counts_lateness_as_latency(autojump_clock: trio.testing.MockClock) -> None:
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


async def test_same_seed_same_queries_whatever_the_timing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Query n gets the same random source in every run: a tunnel and a direct run of a
    --compare send the same queries even though their virtual users interleave differently."""
    sc = parse_scenario(
        {
            "seed": 9,
            "load": {"concurrency": 4, "count": 40},
            "queries": [
                {"name": "a", "sql": "S", "weight": 2, "params": {"i": {"int": [1, 10**6]}}},
                {"name": "b", "sql": "T", "params": {"u": {"uuid": True}}},
            ],
        }
    )
    sent: list[list[tuple[str, str]]] = []
    for delays in ((0.001, 0.004), (0.004, 0.001)):
        calls: list[tuple[str, str]] = []

        async def target(
            slot: int,
            vu: int,
            query: QuerySpec,
            rng: random.Random,
            calls: list[tuple[str, str]] = calls,
            delays: tuple[float, float] = delays,
        ) -> QueryOutcome:
            calls.append((query.name, repr(query.make_params(rng))))
            await trio.sleep(delays[vu % 2])
            return QueryOutcome(None)

        with trio.fail_after(10):
            await drive(sc, target, Recorder("t"))
        sent.append(sorted(calls))
    assert len(sent[0]) == 40
    assert sent[0] == sent[1]
    assert len({c[0] for c in sent[0]}) == 2


def test_query_sources_for_a_seed_are_fixed_and_apart() -> None:
    """The sources of a given seed are fixed (these values are what `seed = 9` sends; a change
    here changes every scenario's queries for its seed); other seeds, -9 included, differ."""

    def draws(seed: int) -> list[int]:
        budget = _Budget(None, 3, seed, lambda: 0.0)
        return [rng.randint(1, 10**6) for rng in iter(budget.take, None)]

    assert draws(9) == [350094, 593255, 954233]
    assert len({tuple(draws(seed)) for seed in (9, -9, 10, 2**64 + 9)}) == 4


def test_query_random_is_a_random_random() -> None:
    """What the parameter generators call works on it and stays in range; state round-trips."""
    rng = QueryRandom(7)
    ints = [rng.randint(1, 6) for _ in range(6000)]
    assert set(ints) == {1, 2, 3, 4, 5, 6}
    assert all(800 < ints.count(i) < 1200 for i in range(1, 7))
    floats = [rng.uniform(2.0, 3.0) for _ in range(1000)]
    assert all(2.0 <= f <= 3.0 for f in floats)
    assert 2.4 < sum(floats) / len(floats) < 2.6
    assert {rng.choice("ab") for _ in range(100)} == {"a", "b"}
    assert rng.getrandbits(0) == 0
    assert max(rng.getrandbits(128) for _ in range(200)).bit_length() == 128
    state = rng.getstate()
    first = [rng.random() for _ in range(5)]
    rng.setstate(state)
    assert [rng.random() for _ in range(5)] == first
    rng.seed("text")
    again = QueryRandom()
    again.seed("text")
    assert rng.random() == again.random()
