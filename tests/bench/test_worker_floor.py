"""`bench.worker_floor`: the floor Worker under the real workerd, closed loop and with idle time
after each answer (``--gap-ms``)."""

from __future__ import annotations

import pytest
import trio

from bench.worker_floor import main, measure_floor


async def test_both_routes_are_measured() -> None:
    # enough requests that each route spends a measurable share of workerd's CPU
    floor = await measure_floor(300, warmup=5)
    assert set(floor) == {"plain", "rpc"}
    assert all(ms > 0 for ms in floor.values()), floor


async def test_idle_time_is_spent_between_the_recorded_requests() -> None:
    start = trio.current_time()
    floor = await measure_floor(20, warmup=2, gap_s=0.01)
    # 20 recorded requests per route, each followed by 10 ms of idle time: 0.4 s at least
    assert trio.current_time() - start >= 2 * 20 * 0.01
    assert set(floor) == {"plain", "rpc"}


def test_a_negative_gap_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--gap-ms", "-1"])
    assert exit_.value.code == 2
    assert "--gap-ms must be 0 or more" in capsys.readouterr().err
