"""The direct+preamble baseline (bench/tunnel.py) runs the connector's per-query preamble: the
read-only session keys on a request that resets the session. Each slot reuses its connection, so
without the reset the second query on a slot would fail (read-only keys cannot be set again)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import trio

from bench.stack import open_demo_stack
from edgetds.loadtest import Plan, TokenSource, parse_scenario, run_loadtest


async def test_direct_like_connector_resets_every_query(tmp_path: Path) -> None:
    scenario = parse_scenario(
        {
            "name": "preamble",
            "seed": 1,
            "load": {"concurrency": 2, "count": 20},
            "queries": [
                {"name": "echo", "sql": "SELECT @n AS n", "params": {"n": {"int": [1, 9]}}}
            ],
        }
    )
    with trio.fail_after(60):
        async with open_demo_stack(tmp_path / "stack", connector="none") as stack:
            tokens = TokenSource.from_dev_idp(
                stack.idp_key_dir, scenario.identity, users=2, expires_in=300
            )
            plan = Plan(scenario=scenario, tokens=tokens, direct=stack.direct, live=False)
            runs = await run_loadtest(replace(plan, direct_like_connector=True))
    [run] = runs.values()
    assert run.count == 20
    assert run.errors == 0, run.errors_by_code
    assert run.rows == 20
