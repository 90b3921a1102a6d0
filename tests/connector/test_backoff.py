"""connector/backoff.py: full jitter, capped, reset only after a stable period; and the
connector's slots redialling on that schedule, in virtual time (trio's MockClock, autojump)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import trio
import trio.testing

from connector.backoff import Backoff
from connector.config import load_config
from connector.runtime import open_connector
from edgetds.devidp import DevIdP
from tests.support.connector_keys import Keys, closed_port, config_for


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


async def test_a_relay_that_drops_every_connection_is_redialled_on_the_backoff_schedule(
    tmp_path: Path, keys: Keys, idp: DevIdP, autojump_clock: trio.testing.MockClock
) -> None:
    # A relay that accepts TCP and closes at once: every dial fails instantly, so the gap between
    # two accepts is exactly the backoff delay the slot slept (virtual time, no real seconds).
    accepted: list[float] = []

    async def drop(stream: trio.SocketStream) -> None:
        accepted.append(trio.current_time())
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(trio.serve_tcp, drop, 0)
        port = listeners[0].socket.getsockname()[1]
        path = config_for(
            tmp_path, keys, idp, f"ws://127.0.0.1:{port}", db_port=closed_port(),
            ha_connections=1, backoff_base_s=1.0, backoff_cap_s=8.0,
        )  # fmt: skip
        # no trio deadline around start-up and shutdown: they wait for worker threads and
        # processes, which take real time the autojumping clock would skip to a deadline
        async with open_connector(load_config(path)) as connector:
            await trio.sleep(300)  # virtual: five minutes of a relay that drops everything
            registry = connector.ops.registry
            scheduled = registry.get_sample_value(
                "edgetds_connector_reconnect_backoff_seconds_count"
            )
            slept = registry.get_sample_value("edgetds_connector_reconnect_backoff_seconds_sum")
        nursery.cancel_scope.cancel()
    gaps = [b - a for a, b in zip(accepted, accepted[1:], strict=False)]
    ceilings = [min(8.0, 2.0**n) for n in range(len(gaps))]
    assert len(gaps) >= 30  # mean delay 4 s once capped: about 70 dials in 300 s
    assert all(0 <= gap < ceiling for gap, ceiling in zip(gaps, ceilings, strict=True)), gaps
    assert max(gaps[4:]) > 4.0  # capped at 8 s, not stuck at the first ceilings
    # every delay the connector scheduled is a gap between two dials (the last may be running)
    assert scheduled in (len(gaps), len(gaps) + 1)
    assert slept is not None
    assert slept == pytest.approx(sum(gaps), abs=8.0)
    assert connector.reconnects == scheduled
