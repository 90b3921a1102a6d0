"""Load testing: drive the relay's HTTP API (or SQL Server directly) with a TOML scenario.

`edgetds loadtest` is the command (edgetds/loadtest/cli.py); in Python::

    plan = Plan(scenario=load_scenario("s.toml"), target_url="http://127.0.0.1:8443",
                tunnel="demo", tokens=TokenSource.from_file("tokens.txt"))
    runs = await run_loadtest(plan)            # {"tunnel": RunResult}
    write_report("out", plan.scenario.name, runs)   # results.json, report.html (+ PNG charts)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgetds.loadtest.report import compare, write_report
    from edgetds.loadtest.runner import Plan, drive, run_direct, run_loadtest, run_tunnel
    from edgetds.loadtest.scenario import (
        Scenario,
        ScenarioError,
        WeightedPicker,
        load_scenario,
        parse_scenario,
    )
    from edgetds.loadtest.stats import Outcome, Recorder, RunResult
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
    "HttpTarget",
    "Outcome",
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

#: public name -> the module that defines it (imported on first use: `edgetds --help` stays light)
_MODULES = {
    "compare": "report",
    "write_report": "report",
    "Plan": "runner",
    "drive": "runner",
    "run_direct": "runner",
    "run_loadtest": "runner",
    "run_tunnel": "runner",
    "Scenario": "scenario",
    "ScenarioError": "scenario",
    "WeightedPicker": "scenario",
    "load_scenario": "scenario",
    "parse_scenario": "scenario",
    "Outcome": "stats",
    "Recorder": "stats",
    "RunResult": "stats",
    "DirectSpec": "targets",
    "DirectTarget": "targets",
    "HttpTarget": "targets",
    "TargetError": "targets",
    "TokenSource": "targets",
    "parse_direct": "targets",
}


def __getattr__(name: str) -> Any:
    module = _MODULES.get(name)
    if module is None:
        raise AttributeError(f"module 'edgetds.loadtest' has no attribute {name!r}")
    return getattr(importlib.import_module(f"edgetds.loadtest.{module}"), name)
