"""What does the tunnel cost? Latency and throughput through relay + connector vs direct python-tds.

Everything real on 127.0.0.1, each part in its own process: tdslite (``edgetds tdslite serve``),
the connector (``edgetds connector run``), the Python relay (``edgetds relay serve``; or the
Worker relay under workerd with ``--relay worker``) and the load generator (edgetds.loadtest).
The baseline, measured in the same run against the same tdslite, is the same scenario with
python-tds straight to the database (`edgetds loadtest --direct`), same concurrency.

1. latency: ``SELECT @n AS n`` (one row), closed loop, at concurrency 1 and 64 (the connector's
   pool is 64 then, so both sides have 64 database connections): p50/p99 and the added ms. At
   concurrency 1 a second baseline, direct+preamble, also runs the connector's per-query
   preamble (sp_set_session_context on a request with the RESETCONNECTION flag): what is left
   over it is the cost of HTTP + relay + WebSocket + connector code.
2. throughput: the same query, concurrency = connector pool size (16) on both sides: queries/s.

A third baseline runs in the same stacks: bench/diy_service.py, the HTTP service a team would
write instead (one shared python-tds login, no identity, no policy, same NDJSON), as its own
process, driven by the same load generator, written two ways: "diy" (hypercorn, python-tds in
worker threads) and "diy stdlib" (the standard library's threading HTTP server, python-tds in the
request's own thread: the leaner of the two for a small query).

Each run also reports the CPU time used per query by each process (its CPU-time clock, in
nanoseconds: bench/cputime.py): this process (the load generator), the relay, the connector, tdslite
and the DIY service. On a busy machine latency and throughput swing with the other load, CPU per
query much less: it says where the cost is.

Targets (printed as a table at the end, MEETS/MISSES; see `checks`): tunnel p50 <= 1.6x of
direct+preamble and <= 1.5x of the DIY service (each of the two) at concurrency 1; connector CPU
per query <= 1.25x of a bare python-tds client doing the same database work (bench/bare_client.py:
one thread, a plain loop, its own process, run after the concurrency-1 runs against the same
tdslite); throughput at pool 16 >= 0.6x of direct+preamble; tdslite CPU per query <= 1.2x of
direct. Beside the two CPU targets the table shows the same ratios against baselines run open
loop at the tunnel's rate ("paced": the bare client, and direct for tdslite): a process's CPU per
query grows with the idle time between queries, and the closed-loop baselines run several times
faster than the tunnel.
Run: ``.venv/bin/python -m bench.tunnel [--relay python|worker] [--count N] [--seconds S]``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Mapping
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import trio

from bench.checks import Check, print_table, ratio
from bench.stack import (
    DemoStack,
    open_demo_stack,
    open_diy_service,
    process_cpu_seconds,
    run_bare_client_closed_and_paced,
)
from edgetds.loadtest import Plan, RunResult, TokenSource, compare, parse_scenario, run_loadtest

ECHO = {"name": "echo", "sql": "SELECT @n AS n", "params": {"n": {"int": [1, 1_000_000]}}}


def scenario(concurrency: int, *, count: int | None = None, seconds: float | None = None) -> Any:
    load: dict[str, Any] = {"concurrency": concurrency, "timeout_s": 60}
    load.update({"count": count} if count else {"duration_s": seconds})
    return parse_scenario({"name": "echo", "seed": 1, "load": load, "queries": [ECHO]})


async def measure(
    stack: DemoStack,
    sc: Any,
    *,
    warmup: int,
    preamble: bool = False,
    diys: Mapping[str, tuple[str, int]] | None = None,
    paced: bool = False,
) -> dict[str, RunResult]:
    """Warm both paths up (unrecorded), then run tunnel and direct one after the other; with
    ``preamble`` also direct + the connector's per-query preamble (as "direct+preamble"); with
    ``diys`` (name -> URL, pid of a bench/diy_service.py) also each do-it-yourself service (as
    its name, which also names its process's CPU).

    With ``paced`` (a closed-loop ``sc``) the direct run goes once more, open loop at the rate
    the tunnel reached (as "direct paced"): the same work at the tunnel's pace (the connector's
    paced baseline is the bare client's, `run_bare_client`). A process's CPU per query grows
    with the idle time between two queries (colder caches), and a tunnelled query takes several
    times as long as a direct one, so the closed-loop baselines do their work at a pace no
    tunnelled query has."""
    tokens = TokenSource.from_dev_idp(
        stack.idp_key_dir, sc.identity, users=sc.load.concurrency, expires_in=3600
    )

    def plan(s: Any) -> Plan:
        return Plan(
            scenario=s,
            target_url=stack.relay.http_url,
            tunnel=stack.relay.tunnel,
            tokens=tokens,
            direct=stack.direct,
            live=False,
        )

    await run_loadtest(plan(sc.with_load(count=warmup)))
    variants = {
        "tunnel": replace(plan(sc), direct=None),
        "direct": replace(plan(sc), target_url=None),
    }
    if preamble:
        variants["direct+preamble"] = replace(variants["direct"], direct_like_connector=True)
    diys = diys or {}
    for name, (url, _) in diys.items():
        variants[name] = replace(plan(sc), direct=None, target_url=url)
        await run_loadtest(replace(variants[name], scenario=sc.with_load(count=warmup)))
    runs: dict[str, RunResult] = {}
    for name, variant in variants.items():
        runs[name] = await _run_counted(stack, variant, name, diys)
    if paced:
        variant = replace(
            variants["direct"], scenario=sc.with_load(rate=runs["tunnel"].throughput_qps)
        )
        runs["direct paced"] = await _run_counted(stack, variant, "direct paced", diys)
    return runs


async def _run_counted(
    stack: DemoStack, variant: Plan, name: str, diys: Mapping[str, tuple[str, int]]
) -> RunResult:
    """Run ``variant``; its result (as target ``name``) with every process's CPU ms per query."""
    before = cpu_seconds(stack, diys)
    [result] = (await run_loadtest(variant)).values()
    used = {k: v - before[k] for k, v in cpu_seconds(stack, diys).items()}
    per_query = {k: round(1000 * v / max(result.count, 1), 3) for k, v in used.items()}
    return replace(result, target=name, context={**result.context, "cpu_ms_per_query": per_query})


def cpu_seconds(
    stack: DemoStack, diys: Mapping[str, tuple[str, int]] | None = None
) -> dict[str, float]:
    """CPU seconds used so far by each process of the stack (user + system)."""
    here = "loadgen" if stack.relay_pid is not None else "relay+loadgen"
    out = {here: time.process_time()}
    if stack.relay_pid is not None:
        out["relay"] = process_cpu_seconds(stack.relay_pid)
    if stack.connector_processes:
        out["connector"] = sum(process_cpu_seconds(p.pid) for p in stack.connector_processes)
    if stack.tds_pid is not None:
        out["tdslite"] = process_cpu_seconds(stack.tds_pid)
    for name, (_, pid) in (diys or {}).items():
        out[name] = process_cpu_seconds(pid)
    return out


def line(label: str, run: RunResult) -> str:
    lat = run.latency_ms
    cpu = run.context.get("cpu_ms_per_query", {})
    cpu_text = ", ".join(f"{k} {v:.2f}" for k, v in cpu.items() if v > 0.005)
    return (
        f"  {label:<16} {run.target:<21} p50 {lat['p50']:8.2f} ms  p99 {lat['p99']:8.2f} ms  "
        f"{run.throughput_qps:8.1f} q/s  errors {run.errors}  CPU ms/query: {cpu_text}"
    )


def checks(out: dict[str, Any]) -> list[Check]:
    """The targets this benchmark measures (see bench/checks.py), from its JSON figures."""
    scaling = []
    if "replicas" in out:
        cores = out["replicas"].get("cores") or 0
        judged = cores >= REPLICA_MIN_CORES
        scaling.append(
            Check(
                f"{out['relay']}: throughput 2 connector replicas / 1 (c{REPLICA_CONCURRENCY}"
                + ("" if judged else f"; {cores} cores: judged on {REPLICA_MIN_CORES} or more")
                + ")",
                out["replicas"]["ratio"],
                REPLICA_GOAL if judged else None,
                ">=",
            )
        )
    if "latency_c1" not in out:
        return scaling
    c1 = out["latency_c1"]["runs"]
    tput = out["throughput"]["runs"]

    def p50(runs: dict[str, Any], name: str) -> float | None:
        return runs[name]["latency_ms"]["p50"] if name in runs else None

    def cpu(runs: dict[str, Any], name: str, process: str) -> float | None:
        return runs[name]["cpu_ms_per_query"].get(process) if name in runs else None

    bare = out["latency_c1"].get("bare", {})
    connector = cpu(c1, "tunnel", "connector")
    relay = out["relay"]
    # Figures beside the targets, not targets: the two CPU ratios against baselines run at the
    # tunnel's pace, and the connector's against the load generator's own python-tds client
    # (the targets are judged against the closed-loop baselines).
    figures = []
    if "paced" in bare:
        figures.append(
            Check(
                f"{relay}: connector CPU / bare python-tds client CPU, at the tunnel's pace (c1)",
                ratio(connector, bare["paced"]["cpu_ms_per_query"]),
                None,
            )
        )
    if "loadgen" in c1["direct"]["cpu_ms_per_query"]:
        figures.append(
            Check(
                f"{relay}: connector CPU / the load generator's python-tds client CPU (c1)",
                ratio(connector, cpu(c1, "direct+preamble", "loadgen")),
                None,
            )
        )
    if "direct paced" in c1:
        figures.append(
            Check(
                f"{relay}: tdslite CPU per query tunnel / direct, at the tunnel's pace (c1)",
                ratio(cpu(c1, "tunnel", "tdslite"), cpu(c1, "direct paced", "tdslite")),
                None,
            )
        )
    return [
        Check(
            f"{relay}: tunnel p50 / direct+preamble p50 (c1)",
            ratio(p50(c1, "tunnel"), p50(c1, "direct+preamble")),
            1.6,
        ),
        Check(
            f"{relay}: tunnel p50 / DIY service p50 (c1; hypercorn, worker threads)",
            ratio(p50(c1, "tunnel"), p50(c1, "diy")),
            1.5,
        ),
        Check(
            f"{relay}: tunnel p50 / DIY service p50 (c1; stdlib, the request's thread)",
            ratio(p50(c1, "tunnel"), p50(c1, "diy stdlib")),
            1.5,
        ),
        Check(
            f"{relay}: connector CPU / bare python-tds client CPU per query (c1)",
            ratio(connector, bare.get("closed", {}).get("cpu_ms_per_query")),
            1.25,
        ),
        Check(
            f"{relay}: throughput tunnel / direct+preamble (pool 16)",
            ratio(
                tput["tunnel"]["throughput_qps"],
                tput.get("direct+preamble", {}).get("throughput_qps"),
            ),
            0.6,
            ">=",
        ),
        Check(
            f"{relay}: tdslite CPU per query tunnel / direct (c1)",
            ratio(cpu(c1, "tunnel", "tdslite"), cpu(c1, "direct", "tdslite")),
            1.2,
        ),
        *figures,
        *scaling,
    ]


def tunnel_plan(stack: DemoStack, sc: Any) -> Plan:
    """The plan of scenario ``sc`` through the stack's tunnel only (dev IdP tokens, one user per
    unit of concurrency)."""
    tokens = TokenSource.from_dev_idp(
        stack.idp_key_dir, sc.identity, users=sc.load.concurrency, expires_in=3600
    )
    return Plan(
        scenario=sc,
        target_url=stack.relay.http_url,
        tunnel=stack.relay.tunnel,
        tokens=tokens,
        live=False,
    )


async def warm_tunnel_plan(stack: DemoStack, concurrency: int, seconds: float) -> Plan:
    """The plan of ``SELECT @n`` through the tunnel only, closed loop at ``concurrency`` for
    ``seconds``, after 100 unrecorded queries through it."""
    sc = scenario(concurrency, seconds=seconds)
    plan = tunnel_plan(stack, sc)
    await run_loadtest(replace(plan, scenario=sc.with_load(count=100)))
    return plan


#: the load of the replicas run: enough to keep two replicas' pools (16 each) busy
REPLICA_CONCURRENCY = 32
#: a second replica is worth running where it adds at least this much throughput
REPLICA_GOAL = 1.3
#: the stack runs five busy processes (load generator, relay, tdslite, two replicas); with fewer
#: cores than this a second replica only takes CPU from the others, so the ratio is shown
#: without a verdict
REPLICA_MIN_CORES = 5


async def replica_scaling(relay: str, seconds: float, out: dict[str, Any]) -> None:
    """Throughput through 1 and then 2 replicas of the connector (``connector run --replica N``,
    one connector id), same load (concurrency 32), tunnel only."""
    print(f"(3) throughput through 1 vs 2 connector replicas, concurrency {REPLICA_CONCURRENCY}")
    runs: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="edgetds-bench-") as tmp:
        for replicas in (1, 2):
            work = Path(tmp) / f"replicas{replicas}"
            async with open_demo_stack(
                work, connector="subprocess", tds_process=True, relay_kind=relay, replicas=replicas
            ) as stack:
                plan = await warm_tunnel_plan(stack, REPLICA_CONCURRENCY, seconds)
                before = cpu_seconds(stack)
                [result] = (await run_loadtest(plan)).values()
                used = {k: v - before[k] for k, v in cpu_seconds(stack).items()}
            per_query = {k: round(1000 * v / max(result.count, 1), 3) for k, v in used.items()}
            name = f"{replicas} replica" + ("s" if replicas > 1 else "")
            run = replace(result, target=name, context={"cpu_ms_per_query": per_query})
            runs[name] = run.as_json() | {"timeline": None}
            print(line(f"concurrency {REPLICA_CONCURRENCY}", run))
    ratio_2_1 = ratio(runs["2 replicas"]["throughput_qps"], runs["1 replica"]["throughput_qps"])
    print(f"  -> throughput 2 replicas / 1 replica: {ratio_2_1}x (on {os.cpu_count()} cores)")
    out["replicas"] = {"runs": runs, "ratio": ratio_2_1, "cores": os.cpu_count()}


async def run(
    relay: str, count: int, seconds: float, out: dict[str, Any], *, only_replicas: bool = False
) -> None:
    if not only_replicas:
        await run_latency_throughput(relay, count, seconds, out)
    await replica_scaling(relay, seconds, out)
    out["checks"] = [c.as_json() for c in checks(out)]
    print_table(checks(out), f"tunnel ({relay} relay)")


async def run_latency_throughput(
    relay: str, count: int, seconds: float, out: dict[str, Any]
) -> None:
    with tempfile.TemporaryDirectory(prefix="edgetds-bench-") as tmp:
        print(f"(1) latency added by {relay} relay + connector over direct python-tds")
        for concurrency, pool in ((1, 16), (64, 64)):
            work = Path(tmp) / f"c{concurrency}"
            async with (
                open_demo_stack(
                    work,
                    connector="subprocess",
                    tds_process=True,
                    relay_kind=relay,
                    pool_size=pool,
                ) as stack,
                open_diy_service(stack.direct, work, pool=pool) as diy,
                open_diy_service(stack.direct, work, pool=pool, server="stdlib") as diy_stdlib,
            ):
                n = count if concurrency == 1 else count * 4
                runs = await measure(
                    stack,
                    scenario(concurrency, count=n),
                    warmup=50 + concurrency,
                    preamble=concurrency == 1,
                    diys={"diy": diy, "diy stdlib": diy_stdlib},
                    paced=concurrency == 1,
                )
                bare = {}
                if concurrency == 1:
                    bare = await run_bare_client_closed_and_paced(
                        stack.direct, work, count=n, rate=runs["tunnel"].throughput_qps
                    )
            ratios = compare(runs["tunnel"], runs["direct"])
            for r in runs.values():
                print(line(f"concurrency {concurrency}", r))
            for kind, figures in bare.items():
                label = "bare python-tds" + (" paced" if kind == "paced" else "")
                print(
                    f"  concurrency 1    {label:<21} {'':34}{figures['qps']:8.1f} q/s  "
                    f"CPU ms/query: bare client {figures['cpu_ms_per_query']:.2f}"
                )
            print(
                f"  -> added p50 {ratios['added_p50_ms']} ms, added p99 {ratios['added_p99_ms']} "
                f"ms, p50 ratio {ratios['p50']}x, p99 ratio {ratios['p99']}x over direct"
            )
            if "direct+preamble" in runs:
                rest = compare(runs["tunnel"], runs["direct+preamble"])
                print(
                    f"  -> over direct+preamble (the connector's reset + "
                    f"sp_set_session_context round trip): added p50 {rest['added_p50_ms']} ms, "
                    f"p99 {rest['added_p99_ms']} ms"
                )
            out[f"latency_c{concurrency}"] = {
                "runs": {k: v.as_json() | {"timeline": None} for k, v in runs.items()},
                "ratios": ratios,
                **({"bare": bare} if bare else {}),
            }
        if relay == "worker":
            await workerd_floor(count, out)
        print(f"(2) throughput through one connector vs direct, pool 16, {seconds:.0f} s each")
        work = Path(tmp) / "tput"
        async with (
            open_demo_stack(
                work, connector="subprocess", tds_process=True, relay_kind=relay
            ) as stack,
            open_diy_service(stack.direct, work, pool=16) as diy,
            open_diy_service(stack.direct, work, pool=16, server="stdlib") as diy_stdlib,
        ):
            runs = await measure(
                stack,
                scenario(16, seconds=seconds),
                warmup=100,
                preamble=True,
                diys={"diy": diy, "diy stdlib": diy_stdlib},
            )
        ratios = compare(runs["tunnel"], runs["direct"])
        for r in runs.values():
            print(line("concurrency 16", r))
        print(f"  -> throughput ratio {ratios['throughput']} over direct")
        out["throughput"] = {
            "runs": {k: v.as_json() | {"timeline": None} for k, v in runs.items()},
            "ratios": ratios,
        }


async def workerd_floor(count: int, out: dict[str, Any]) -> None:
    """The workerd floor (bench/worker_floor.py), by the same client, after the c1 stacks ended:
    what the relay Worker's CPU per query is over it is the relay's own work."""
    from bench.worker_floor import measure_floor  # workerd and its config: loaded when asked for

    floor = await measure_floor(max(count, 1000))
    relay = out["latency_c1"]["runs"]["tunnel"]["cpu_ms_per_query"].get("relay")
    print(
        f"  workerd floor, CPU ms per request: fetch {floor['plain']:.3f}, fetch + JSON.parse + "
        f"DO RPC {floor['rpc']:.3f}; Worker relay CPU / workerd floor (fetch + DO RPC) per query "
        f"(c1): {ratio(relay, floor['rpc'])}x"
    )
    out["floor"] = floor


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--relay",
        choices=("python-process", "python", "worker"),
        default="python-process",
        help="python-process: `edgetds relay serve` (default); python: in the load generator's "
        "process; worker: the Worker under workerd",
    )
    parser.add_argument(
        "--count", type=int, default=500, help="queries at concurrency 1 (x4 at 64)"
    )
    parser.add_argument("--seconds", type=float, default=10, help="throughput run length")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    parser.add_argument(
        "--replicas", action="store_true", help="only (3): throughput of 1 vs 2 connector replicas"
    )
    args = parser.parse_args(argv)
    out: dict[str, Any] = {"relay": args.relay}
    trio.run(partial(run, only_replicas=args.replicas), args.relay, args.count, args.seconds, out)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
