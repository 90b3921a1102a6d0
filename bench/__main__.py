"""Run every benchmark in bench/, one after the other (``make bench`` = ``python -m bench``).

Each prints its own figures with a ratio against a baseline measured in the same run. Not part of
``make test``: the numbers depend on the machine and on what else runs on it.

    python -m bench            # everything, full sizes (1,000,000-row result: minutes)
    python -m bench --quick    # smaller sizes, for a first look
    python -m bench tunnel codec   # some of them
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.checks import Check, print_table, ratio

#: name -> (module, full args, quick args)
BENCHES: dict[str, tuple[str, list[str], list[str]]] = {
    "tunnel": ("bench.tunnel", [], ["--count", "200", "--seconds", "5"]),
    "big_result": ("bench.big_result", [], ["--rows", "100000"]),
    "codec": ("bench.codec", [], ["--frames", "50000", "--rounds", "1000"]),
    "worker": ("bench.tunnel", ["--relay", "worker"], ["--relay", "worker", "--count", "200",
                                                       "--seconds", "5"]),
    "ws_transport": ("bench.ws_transport", [], ["--rounds", "1000", "--messages", "5000"]),
    "relay_latency": ("bench.relay_latency", [], []),
    "tdslite_throughput": ("bench.tdslite_throughput", [], []),
    "big_statements": ("bench.big_statements", [], ["--count", "50"]),
    "sessions": ("bench.sessions", [], ["--count", "50"]),
}  # fmt: skip


#: the benchmarks that write their figures and checks with ``--json FILE``
WITH_JSON = ("tunnel", "big_result", "worker")


def _relay_cpu(figures: dict[str, Any]) -> float | None:
    runs = figures.get("latency_c1", {}).get("runs", {})
    value = runs.get("tunnel", {}).get("cpu_ms_per_query", {}).get("relay")
    return float(value) if value else None


def summary(figures: dict[str, dict[str, Any]]) -> list[Check]:
    """Every module's checks, plus the one across two runs: the Worker relay's CPU per query
    against the Python relay's (each measured against the same load at concurrency 1), and the
    Worker relay's against the workerd floor measured in its run (bench/worker_floor.py)."""
    out = [Check.from_json(c) for f in figures.values() for c in f.get("checks", [])]
    if "tunnel" in figures or "worker" in figures:
        worker = _relay_cpu(figures.get("worker", {}))
        python = _relay_cpu(figures.get("tunnel", {}))
        out.append(
            Check("Worker relay CPU / Python relay CPU per query (c1)", ratio(worker, python), 0.5)
        )
    floor = figures.get("worker", {}).get("floor", {}).get("rpc")
    if floor:
        name = "Worker relay CPU / workerd floor (fetch + DO RPC) per query (c1)"
        out.append(Check(name, ratio(_relay_cpu(figures["worker"]), floor), None))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", help=f"some of: {', '.join(BENCHES)} (default: all)")
    parser.add_argument("--quick", action="store_true", help="smaller sizes")
    args = parser.parse_args()
    unknown = [n for n in args.names if n not in BENCHES]
    if unknown:
        parser.error(f"unknown benchmark {unknown[0]!r}; choose from {', '.join(BENCHES)}")
    root = Path(__file__).resolve().parent.parent
    failed = []
    figures: dict[str, dict[str, Any]] = {}
    scratch = Path(tempfile.mkdtemp(prefix="edgetds-bench-json-"))
    for name in args.names or list(BENCHES):
        module, full, quick = BENCHES[name]
        if not (root / (module.replace(".", "/") + ".py")).exists():
            print(f"== {name}: skipped ({module} is not in this tree)")
            continue
        if name == "worker" and not (root / "node_modules" / ".bin" / "workerd").exists():
            print("== worker: skipped (no workerd: run `make node-deps`)")
            continue
        print(f"\n== {name} ({module})", flush=True)
        start = time.perf_counter()
        cmd = [sys.executable, "-m", module, *(quick if args.quick else full)]
        output = scratch / f"{name}.json"
        if name in WITH_JSON:
            cmd += ["--json", str(output)]
        done = subprocess.run(cmd)
        print(f"   [{name}: exit {done.returncode}, {time.perf_counter() - start:.0f} s]")
        if done.returncode != 0:
            failed.append(name)
        elif output.exists():
            figures[name] = json.loads(output.read_text())
    print_table(summary(figures), "summary: every target (ratios measured in the same run)")
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
