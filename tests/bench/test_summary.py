"""`python -m bench`'s summary table reads what the benchmark modules write: the Worker relay's CPU
per query against the Python relay's comes from the two bench.tunnel runs' JSON figures."""

from __future__ import annotations

from typing import Any

from bench.__main__ import summary
from bench.checks import print_table
from bench.tunnel import REPLICA_MIN_CORES, checks
from edgetds.loadtest.stats import RunResult


def _c1_run(name: str, cpu_ms_per_query: dict[str, float], qps: float = 10.0) -> dict[str, Any]:
    """A run as bench.tunnel writes it in its JSON figures, from a real RunResult."""
    run = RunResult(
        target=name, started_at=0.0, duration_s=1.0, count=10, ok=10, errors=0,
        errors_by_code={}, error_samples={}, rows=10, bytes=100, throughput_qps=qps,
        rows_per_s=10.0, latency_ms={"p50": 1.0}, by_query={}, distribution=[], timeline=[],
        context={"cpu_ms_per_query": cpu_ms_per_query},
    )  # fmt: skip
    return run.as_json() | {"timeline": None}


def _figures(relay_cpu_ms: float) -> dict[str, Any]:
    """The JSON bench.tunnel writes for its concurrency-1 run (its tunnel run alone)."""
    return {"latency_c1": {"runs": {"tunnel": _c1_run("tunnel", {"relay": relay_cpu_ms})}}}


def test_the_worker_relay_cpu_is_compared_with_the_python_relay_cpu() -> None:
    checks = summary({"tunnel": _figures(2.0), "worker": _figures(1.5)})
    [ratio] = [c for c in checks if c.name.startswith("Worker relay CPU")]
    assert ratio.value == 0.75
    assert ratio.verdict == "MISSES"


def test_the_worker_relay_cpu_is_compared_with_the_workerd_floor_of_its_run(
    capsys: Any,
) -> None:
    worker = _figures(1.5) | {"floor": {"plain": 0.25, "rpc": 0.375}}
    checks = summary({"worker": worker})
    [floor] = [c for c in checks if "workerd floor" in c.name]
    assert floor.value == 4.0
    assert floor.verdict == "info"  # a figure, no target
    print_table(checks)
    [line] = [t for t in capsys.readouterr().out.splitlines() if "workerd floor" in t]
    assert line.split()[-2:] == ["4.000x", "info"]


def test_the_replica_ratio_is_judged_only_on_a_host_with_a_core_per_process() -> None:
    def verdict(cores: int, ratio: float) -> str:
        out = {"relay": "python", "replicas": {"ratio": ratio, "cores": cores}}
        [check] = checks(out)
        return check.verdict

    assert verdict(REPLICA_MIN_CORES, 1.1) == "MISSES"
    assert verdict(REPLICA_MIN_CORES, 1.6) == "MEETS"
    assert verdict(REPLICA_MIN_CORES - 1, 0.9) == "info"
    assert verdict(2, 1.6) == "info"


def test_the_cpu_ratios_are_also_shown_against_baselines_at_the_tunnels_pace() -> None:
    c1 = {
        "tunnel": _c1_run("tunnel", {"loadgen": 0.2, "connector": 1.2, "tdslite": 0.6}),
        "direct": _c1_run("direct", {"loadgen": 0.4, "tdslite": 0.3}),
        "direct+preamble": _c1_run("direct+preamble", {"loadgen": 0.5, "tdslite": 0.4}),
        "direct paced": _c1_run("direct paced", {"loadgen": 0.6, "tdslite": 0.5}),
    }
    tput = {name: _c1_run(name, {}) for name in ("tunnel", "direct+preamble")}
    # bench/bare_client.py's figures, closed loop and at the tunnel's rate
    bare = {"closed": {"cpu_ms_per_query": 0.3}, "paced": {"cpu_ms_per_query": 0.8}}
    c1_figures = {"runs": c1, "bare": bare}
    out = {"relay": "python", "latency_c1": c1_figures, "throughput": {"runs": tput}}
    by_name = {c.name.split(": ", 1)[1]: c for c in checks(out)}
    # the targets stay judged against the closed-loop baselines: the connector's against the
    # bare client's, not the load generator's (a figure beside it)
    judged = by_name["connector CPU / bare python-tds client CPU per query (c1)"]
    assert (judged.value, judged.verdict) == (4.0, "MISSES")
    judged = by_name["tdslite CPU per query tunnel / direct (c1)"]
    assert (judged.value, judged.verdict) == (2.0, "MISSES")
    loadgen = by_name["connector CPU / the load generator's python-tds client CPU (c1)"]
    assert (loadgen.value, loadgen.verdict) == (2.4, "info")
    # beside them, the same ratios at the tunnel's pace, as figures without a verdict
    paced = by_name["connector CPU / bare python-tds client CPU, at the tunnel's pace (c1)"]
    assert (paced.value, paced.verdict) == (1.5, "info")
    paced = by_name["tdslite CPU per query tunnel / direct, at the tunnel's pace (c1)"]
    assert (paced.value, paced.verdict) == (1.2, "info")


def test_without_paced_runs_no_paced_figures_are_shown() -> None:
    c1 = {
        name: _c1_run(name, {"loadgen": 0.5, "connector": 1.0, "tdslite": 0.5})
        for name in ("tunnel", "direct", "direct+preamble")
    }
    tput = {name: _c1_run(name, {}) for name in ("tunnel", "direct+preamble")}
    out = {"relay": "python", "latency_c1": {"runs": c1}, "throughput": {"runs": tput}}
    assert not [c for c in checks(out) if "pace" in c.name]
