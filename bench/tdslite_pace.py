"""How much of tdslite's CPU per tunnelled query is the preamble, and how much the pace?

`bench.tunnel`'s check "tdslite CPU per query, tunnel / direct" compares a tunnelled query with a
direct one run closed loop. The two also differ in pace: a tunnelled query takes several times
longer end to end (HTTP, relay, WebSocket, connector), so tdslite waits longer between two
queries and each one starts on colder caches, which costs CPU per query by itself. This runs,
on the same stack (`bench.stack.open_demo_stack`, every part its own process), at concurrency 1:

1. tunnel: ``SELECT @n AS n`` through relay + connector (RESETCONNECTION, the session context
   and the statement in one request), closed loop;
2. direct: the same query by python-tds straight to tdslite, closed loop (the check's baseline);
3. direct paced: the same as 2, open loop at the rate 1 reached: same work as 2, pace of 1.

and prints tdslite's CPU ms per query of each and the ratios tunnel / direct and tunnel / direct
paced: the first is what the check judges, the second what tdslite spends on the preamble.

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
from bench.stack import open_demo_stack, process_cpu_seconds
from bench.tunnel import measure, scenario
from edgetds.loadtest import Plan, TokenSource, run_loadtest


async def run(count: int, rounds: int) -> list[dict[str, Any]]:
    out = []
    with tempfile.TemporaryDirectory(prefix="edgetds-bench-") as tmp:
        async with open_demo_stack(
            Path(tmp), connector="subprocess", tds_process=True, relay_kind="python-process"
        ) as stack:
            assert stack.tds_pid is not None
            for _ in range(rounds):
                sc = scenario(1, count=count)
                runs = await measure(stack, sc, warmup=51)
                tunnel = runs["tunnel"]
                tokens = TokenSource.from_dev_idp(
                    stack.idp_key_dir, sc.identity, users=1, expires_in=3600
                )
                paced = Plan(
                    scenario=sc.with_load(rate=tunnel.throughput_qps, count=count),
                    target_url=None,
                    tunnel=stack.relay.tunnel,
                    tokens=tokens,
                    direct=stack.direct,
                    live=False,
                )
                before = process_cpu_seconds(stack.tds_pid)
                [result] = (await run_loadtest(paced)).values()
                used = process_cpu_seconds(stack.tds_pid) - before
                figures = {
                    "tunnel": tunnel.context["cpu_ms_per_query"]["tdslite"],
                    "direct": runs["direct"].context["cpu_ms_per_query"]["tdslite"],
                    "direct_paced": round(1000 * used / max(result.count, 1), 3),
                    "tunnel_qps": round(tunnel.throughput_qps),
                    "direct_qps": round(runs["direct"].throughput_qps),
                }
                figures["tunnel/direct"] = ratio(figures["tunnel"], figures["direct"])
                figures["tunnel/direct_paced"] = ratio(figures["tunnel"], figures["direct_paced"])
                print(
                    "tdslite CPU ms per query: tunnel {tunnel:.3f} ({tunnel_qps} q/s), direct "
                    "{direct:.3f} ({direct_qps} q/s), direct paced {direct_paced:.3f}; tunnel / "
                    "direct {tunnel/direct}x, tunnel / direct paced {tunnel/direct_paced}x".format(
                        **figures
                    ),
                    flush=True,
                )
                out.append(figures)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=1000, help="queries per run")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the three runs")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = parser.parse_args(argv)
    out = trio.run(run, args.count, args.rounds)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
