"""Where does a tunnelled query spend its time? py-spy profiles of the hot path.

Starts the benchmark stack (tdslite, the connector and the Python relay as their own processes,
the load generator in this one), runs ``SELECT @n AS n`` closed loop for ``--seconds``, and
samples with py-spy (``--idle`` off: the thread holding the GIL only, i.e. Python CPU;
``--idle`` on: wall clock, to see waits) the
connector, the relay and the load generator,

then prints the top functions by self time and by inclusive time (file:line), and writes the
raw collapsed stacks and a speedscope JSON next to each other in ``--out`` for a flame graph.

Run: ``.venv/bin/python -m bench.profile_tunnel [--seconds 10] [--concurrency 1] [--idle]``
(needs ptrace rights: root, or kernel.yama.ptrace_scope = 0).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import trio

from bench.stack import open_demo_stack
from bench.tunnel import warm_tunnel_plan
from edgetds.loadtest import run_loadtest

PY_SPY = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")


def top_frames(
    collapsed: Path, n: int = 12
) -> tuple[list[tuple[str, int]], list[tuple[str, int]], int]:
    """(top self, top inclusive, total samples) from py-spy's raw collapsed-stack output."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for text in collapsed.read_text().splitlines():
        stack, _, count_text = text.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    return own.most_common(n), inclusive.most_common(n * 2), total


def short(frame: str) -> str:
    return frame.replace(str(Path.cwd()) + "/", "").replace(sys.prefix + "/lib/python3.11/", "")


def report(name: str, collapsed: Path) -> None:
    own, inclusive, total = top_frames(collapsed)
    print(f"\n== {name}: {total} samples ==")
    print("  top self time:")
    for frame, count in own:
        print(f"    {100 * count / max(total, 1):5.1f}%  {short(frame)}")
    print("  top inclusive time (skipping trio/runner plumbing):")
    shown = 0
    for frame, count in inclusive:
        if any(skip in frame for skip in ("trio/_core/_run.py", "<module>", "outcome/")):
            continue
        print(f"    {100 * count / max(total, 1):5.1f}%  {short(frame)}")
        shown += 1
        if shown == 14:
            break


async def run(seconds: float, concurrency: int, idle: bool, out: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="edgetds-profile-") as tmp:
        async with open_demo_stack(
            Path(tmp),
            connector="subprocess",
            tds_process=True,
            relay_kind="python-process",
            pool_size=max(16, concurrency),
        ) as stack:
            assert stack.connector_process is not None
            plan = await warm_tunnel_plan(stack, concurrency, seconds)
            assert stack.relay_pid is not None
            targets = {
                "connector": stack.connector_process.pid,
                "relay": stack.relay_pid,
                "loadgen": os.getpid(),
            }
            procs = []
            for name, pid in targets.items():
                for fmt, suffix in (("raw", "txt"), ("speedscope", "json")):
                    cmd = [PY_SPY, "record", "--pid", str(pid), "--duration", str(int(seconds))]
                    cmd += ["--rate", "200", "--format", fmt, "-o", str(out / f"{name}.{suffix}")]
                    # --gil: only the thread holding the GIL is sampled, so a thread waiting in
                    # epoll or on a lock (counted as running in some containers) is not
                    cmd += ["--nonblocking"] + (["--idle"] if idle else ["--gil"])
                    procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL))  # noqa: ASYNC220
            result = (await run_loadtest(plan))["tunnel"]
            for proc in procs:
                await trio.to_thread.run_sync(proc.wait)
    lat = result.latency_ms
    print(
        f"load during the profile: {result.count} queries, {result.throughput_qps} q/s, "
        f"p50 {lat['p50']} ms, p99 {lat['p99']} ms, errors {result.errors_by_code}"
    )
    for name in targets:
        report(name, out / f"{name}.txt")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--idle", action="store_true", help="wall clock (include waiting frames)")
    parser.add_argument("--out", default="bench-profile", help="directory for the profiles")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    trio.run(run, args.seconds, args.concurrency, args.idle, out)


if __name__ == "__main__":
    main()
