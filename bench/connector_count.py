"""The connector's work per small query, counted: callgrind instructions, Python calls, context
switches and system calls.

Opens the benchmark stack (tdslite and ``edgetds relay serve`` as their own processes) with the
connector as ``edgetds connector run`` from ``--tree`` (default: this one; its ``.venv`` when it
has one), the load generator in this process, and sends ``SELECT @n AS n`` at ``--concurrency``
(default 1: one query in flight at a time; the connector's pool holds at least that many
connections, 16 by default).

``--callgrind``: the connector runs under ``valgrind --tool=callgrind --instr-atstart=no``;
after a warm-up, instrumentation is switched on (``callgrind_control -i on``) around
``--count`` queries only, and the instructions of all its threads are divided by the count.
The output file is kept in ``--out`` for ``callgrind_annotate``. (Valgrind runs one thread at a
time: the count is the work done, not how the threads met.)

``--cprofile``: the connector runs with a cProfile profiler in each of its threads (the Trio
thread and every worker thread), written at exit; two runs (``--count`` and three times as
many queries after the same warm-up) give the Python function calls per query as their
difference, and ``--out`` keeps the larger run's merged profile (``pstats``).

``--switches``: the connector runs as it is; after the warm-up, ``--count`` queries give its
voluntary and involuntary context switches per query (summed over its threads,
/proc/PID/task/*/status), its CPU per query (all threads: /proc/PID/task/*/schedstat; user and
system: /proc/PID/stat, in clock ticks, so count a few thousand queries), and then, with
``strace -c -f`` attached to all its threads, ``--count`` more give its system calls per query
(strace slows it down: the calls made, not their timing); ``--out`` keeps strace's summary.

``--audit``: the connector writes its audit log (``[audit]`` with its defaults: fsync "always",
as ``bench.connector_cpu --audit`` runs it), so each of the three counts it too.

Callgrind and cProfile are deterministic up to hash seeds and timers (PYTHONHASHSEED=0 in the
connector); at a concurrency above 1 the counts also depend on how the queries meet.

Run: ``.venv/bin/python -m bench.connector_count --callgrind [--count 300] [--concurrency 16]
[--tree OTHER] [--out DIR] [--audit]``; ``--switches --count 3000 --concurrency 16``
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import trio

from bench.connector_cpu import Version, open_stack, thread_ns
from bench.stack import DemoStack, context_switches, strace_counts, user_system_s
from bench.tunnel import scenario, tunnel_plan
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


#: the connector's pool per login unless a higher concurrency needs more
POOL_SIZE = 16


def _stack(tree: Path, workdir: Path, concurrency: int, **how: Any) -> Any:
    """`bench.connector_cpu.open_stack` with ``tree``'s connector (its .venv when it has one),
    a pool of at least ``concurrency`` connections and, when ``audit=True`` is among ``how``,
    its audit log."""
    venv = tree / ".venv" / "bin" / "python"
    version = Version(tree.name, str(venv if venv.exists() else sys.executable), tree)
    env = {"PYTHONHASHSEED": "0", **how.pop("env", {})}
    pool_size = max(POOL_SIZE, concurrency)
    return open_stack(version, workdir, env=env, pool_size=pool_size, **how)


async def _queries(stack: DemoStack, count: int, concurrency: int) -> None:
    tunnel = tunnel_plan(stack, scenario(concurrency, count=count))
    [done] = (await run_loadtest(tunnel)).values()
    if done.errors or done.count != count:
        raise SystemExit(f"{done.errors} errors, {done.count} of {count} queries")


def strace_calls(summary: str) -> tuple[int, int]:
    """(all system calls, futex calls) in the summary that ``strace -c`` writes."""
    counts = strace_counts(summary)
    return counts["total"], counts.get("futex", 0)


def _control(pid: int, *args: str) -> None:
    subprocess.run(["callgrind_control", *args, str(pid)], check=True, capture_output=True)


async def callgrind(
    tree: Path, count: int, warm: int, out: Path, concurrency: int = 1, audit: bool = False
) -> float:
    out.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - before the stack starts
    result = out / "callgrind.out"
    prefix = ["valgrind", "--tool=callgrind", "--instr-atstart=no"]
    prefix.append(f"--callgrind-out-file={result}")
    with tempfile.TemporaryDirectory(prefix="edgetds-conncount-") as tmp:
        how = {"prefix": prefix, "slow": True, "audit": audit}
        async with _stack(tree, Path(tmp), concurrency, **how) as (stack, pid):
            await _queries(stack, warm, concurrency)
            await trio.to_thread.run_sync(_control, pid, "-z")
            await trio.to_thread.run_sync(_control, pid, "-i", "on")
            await _queries(stack, count, concurrency)
            await trio.to_thread.run_sync(_control, pid, "-i", "off")
            await trio.to_thread.run_sync(_control, pid, "-d")
    dump = result.with_name(result.name + ".1")
    for text in dump.read_text().splitlines():
        if text.startswith("totals:"):
            return int(text.split()[1]) / count
    raise SystemExit(f"no totals in {dump}")


async def cprofile_calls(
    tree: Path, count: int, warm: int, out: Path, concurrency: int = 1, audit: bool = False
) -> float:
    import pstats

    out.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - before the stack starts
    totals: list[int] = []
    for n in (count, 3 * count):
        target = out / f"cprofile-{n}.pstats"
        env = {"EDGETDS_PROFILE_OUT": str(target)}
        with tempfile.TemporaryDirectory(prefix="edgetds-conncount-") as tmp:
            how = {"launch": ["-c", _PROFILED], "env": env, "slow": True, "audit": audit}
            async with _stack(tree, Path(tmp), concurrency, **how) as (stack, _):
                await _queries(stack, warm, concurrency)
                await _queries(stack, n, concurrency)
        totals.append(pstats.Stats(str(target)).total_calls)  # type: ignore[attr-defined]
    return (totals[1] - totals[0]) / (2 * count)


async def switches(
    tree: Path, count: int, warm: int, out: Path, concurrency: int, audit: bool = False
) -> dict[str, float]:
    """Per query: context switches, CPU ms and (with strace on PATH) system calls; ``out``
    keeps strace's summary (strace.txt)."""
    out.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - before the stack starts
    per: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="edgetds-conncount-") as tmp:
        async with _stack(tree, Path(tmp), concurrency, audit=audit) as (stack, pid):
            await _queries(stack, warm, concurrency)
            switched, cpu, ns = context_switches(pid), user_system_s(pid), thread_ns(pid)[0]
            await _queries(stack, count, concurrency)
            after, cpu_after = context_switches(pid), user_system_s(pid)
            per["voluntary"], per["involuntary"] = (
                (b - a) / count for a, b in zip(switched, after, strict=True)
            )
            per["user_ms"], per["system_ms"] = (
                1000 * (b - a) / count for a, b in zip(cpu, cpu_after, strict=True)
            )
            per["cpu_ms"] = (thread_ns(pid)[0] - ns) / 1e6 / count
            if shutil.which("strace"):
                per["syscalls"], per["futex"] = await _traced(
                    stack, pid, out / "strace.txt", count, concurrency
                )
    return per


async def _traced(
    stack: DemoStack, pid: int, out: Path, count: int, concurrency: int
) -> tuple[float, float]:
    """(system calls, of which futex) per query of ``count`` queries, ``strace -c -f``
    attached to all threads."""
    cmd = ["strace", "-c", "-f", "-o", str(out), "-p", str(pid)]
    strace = await trio.lowlevel.open_process(cmd, stderr=subprocess.PIPE)
    try:
        assert strace.stderr is not None
        said = b""
        while b" attached" not in said.partition(b"\n")[0]:  # "attached with N threads"
            chunk = await strace.stderr.receive_some()
            if not chunk:
                raise SystemExit(f"strace: {said.decode(errors='replace')}")
            said += chunk
        await _queries(stack, count, concurrency)
    finally:
        strace.send_signal(signal.SIGINT)  # it detaches and writes its summary
        await strace.wait()
    total, futex = strace_calls(out.read_text())  # noqa: ASYNC240 - strace has ended
    return total / count, futex / count


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
    parser.add_argument(
        "--switches",
        action="store_true",
        help="context switches, CPU and system calls per query (no valgrind)",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=1,
        help="queries in flight (default 1); the pool has at least as many connections",
    )
    parser.add_argument(
        "--audit",
        action="store_true",
        help='the connector writes its audit log ([audit] defaults: fsync "always")',
    )
    args = parser.parse_args(argv)
    tree = args.tree.resolve()
    c = args.concurrency
    at = (f", concurrency {c}" if c != 1 else "") + (", audit log on" if args.audit else "")
    if args.callgrind:
        per = trio.run(callgrind, tree, args.count, args.warm, args.out, c, args.audit)
        print(f"{tree}: {per:,.0f} instructions per query (callgrind, {args.count} queries{at})")
    if args.cprofile:
        calls = trio.run(cprofile_calls, tree, args.count, args.warm, args.out, c, args.audit)
        print(f"{tree}: {calls:,.1f} Python function calls per query (cProfile, all threads{at})")
    if args.switches:
        f = trio.run(switches, tree, args.count, args.warm, args.out, c, args.audit)
        print(
            f"{tree}: per query ({args.count} queries{at}): context switches "
            f"{f['voluntary']:.2f} voluntary + {f['involuntary']:.2f} involuntary; CPU "
            f"{f['cpu_ms']:.3f} ms ({f['user_ms']:.3f} user + {f['system_ms']:.3f} system)"
            + (
                f"; {f['syscalls']:.1f} system calls, {f['futex']:.1f} of them futex (strace -c -f)"
                if "syscalls" in f
                else ""
            )
        )


if __name__ == "__main__":
    main()
