"""`python -m bench`'s summary table reads what the benchmark modules write: the Worker relay's CPU
per query against the Python relay's comes from the two bench.tunnel runs' JSON figures."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from bench.__main__ import summary
from bench.checks import print_table
from bench.tunnel import REPLICA_MIN_CORES, checks
from edgetds.loadtest.stats import RunResult


def _figures(relay_cpu_ms: float) -> dict[str, Any]:
    """The JSON bench.tunnel writes for its concurrency-1 run, from a real RunResult."""
    run = RunResult(
        target="tunnel", started_at=0.0, duration_s=1.0, count=10, ok=10, errors=0,
        errors_by_code={}, error_samples={}, rows=10, bytes=100, throughput_qps=10.0,
        rows_per_s=10.0, latency_ms={"p50": 1.0}, by_query={}, distribution=[], timeline=[],
        context={},
    )  # fmt: skip
    measured = replace(run, context={"cpu_ms_per_query": {"relay": relay_cpu_ms}})
    return {"latency_c1": {"runs": {"tunnel": measured.as_json() | {"timeline": None}}}}


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
