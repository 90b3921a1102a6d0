"""The Worker relay's CPU per query, one source tree against another, alternated in one run.

Opens one stack per relay, each its own processes (tdslite, ``edgetds connector run``, the
relay: workerd for a Worker tree, ``edgetds relay serve`` for ``--python``), then runs rounds of
``SELECT @n AS n`` through each tunnel in turn at concurrency 1 (the order reversed every other
round), and prints the relay process's CPU time per query (bench/cputime.py) for each round and the
median. While the machine is loaded, CPU per query swings between rounds; alternating the
relays round by round puts them under the same load.

``--base DIR`` is another checkout of this repository (e.g. ``git worktree add --detach DIR
REF``, with ``node_modules`` linked or installed): its ``relay/worker`` is bundled and run as
"base"; this checkout's is "head".

Run: ``.venv/bin/python -m bench.worker_ab --base DIR [--python] [--rounds 6] [--count 800]``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import replace
from pathlib import Path

import trio

from bench.stack import DemoStack, open_demo_stack, process_cpu_seconds
from bench.tunnel import warm_tunnel_plan
from edgetds.loadtest import run_loadtest


@contextmanager
def _worker_tree(root: Path | None) -> Iterator[None]:
    """Bundle the Worker from ``root`` (another checkout) while a stack starts."""
    from tests.support import worker_relay

    if root is None:
        yield
        return
    kept = worker_relay.BUILD_SCRIPT
    worker_relay.BUILD_SCRIPT = root / "relay" / "worker" / "scripts" / "workerd.mjs"
    try:
        yield
    finally:
        worker_relay.BUILD_SCRIPT = kept


@asynccontextmanager
async def _stack(work: Path, kind: str, root: Path | None) -> AsyncIterator[DemoStack]:
    with _worker_tree(root):
        opened = open_demo_stack(work, connector="subprocess", tds_process=True, relay_kind=kind)
        stack = await opened.__aenter__()
    try:
        yield stack
    finally:
        await opened.__aexit__(None, None, None)


async def run(base: Path, python: bool, rounds: int, count: int) -> dict[str, list[float]]:
    relays = {"base": ("worker", base), "head": ("worker", None)}
    if python:
        relays["python"] = ("python-process", None)
    cpu: dict[str, list[float]] = {name: [] for name in relays}
    with tempfile.TemporaryDirectory(prefix="edgetds-ab-") as tmp:
        async with AsyncExitStack() as exits:
            plans = {}
            for name, (kind, root) in relays.items():
                stack = await exits.enter_async_context(_stack(Path(tmp) / name, kind, root))
                plan = await warm_tunnel_plan(stack, 1, 1)
                plan = replace(plan, scenario=plan.scenario.with_load(count=count))
                plans[name] = (stack, plan)
            for r in range(rounds):
                order = list(plans) if r % 2 == 0 else list(reversed(plans))
                for name in order:
                    stack, plan = plans[name]
                    assert stack.relay_pid is not None
                    before = process_cpu_seconds(stack.relay_pid)
                    [result] = (await run_loadtest(plan)).values()
                    used = process_cpu_seconds(stack.relay_pid) - before
                    if result.errors:
                        raise RuntimeError(f"{name}: {result.errors_by_code}")
                    cpu[name].append(1000 * used / result.count)
                    lat = result.latency_ms
                    print(
                        f"round {r + 1} {name:<6} {cpu[name][-1]:.3f} CPU ms/query  "
                        f"p50 {lat['p50']:.2f} ms  {result.count} queries",
                        flush=True,
                    )
    print("median (range) CPU ms per query:")
    for name, values in cpu.items():
        print(f"  {name:<6} {statistics.median(values):.3f} ({min(values):.3f}-{max(values):.3f})")
    if python:
        for name in ("base", "head"):
            pairs = [w / p for w, p in zip(cpu[name], cpu["python"], strict=True)]
            print(f"  {name} / python per round: {', '.join(f'{x:.2f}' for x in pairs)}")
    return cpu


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base", type=Path, required=True, help="the other checkout")
    parser.add_argument("--python", action="store_true", help="also the Python relay")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--count", type=int, default=800, help="queries per relay per round")
    args = parser.parse_args(argv)
    trio.run(run, args.base.resolve(), args.python, args.rounds, args.count)


if __name__ == "__main__":
    main()
