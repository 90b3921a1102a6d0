"""The connector's CPU per small query at concurrency 1, and the same for another version of it.

Opens one benchmark stack per connector version (tdslite and ``edgetds relay serve`` as their
own processes, the connector as ``edgetds connector run`` under that version's interpreter and
working tree; the load generator in this process), warms them up, then runs ``--rounds``
rounds; each round sends ``--count`` queries ``SELECT @n AS n`` at concurrency 1 through each
stack's tunnel in turn, then as many straight to tdslite with the connector's per-query
preamble (direct+preamble: the load generator's python-tds client doing the same database
work, a worker thread per query; bench/bare_client.py, the target's baseline, costs about half
of it). Alternating
in small rounds puts every version under the same load from the rest of the machine.

Per round and version it prints, per query: the connector's CPU (all its threads, and its main
thread, the Trio loop, from /proc/PID/task/*/schedstat in ns), its context switches, and the
load generator's CPU in direct+preamble (this process, getrusage), and their ratio; at the end
the median of each.

``--audit``: the connectors write their audit log (``[audit]`` with its defaults: fsync
"always", one hash-chained record per query; the benchmark stacks run without one otherwise), as
real deployments do.

Run: ``.venv/bin/python -m bench.connector_cpu [--rounds 8] [--count 400] [--audit]
[--compare OTHER_WORKTREE ...]`` (e.g. ``git worktree add --detach`` of the code before).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import trio

from bench.stack import DemoStack, context_switches, open_demo_stack, wait_connected
from bench.tunnel import scenario, tunnel_plan
from edgetds.loadtest import Plan, run_loadtest
from tests.support.processes import stop_processes


@dataclass(frozen=True)
class Version:
    label: str
    python: str
    tree: Path


def thread_ns(pid: int) -> tuple[int, int, int]:
    """(ns on CPU of all threads, of the main thread, context switches) of process ``pid``."""
    total = main = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        ns = int((task / "schedstat").read_text().split()[0])
        total += ns
        if task.name == str(pid):
            main = ns
    return total, main, sum(context_switches(pid))


def self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@asynccontextmanager
async def open_stack(
    version: Version,
    workdir: Path,
    *,
    audit: bool = False,
    prefix: Sequence[str] = (),
    launch: Sequence[str] = ("-m", "edgetds"),
    env: Mapping[str, str] | None = None,
    slow: bool = False,
    pool_size: int = 16,
) -> AsyncIterator[tuple[DemoStack, int]]:
    """A stack whose connector runs ``version``'s code; yields it and the connector's pid.

    ``audit``: the connector writes ``workdir/audit.jsonl`` (the ``[audit]`` defaults).
    ``prefix`` (e.g. valgrind), ``launch`` (what follows the interpreter, before ``connector
    run``) and ``env`` (added to this process's) change how it is started; ``slow``: it starts
    and stops slowly (under valgrind), wait longer for both. ``pool_size``: the connector's
    python-tds pool per login.
    """
    async with open_demo_stack(
        workdir,
        connector="none",
        tds_process=True,
        relay_kind="python-process",
        pool_size=pool_size,
    ) as stack:
        if audit:
            with stack.connector_config.open("a") as fh:  # noqa: ASYNC230
                fh.write(f'\n[audit]\nfile = "{workdir / "audit.jsonl"}"\n')
        cmd = [*prefix, version.python, *launch, "connector", "run"]
        cmd += ["--config", str(stack.connector_config)]
        log = open(workdir / "connector.log", "wb")  # noqa: SIM115, ASYNC230
        async with trio.open_nursery() as nursery:
            run = partial(
                trio.run_process,
                cmd,
                check=False,
                cwd=version.tree,
                stdout=subprocess.DEVNULL,
                stderr=log,
                env={**os.environ, **env} if env is not None else None,
            )
            process = await nursery.start(run)
            try:
                timeout_s = 300 if slow else 60
                await wait_connected(stack.relay, stack.idp, timeout_s=timeout_s, connections=2)
                yield stack, process.pid
            finally:
                await stop_processes([process], [log], grace_s=60 if slow else 10)


def plans(stack: DemoStack, count: int) -> tuple[Plan, Plan]:
    """(through the tunnel, direct+preamble) for ``count`` queries at concurrency 1."""
    tunnel = tunnel_plan(stack, scenario(1, count=count))
    loadgen = replace(tunnel, target_url=None, direct=stack.direct, direct_like_connector=True)
    return tunnel, loadgen


async def run(versions: list[Version], rounds: int, count: int, *, audit: bool = False) -> None:
    figures: dict[str, list[tuple[float, float, float]]] = {v.label: [] for v in versions}
    loadgen_ms: list[float] = []
    with tempfile.TemporaryDirectory(prefix="edgetds-conncpu-") as tmp:
        async with AsyncExitStack() as stacks:
            opened = []
            for n, version in enumerate(versions):
                workdir = Path(tmp) / str(n)
                workdir.mkdir()
                stack, pid = await stacks.enter_async_context(
                    open_stack(version, workdir, audit=audit)
                )
                tunnel, loadgen = plans(stack, count)
                await run_loadtest(replace(tunnel, scenario=tunnel.scenario.with_load(count=300)))
                opened.append((version, pid, tunnel, loadgen))
            await run_loadtest(replace(loadgen, scenario=loadgen.scenario.with_load(count=300)))
            print("per query, ms: connector all threads / main thread, switches; load generator")
            for n in range(1, rounds + 1):
                line = []
                for version, pid, tunnel, _ in opened:
                    before = thread_ns(pid)
                    [done] = (await run_loadtest(tunnel)).values()
                    after = thread_ns(pid)
                    if done.errors:
                        raise SystemExit(f"{version.label}: {done.errors} errors")
                    total, main, switches = (
                        (b - a) / done.count for a, b in zip(before, after, strict=True)
                    )
                    figures[version.label].append((total / 1e6, main / 1e6, switches))
                    line.append(
                        f"{version.label} {total / 1e6:.3f} / {main / 1e6:.3f}, {switches:.1f}"
                    )
                t0 = self_cpu()
                [direct] = (await run_loadtest(opened[-1][3])).values()
                loadgen_ms.append(1000 * (self_cpu() - t0) / direct.count)
                load = os.getloadavg()[0]
                print(
                    f"round {n} (load {load:.1f}): {'; '.join(line)}; "
                    f"load generator {loadgen_ms[-1]:.3f}"
                )
            if audit:
                for n, (version, *_) in enumerate(opened):
                    records = (Path(tmp) / str(n) / "audit.jsonl").read_bytes().count(b"\n")
                    print(f"{version.label}: {records} audit records written")
    loadgen_median = statistics.median(loadgen_ms)
    print(f"median load generator's python-tds client: {loadgen_median:.3f} ms")
    for label, rows in figures.items():
        total = statistics.median(r[0] for r in rows)
        main = statistics.median(r[1] for r in rows)
        ratio = statistics.median(r[0] / b for r, b in zip(rows, loadgen_ms, strict=True))
        print(
            f"median {label}: {total:.3f} ms (main thread {main:.3f}); "
            f"ratio to the load generator {ratio:.2f}"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--count", type=int, default=400)
    parser.add_argument("--compare", nargs="*", default=[], help="other worktrees to run too")
    parser.add_argument(
        "--audit",
        action="store_true",
        help='run the connectors with their audit log on ([audit] defaults: fsync "always")',
    )
    args = parser.parse_args(argv)
    here = Path(__file__).resolve().parent.parent
    versions = [Version("this", sys.executable, here)]
    for tree in map(Path, args.compare):
        # ``python -m`` imports from its working directory first: a worktree without a .venv of
        # its own runs under this one's interpreter and libraries
        python = tree / ".venv" / "bin" / "python"
        versions.append(
            Version(tree.name, str(python if python.exists() else sys.executable), tree)
        )
    trio.run(partial(run, versions, args.rounds, args.count, audit=args.audit))


if __name__ == "__main__":
    main()
