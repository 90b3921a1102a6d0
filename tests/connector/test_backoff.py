"""connector/backoff.py: full jitter, capped, reset only after a stable period."""

from __future__ import annotations

import random

from connector.backoff import Backoff


def test_full_jitter_bounds_grow_then_cap() -> None:
    b = Backoff(base=1.0, cap=8.0, rng=random.Random(7))
    ceilings = []
    for _ in range(6):
        ceiling = b.ceiling()
        delay = b.next_delay()
        assert 0 <= delay < ceiling
        ceilings.append(ceiling)
    assert ceilings == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]


def test_delays_are_spread_not_fixed() -> None:
    delays = []
    for seed in range(200):
        b = Backoff(base=1.0, cap=60.0, failures=4, rng=random.Random(seed))
        delays.append(b.next_delay())
    # uniform in [0, 16): the spread covers the range, mean near 8
    assert min(delays) < 2.0
    assert max(delays) > 14.0
    assert 6.0 < sum(delays) / len(delays) < 10.0


def test_counter_resets_only_after_a_stable_connection() -> None:
    b = Backoff(base=1.0, cap=60.0, stable_after=30.0)
    for _ in range(5):
        b.next_delay()
    b.connection_ended(uptime_s=2.0)  # flapping: keep backing off
    assert b.failures == 5
    b.connection_ended(uptime_s=31.0)
    assert b.failures == 0
    assert b.ceiling() == 1.0


def test_huge_failure_counts_do_not_overflow() -> None:
    b = Backoff(base=0.5, cap=10.0, failures=10_000)
    assert b.ceiling() == 10.0
    assert 0 <= b.next_delay() < 10.0
