"""Load testing: drive the relay's HTTP API (or SQL Server directly) with a TOML scenario.

`edgetds loadtest` is the command (edgetds/loadtest/cli.py); in Python::

    plan = Plan(scenario=load_scenario("s.toml"), target_url="http://127.0.0.1:8443",
                tunnel="demo", tokens=TokenSource.from_file("tokens.txt"))
    runs = await run_loadtest(plan)            # {"tunnel": RunResult}
    write_report("out", plan.scenario.name, runs)   # results.json, report.html (+ PNG charts)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import lazy_loader

if TYPE_CHECKING:
    from edgetds.loadtest._http import HttpConnection
    from edgetds.loadtest.report import compare, write_report
    from edgetds.loadtest.runner import Plan, drive, run_direct, run_loadtest, run_tunnel
    from edgetds.loadtest.scenario import (
        Scenario,
        ScenarioError,
        WeightedPicker,
        load_scenario,
        parse_scenario,
    )
    from edgetds.loadtest.stats import QueryOutcome, Recorder, RunResult
    from edgetds.loadtest.targets import (
        DirectSpec,
        DirectTarget,
        HttpTarget,
        TargetError,
        TokenSource,
        parse_direct,
    )

__all__ = [
    "DirectSpec",
    "DirectTarget",
    "HttpConnection",
    "HttpTarget",
    "QueryOutcome",
    "Plan",
    "Recorder",
    "RunResult",
    "Scenario",
    "ScenarioError",
    "TargetError",
    "TokenSource",
    "WeightedPicker",
    "compare",
    "drive",
    "load_scenario",
    "parse_direct",
    "parse_scenario",
    "run_direct",
    "run_loadtest",
    "run_tunnel",
    "write_report",
]

# imported on first use: `edgetds --help` stays light
__getattr__, __dir__, _ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "_http": ["HttpConnection"],
        "report": ["compare", "write_report"],
        "runner": ["Plan", "drive", "run_direct", "run_loadtest", "run_tunnel"],
        "scenario": [
            "Scenario",
            "ScenarioError",
            "WeightedPicker",
            "load_scenario",
            "parse_scenario",
        ],
        "stats": ["QueryOutcome", "Recorder", "RunResult"],
        "targets": [
            "DirectSpec",
            "DirectTarget",
            "HttpTarget",
            "TargetError",
            "TokenSource",
            "parse_direct",
        ],
    },
)
