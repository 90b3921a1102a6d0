"""bench/bare_client.py, the connector CPU target's baseline, as its own process against tdslite:
closed loop and paced (open loop at a rate), and its refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.bare_client import main
from bench.stack import open_demo_stack, run_bare_client


async def test_closed_loop_and_paced_runs_report_their_figures(tmp_path: Path) -> None:
    async with open_demo_stack(tmp_path / "stack", connector="none") as stack:
        closed = await run_bare_client(stack.direct, tmp_path, count=50)
        paced = await run_bare_client(stack.direct, tmp_path, count=20, rate=200)
    assert closed["count"] == 50
    assert closed["qps"] > 0
    assert closed["cpu_ms_per_query"] > 0
    assert paced["count"] == 20
    # query n starts n/200 s after the first at the earliest: 19 intervals of 5 ms at least
    assert paced["qps"] <= 20 / (19 / 200)
    assert paced["cpu_ms_per_query"] > 0


@pytest.mark.parametrize("args", [["--count", "0"], ["--warmup", "-1"], ["--rate", "-5"]], ids=str)
def test_bad_numbers_are_refused(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--direct", "host=127.0.0.1;port=1;user=u;password=p", *args])
    assert exit_.value.code == 2
    assert "--count must be 1 or more" in capsys.readouterr().err
