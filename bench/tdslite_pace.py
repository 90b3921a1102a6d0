"""How much of the CPU ratios at concurrency 1 is the work, and how much the pace?

`bench.tunnel`'s checks "tdslite CPU per query, tunnel / direct" and "connector CPU / bare
python-tds client CPU" compare a tunnelled query with direct ones run closed loop. The two also
differ in pace: a tunnelled query takes several times longer end to end (HTTP, relay, WebSocket,
connector), so each process waits longer between two queries and each one starts on colder
caches, which costs CPU per query by itself. This runs, on the same stack
(`bench.stack.open_demo_stack`, every part its own process), at concurrency 1 (`bench.tunnel`'s
`measure` with ``paced``):

1. tunnel: ``SELECT @n AS n`` through relay + connector (RESETCONNECTION, the session context
   and the statement in one request), closed loop;
2. direct: the same query by python-tds straight to tdslite, closed loop (the tdslite check's
   baseline), and direct+preamble: with the connector's reset and session context;
3. direct paced: direct once more, open loop at the rate 1 reached: same work as 2, pace of 1;
4. the connector check's baseline, a bare python-tds client (bench/bare_client.py: one thread, a
   plain loop, the connector's database work), closed loop and at the rate 1 reached.

and prints, for tdslite and for the connector, the CPU ms per query and the ratios against the
closed-loop and the paced baseline: the first is what the check judges, the second what the
tunnel's own work costs at the same pace.

Run: ``.venv/bin/python -m bench.tdslite_pace [--count 1000] [--rounds 3]``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import trio

from bench.checks import ratio
from bench.stack import open_demo_stack, run_bare_client_closed_and_paced
from bench.tunnel import measure, scenario


async def run(count: int, rounds: int) -> list[dict[str, Any]]:
    out = []
    with tempfile.TemporaryDirectory(prefix="edgetds-bench-") as tmp:
        async with open_demo_stack(
            Path(tmp), connector="subprocess", tds_process=True, relay_kind="python-process"
        ) as stack:
            for _ in range(rounds):
                runs = await measure(
                    stack, scenario(1, count=count), warmup=51, preamble=True, paced=True
                )
                cpu = {name: r.context["cpu_ms_per_query"] for name, r in runs.items()}
                t: dict[str, float | None] = {
                    "tunnel": cpu["tunnel"]["tdslite"],
                    "direct": cpu["direct"]["tdslite"],
                    "direct_paced": cpu["direct paced"]["tdslite"],
                }
                bare = await run_bare_client_closed_and_paced(
                    stack.direct, Path(tmp), count=count, rate=runs["tunnel"].throughput_qps
                )
                c: dict[str, float | None] = {
                    "tunnel": cpu["tunnel"]["connector"],
                    "bare": bare["closed"]["cpu_ms_per_query"],
                    "bare_paced": bare["paced"]["cpu_ms_per_query"],
                }
                t["tunnel/direct"] = ratio(t["tunnel"], t["direct"])
                t["tunnel/direct_paced"] = ratio(t["tunnel"], t["direct_paced"])
                c["tunnel/bare"] = ratio(c["tunnel"], c["bare"])
                c["tunnel/bare_paced"] = ratio(c["tunnel"], c["bare_paced"])
                figures = {
                    "tunnel_qps": round(runs["tunnel"].throughput_qps),
                    "direct_qps": round(runs["direct"].throughput_qps),
                    "tdslite": t,
                    "connector": c,
                }
                print(
                    f"{figures['tunnel_qps']} q/s tunnel, {figures['direct_qps']} q/s direct. "
                    f"tdslite CPU ms per query: tunnel {t['tunnel']:.3f}, direct "
                    f"{t['direct']:.3f}, direct paced {t['direct_paced']:.3f}; "
                    f"{t['tunnel/direct']}x closed loop, {t['tunnel/direct_paced']}x paced. "
                    f"Connector {c['tunnel']:.3f}, bare client {c['bare']:.3f}, bare client "
                    f"paced {c['bare_paced']:.3f}; {c['tunnel/bare']}x closed loop, "
                    f"{c['tunnel/bare_paced']}x paced",
                    flush=True,
                )
                out.append(figures)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=1000, help="queries per run")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the five runs")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = parser.parse_args(argv)
    out = trio.run(run, args.count, args.rounds)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
