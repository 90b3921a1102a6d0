"""Drive a target with a scenario: closed-loop virtual users or an open-loop arrival schedule.

Strategy:

1. A *slot* is one in-flight query's seat (one HTTP connection of the pool, or one python-tds
   connection in `--direct`); there are ``load.concurrency`` slots, handed out through a channel,
   so a slot's connection is never used by two queries at once.
2. Closed loop: ``concurrency`` virtual users, each sends a query, waits for the end of its
   stream, sends the next. User i starts at ``i * ramp_up_s / concurrency``.
3. Open loop (``load.rate``): queries are *due* at a fixed schedule (the rate rises linearly over
   the ramp-up), whatever the latencies; a query waiting for a free slot is late, and its latency
   is measured from when it was due (no coordinated omission: a stalled server shows up as
   latency, not as a politely lower request rate).
4. It stops by itself: no query starts after the duration or past the count; queries in flight
   then get ``timeout_s`` to finish, after which they are cancelled and counted as
   ``client.timeout``.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, Protocol
from urllib.parse import urlsplit

import trio

from edgetds.loadtest.progress import show_progress
from edgetds.loadtest.scenario import QuerySpec, Scenario, WeightedPicker
from edgetds.loadtest.stats import QueryOutcome, Recorder, RunResult
from edgetds.loadtest.targets import (
    DirectSpec,
    DirectTarget,
    HttpTarget,
    TargetError,
    TokenSource,
    check_loopback,
)

__all__ = ["Plan", "Target", "drive", "run_direct", "run_loadtest", "run_tunnel"]


class Target(Protocol):
    async def __call__(
        self, slot: int, vu: int, query: QuerySpec, rng: random.Random
    ) -> QueryOutcome: ...


_MASK = (1 << 64) - 1
_GAMMA = 0x9E3779B97F4A7C15  # splitmix64's increment (2**64 / the golden ratio, odd)
_2_POW_53 = 2.0**-53


def _mix(z: int) -> int:
    """splitmix64's output function (Steele, Lea and Flood 2014): 64 bits to 64 bits."""
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


class QueryRandom(random.Random):
    """`random.Random` on splitmix64: the random source of one query.

    A query draws a handful of numbers (which query, its parameters) from a source of its own.
    The Mersenne Twister under `random.Random` fills 624 words of state when seeded and again at
    its first draw (about 8 us, more than the draws); here the state is one 64-bit integer.
    `random` and `getrandbits` are splitmix64's, and `random.Random` builds ``randint``,
    ``uniform``, ``choice`` and the rest on those two."""

    def __init__(self, state: int = 0) -> None:  # random.Random.__init__ would seed the Twister
        self._state = state & _MASK
        self.gauss_next = None

    # random.Random's own signature (typeshed marks it as an override of _random.Random's too)
    def seed(  # type: ignore[override]
        self, a: int | float | str | bytes | bytearray | None = None, version: int = 2
    ) -> None:
        self._state = a & _MASK if isinstance(a, int) else random.Random(a).getrandbits(64)
        self.gauss_next = None

    def getstate(self) -> tuple[Any, ...]:
        return (self._state, self.gauss_next)

    def setstate(self, state: tuple[Any, ...]) -> None:
        self._state, self.gauss_next = state

    def random(self) -> float:
        self._state = z = (self._state + _GAMMA) & _MASK
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
        return ((z ^ (z >> 31)) >> 11) * _2_POW_53

    def getrandbits(self, k: int) -> int:
        if k < 0:
            raise ValueError("number of bits must be non-negative")
        out = bits = 0
        while bits < k:
            self._state = (self._state + _GAMMA) & _MASK
            out |= _mix(self._state) << bits
            bits += 64
        return out >> (bits - k)


@dataclass
class _Budget:
    """Shared stop conditions: a deadline (recorder clock) and/or a count of queries to start."""

    deadline: float | None
    remaining: int | None
    seed: int
    clock: Callable[[], float]
    issued: int = 0

    def __post_init__(self) -> None:
        # the seed (any integer) to 64 bits, once per run
        digest = hashlib.sha256(str(self.seed).encode()).digest()
        self._key = int.from_bytes(digest[:8], "big")

    def take(self) -> random.Random | None:
        """The random source of the next query (None: stop). Query n always gets the same
        source for a given seed, so a tunnel run and a direct run send the same queries: a
        splitmix64 whose state is splitmix64's mix of (the seed's 64-bit key + n x its
        increment), so two queries' sources start at unrelated points of its period."""
        if self.deadline is not None and self.clock() >= self.deadline:
            return None
        if self.remaining is not None:
            if self.remaining <= 0:
                return None
            self.remaining -= 1
        self.issued += 1
        return QueryRandom(_mix((self._key + self.issued * _GAMMA) & _MASK))


@dataclass(frozen=True)
class _Run:
    scenario: Scenario
    target: Target
    recorder: Recorder
    picker: WeightedPicker
    budget: _Budget


async def _one(
    target: Target,
    recorder: Recorder,
    slot: int,
    vu: int,
    query: QuerySpec,
    rng: random.Random,
    due: float,
    timeout_s: float,
) -> None:
    outcome: QueryOutcome | None = None
    with trio.move_on_after(timeout_s):
        outcome = await target(slot, vu, query, rng)
    recorder.record(query.name, due, recorder.clock(), outcome or QueryOutcome("client.timeout"))


async def drive(
    scenario: Scenario,
    target: Target,
    recorder: Recorder,
) -> None:
    """Run ``scenario`` against ``target``, recording into ``recorder``; returns when done."""
    load = scenario.load
    picker = WeightedPicker(scenario.queries)
    seed = scenario.seed if scenario.seed is not None else random.getrandbits(64)
    recorder.start()
    start = recorder.started
    budget = _Budget(
        deadline=start + load.duration_s if load.duration_s is not None else None,
        remaining=load.count,
        seed=seed,
        clock=recorder.clock,
    )
    # Hard bound: the run plus one query timeout, whatever the target does.
    hard_s = (load.duration_s or math.inf) + load.ramp_up_s + load.timeout_s + 5
    with trio.move_on_after(hard_s):
        run = _Run(scenario, target, recorder, picker, budget)
        await (_closed_loop(run) if load.rate is None else _open_loop(run))
    recorder.finish()


async def _closed_loop(run: _Run) -> None:
    load, target, recorder, picker = run.scenario.load, run.target, run.recorder, run.picker

    async def user(vu: int) -> None:
        """Queries one after the other, each under ``timeout_s`` from its start: one cancel
        scope serves them all, its deadline moved at each start (entering and leaving a scope
        per query costs about 2.5x moving its deadline), and a new scope after a timeout."""
        if load.ramp_up_s:
            await trio.sleep(vu * load.ramp_up_s / load.concurrency)
        take, clock, timeout_s = run.budget.take, recorder.clock, load.timeout_s
        rng = take()
        while rng is not None:
            with trio.CancelScope() as scope:
                while rng is not None:
                    query = picker.pick(rng)
                    start = clock()
                    scope.deadline = start + timeout_s
                    outcome = await target(vu, vu, query, rng)
                    recorder.record(query.name, start, clock(), outcome)
                    rng = take()
            if scope.cancelled_caught:  # the query in flight timed out
                recorder.record(query.name, start, clock(), QueryOutcome("client.timeout"))
                rng = take()

    async with trio.open_nursery() as nursery:
        for vu in range(load.concurrency):
            nursery.start_soon(user, vu)


def _interval(rate: float, ramp_up_s: float, elapsed: float) -> float:
    """Seconds to the next arrival: the rate rises linearly over the ramp-up (from 5 %)."""
    if ramp_up_s > 0 and elapsed < ramp_up_s:
        rate = rate * max(elapsed / ramp_up_s, 0.05)
    return 1.0 / rate


async def _open_loop(run: _Run) -> None:
    load, target, recorder, picker = run.scenario.load, run.target, run.recorder, run.picker
    assert load.rate is not None
    send_slot, free_slots = trio.open_memory_channel[int](load.concurrency)
    for slot in range(load.concurrency):
        send_slot.send_nowait(slot)

    async def query_task(slot: int, vu: int, query: QuerySpec, rng: random.Random, due: float):  # type: ignore[no-untyped-def]
        try:
            await _one(target, recorder, slot, vu, query, rng, due, load.timeout_s)
        finally:
            send_slot.send_nowait(slot)

    async with trio.open_nursery() as nursery:
        due = recorder.started
        arrival = 0
        while (rng := run.budget.take()) is not None:
            now = recorder.clock()
            if due > now:
                await trio.sleep(due - now)
            slot = await free_slots.receive()  # late when all slots are busy: latency counts it
            query = picker.pick(rng)
            nursery.start_soon(query_task, slot, arrival % load.concurrency, query, rng, due)
            arrival += 1
            due += _interval(load.rate, load.ramp_up_s, due - recorder.started)


# ------------------------------------------------------------------------------- orchestration


@dataclass(frozen=True)
class Plan:
    """What `run_loadtest` runs: the tunnel (HTTP API), the direct baseline, or both."""

    scenario: Scenario
    target_url: str | None = None
    tunnel: str = "demo"
    tokens: TokenSource | None = None
    direct: DirectSpec | None = None
    #: --direct also runs the connector's per-query preamble (reset + session context)
    direct_like_connector: bool = False
    #: None: rich on a terminal, plain lines otherwise; False: no progress output at all
    live: bool | None = None
    progress_interval_s: float = 5.0
    allow_remote: bool = False

    def check(self) -> None:
        """Refuse what cannot run (and non-loopback hosts unless allowed)."""
        if self.target_url is None and self.direct is None:
            raise TargetError("nothing to run: give --target URL (and --tunnel) and/or --direct")
        if self.target_url is not None:
            parts = urlsplit(self.target_url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise TargetError(
                    f"--target {self.target_url!r}: expected the relay's HTTP base URL, "
                    "e.g. http://127.0.0.1:8443"
                )
            check_loopback(parts.hostname, what="--target", allow_remote=self.allow_remote)
            if self.tokens is None:
                raise TargetError("--target needs tokens: --dev-idp-key-dir DIR or --token-file F")
        if self.direct is not None:
            check_loopback(self.direct.host, what="--direct", allow_remote=self.allow_remote)
            missing = [q.name for q in self.scenario.queries if q.sql_for_direct() is None]
            if missing:
                raise TargetError(
                    f'--direct: named queries {missing} have no SQL; add direct_sql = "..." '
                    "to them in the scenario (the connector's policy holds the real text)"
                )


async def _with_progress(
    plan: Plan, recorder: Recorder, run: Callable[[], Awaitable[None]]
) -> None:
    async with trio.open_nursery() as nursery:
        if plan.live is not False:
            nursery.start_soon(
                partial(
                    show_progress,
                    recorder,
                    live=plan.live,
                    interval_s=plan.progress_interval_s,
                )
            )
        await run()
        nursery.cancel_scope.cancel()


async def run_tunnel(plan: Plan) -> RunResult:
    assert plan.target_url is not None
    assert plan.tokens is not None
    recorder = Recorder("tunnel", seed=plan.scenario.seed)
    target = HttpTarget(plan.target_url, plan.tunnel, plan.tokens)
    try:
        await _with_progress(plan, recorder, partial(drive, plan.scenario, target, recorder))
    finally:
        await target.aclose()
    return recorder.result(**_context(plan, url=plan.target_url, tunnel=plan.tunnel))


async def run_direct(plan: Plan) -> RunResult:
    assert plan.direct is not None
    load = plan.scenario.load
    target = DirectTarget(
        plan.direct,
        slots=load.concurrency,
        timeout_s=load.timeout_s,
        like_connector=plan.direct_like_connector,
    )
    recorder = Recorder("direct", seed=plan.scenario.seed)
    try:
        await _with_progress(plan, recorder, partial(drive, plan.scenario, target, recorder))
    finally:
        await trio.to_thread.run_sync(target.close)
    where = f"{plan.direct.host}:{plan.direct.port}/{plan.direct.database}"
    return recorder.result(**_context(plan, url=f"tds://{where}"))


def _context(plan: Plan, **extra: Any) -> dict[str, Any]:
    load = plan.scenario.load
    return {
        "scenario": plan.scenario.name,
        "mode": load.mode,
        "concurrency": load.concurrency,
        "rate": load.rate,
        "planned_duration_s": load.duration_s,
        "planned_count": load.count,
        "ramp_up_s": load.ramp_up_s,
        **extra,
    }


async def run_loadtest(plan: Plan) -> dict[str, RunResult]:
    """Run the tunnel and/or the direct baseline one after the other; results by target."""
    plan.check()
    if plan.scenario.seed is None:  # one seed for both runs: tunnel and direct get the same queries
        plan = replace(plan, scenario=replace(plan.scenario, seed=random.getrandbits(64)))
    results: dict[str, RunResult] = {}
    if plan.target_url is not None:
        results["tunnel"] = await run_tunnel(plan)
    if plan.direct is not None:
        results["direct"] = await run_direct(plan)
    return results
