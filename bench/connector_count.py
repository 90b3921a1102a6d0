"""The connector's work per small query, counted: callgrind instructions and Python calls.

Opens the benchmark stack (tdslite and ``edgetds relay serve`` as their own processes) with the
connector as ``edgetds connector run`` from ``--tree`` (default: this one; its ``.venv`` when it
has one), the load generator in this process, and sends ``SELECT @n AS n`` at concurrency 1.

``--callgrind``: the connector runs under ``valgrind --tool=callgrind --instr-atstart=no``;
after a warm-up, instrumentation is switched on (``callgrind_control -i on``) around
``--count`` queries only, and the instructions of all its threads are divided by the count.
The output file is kept in ``--out`` for ``callgrind_annotate``.

``--cprofile``: the connector runs with a cProfile profiler in each of its threads (the Trio
thread and every worker thread), written at exit; two runs (``--count`` and three times as
many queries after the same warm-up) give the Python function calls per query as their
difference, and ``--out`` keeps the larger run's merged profile (``pstats``).

Both are deterministic up to hash seeds and timers (PYTHONHASHSEED=0 in the connector).

Run: ``.venv/bin/python -m bench.connector_count --callgrind [--count 300] [--tree OTHER]
[--out DIR]``
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import trio

from bench.connector_cpu import Version, open_stack, plans
from bench.stack import DemoStack
from edgetds.loadtest import run_loadtest

#: run as ``python -c`` in the connector's tree: a cProfile profiler per thread, all written
#: (merged) to the file named by EDGETDS_PROFILE_OUT when the process exits
_PROFILED = """
import atexit, cProfile, os, pstats, runpy, sys, threading
profiles = []
def profiled(run):
    def wrapper(self):
        profile = cProfile.Profile()
        profiles.append(profile)
        profile.enable()
        try:
            run(self)
        finally:
            profile.disable()
    return wrapper
threading.Thread.run = profiled(threading.Thread.run)
def dump():
    for profile in profiles:
        profile.disable()
    stats = pstats.Stats(profiles[0])
    for profile in profiles[1:]:
        stats.add(profile)
    stats.dump_stats(os.environ["EDGETDS_PROFILE_OUT"])
main = cProfile.Profile()
profiles.append(main)
atexit.register(dump)
sys.argv = ["edgetds", *sys.argv[1:]]
main.enable()
runpy.run_module("edgetds", run_name="__main__", alter_sys=True)
"""


def _stack(tree: Path, workdir: Path, **how: Any) -> Any:
    """`bench.connector_cpu.open_stack` with ``tree``'s connector (its .venv when it has one)."""
    venv = tree / ".venv" / "bin" / "python"
    version = Version(tree.name, str(venv if venv.exists() else sys.executable), tree)
    env = {"PYTHONHASHSEED": "0", **how.pop("env", {})}
    return open_stack(version, workdir, env=env, slow=True, **how)


async def _queries(stack: DemoStack, count: int) -> None:
    tunnel, _ = plans(stack, count)
    [done] = (await run_loadtest(tunnel)).values()
    if done.errors or done.count != count:
        raise SystemExit(f"{done.errors} errors, {done.count} of {count} queries")


def _control(pid: int, *args: str) -> None:
    subprocess.run(["callgrind_control", *args, str(pid)], check=True, capture_output=True)


async def callgrind(tree: Path, count: int, warm: int, out: Path) -> float:
    out.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - before the stack starts
    result = out / "callgrind.out"
    prefix = ["valgrind", "--tool=callgrind", "--instr-atstart=no"]
    prefix.append(f"--callgrind-out-file={result}")
    with tempfile.TemporaryDirectory(prefix="edgetds-conncount-") as tmp:
        async with _stack(tree, Path(tmp), prefix=prefix) as (stack, pid):
            await _queries(stack, warm)
            await trio.to_thread.run_sync(_control, pid, "-z")
            await trio.to_thread.run_sync(_control, pid, "-i", "on")
            await _queries(stack, count)
            await trio.to_thread.run_sync(_control, pid, "-i", "off")
            await trio.to_thread.run_sync(_control, pid, "-d")
    dump = result.with_name(result.name + ".1")
    for text in dump.read_text().splitlines():
        if text.startswith("totals:"):
            return int(text.split()[1]) / count
    raise SystemExit(f"no totals in {dump}")


async def cprofile_calls(tree: Path, count: int, warm: int, out: Path) -> float:
    import pstats

    out.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - before the stack starts
    totals: list[int] = []
    for n in (count, 3 * count):
        target = out / f"cprofile-{n}.pstats"
        env = {"EDGETDS_PROFILE_OUT": str(target)}
        with tempfile.TemporaryDirectory(prefix="edgetds-conncount-") as tmp:
            async with _stack(tree, Path(tmp), launch=["-c", _PROFILED], env=env) as (stack, _):
                await _queries(stack, warm)
                await _queries(stack, n)
        totals.append(pstats.Stats(str(target)).total_calls)  # type: ignore[attr-defined]
    return (totals[1] - totals[0]) / (2 * count)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tree", type=Path, default=Path(__file__).resolve().parent.parent)
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--warm", type=int, default=60)
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "conncount")
    parser.add_argument("--callgrind", action="store_true")
    parser.add_argument("--cprofile", action="store_true")
    args = parser.parse_args(argv)
    tree = args.tree.resolve()
    if args.callgrind:
        per = trio.run(callgrind, tree, args.count, args.warm, args.out)
        print(f"{tree}: {per:,.0f} instructions per query (callgrind, {args.count} queries)")
    if args.cprofile:
        calls = trio.run(cprofile_calls, tree, args.count, args.warm, args.out)
        print(f"{tree}: {calls:,.1f} Python function calls per query (cProfile, all threads)")


if __name__ == "__main__":
    main()
