"""Does one user's big statement slow everyone else down? An admin's SELECT 1 latency, alone and
while another user sends big statements.

Everything real on 127.0.0.1, each part its own process: tdslite, the connector (``edgetds
connector run``), the Python relay (``edgetds relay serve``) and the load generator (httpx, this
one). The connector runs the
test policy: analysts are read-only (every ad-hoc statement is parsed by the read-only check, up
to the default ``max_statement_bytes`` of 256 KiB), admins are not (no check).

1. baseline: the admin sends ``SELECT 1`` ``--count`` times, one after the other: p50/p99.
2. the same while ``--senders`` analysts each send 1 MB statements back to back (over the
   connector's announced 256 KiB: the relay answers 413 request.too_large, the connector never
   sees them).
3. the same while they send 200 KB statements, each new (no remembered verdict): the connector
   checks every one in its worker process, then tdslite runs it (tdslite's own T-SQL translation of
   200 KB takes seconds of its CPU: SQL Server would not be on these 2 cores).
4. the same with ``timeout_ms`` 50 on the 200 KB statements: the check's budget runs out, they are
   refused (413 policy.check_timeout) and never run, and the worker process of each is killed
   (and a new one started for the next): the connector's own cost, without tdslite's.

After each phase it prints the resident memory (RSS) of the connector process and of each of its
child processes (the read-only check's worker, multiprocessing's resource tracker).

Each phase prints the admin's p50/p99, the ratio of its p99 to the baseline p99, and what the
analysts' statements got (HTTP status counts).
Run: ``.venv/bin/python -m bench.big_statements [--count N] [--senders K]``.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

import httpx
import trio

from bench.stack import NO_RATE_LIMITS, DemoStack, open_demo_stack


def big_select(size: int) -> str:
    """A new read-only statement of about ``size`` bytes (one flat IN list)."""
    head = f"SELECT COUNT(*) AS c FROM digits WHERE d IN (0, {uuid.uuid4().int % 10**9 + 10**9}"
    return head + _tail(size - len(head))


@functools.cache
def _tail(size: int) -> str:
    # built once: the load generator shares its event loop with the measured client
    return "".join(f", {100_000 + i}" for i in range((size - 1) // 8)) + ")"


async def admin_latencies(stack: DemoStack, client: httpx.AsyncClient, count: int) -> list[float]:
    url = f"{stack.relay.http_url}/v1/tunnels/{stack.relay.tunnel}/query"
    headers = {
        "authorization": f"Bearer {stack.idp.mint(sub='admin', groups=['admins'], expires_in=3600)}"
    }
    out = []
    for _ in range(count):
        started = time.perf_counter()
        response = await client.post(url, json={"sql": "SELECT 1 AS one"}, headers=headers)
        out.append((time.perf_counter() - started) * 1000)
        if response.status_code != 200:
            raise RuntimeError(f"admin query failed: {response.status_code} {response.text}")
    return out


async def sender(
    stack: DemoStack,
    client: httpx.AsyncClient,
    name: str,
    size: int,
    timeout_ms: int | None,
    statuses: Counter[str],
    answered: trio.Event,
) -> None:
    url = f"{stack.relay.http_url}/v1/tunnels/{stack.relay.tunnel}/query"
    headers = {
        "authorization": f"Bearer {stack.idp.mint(sub=name, groups=['analysts'], expires_in=3600)}"
    }
    while True:
        body = {"sql": big_select(size), "timeout_ms": timeout_ms}
        response = await client.post(url, json=body, headers=headers)
        code = (
            response.json().get("error", {}).get("code", "") if response.status_code != 200 else ""
        )
        statuses[f"{response.status_code} {code}".strip()] += 1
        answered.set()  # its first answer: this sender's load is on


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


async def run(count: int, senders: int) -> None:
    with tempfile.TemporaryDirectory(prefix="edgetds-bench-") as tmp:
        async with (
            open_demo_stack(
                Path(tmp),
                connector="subprocess",
                relay_kind="python-process",
                tds_process=True,
                relay_limits=NO_RATE_LIMITS,
            ) as stack,
            httpx.AsyncClient(timeout=120, trust_env=False) as admin,
            httpx.AsyncClient(timeout=120, trust_env=False) as analysts,
        ):
            await admin_latencies(stack, admin, 20)  # warm up (pool, token caches)
            base = await admin_latencies(stack, admin, count)
            base_p99 = percentile(base, 99)
            print(f"baseline (alone): p50 {statistics.median(base):.1f} ms, p99 {base_p99:.1f} ms")
            phases = (("1 MB", 1_000_000, None), ("200 KB", 200_000, None), ("200 KB", 200_000, 50))
            for label, size, timeout_ms in phases:
                if timeout_ms is not None:
                    label += f" (timeout_ms {timeout_ms})"
                statuses: Counter[str] = Counter()
                async with trio.open_nursery() as nursery:
                    answered = [trio.Event() for _ in range(senders)]
                    for k in range(senders):
                        name = f"analyst-{k}"
                        nursery.start_soon(
                            sender, stack, analysts, name, size, timeout_ms, statuses, answered[k]
                        )
                    for event in answered:  # every sender's load is on before measuring
                        await event.wait()
                    during = await admin_latencies(stack, admin, count)
                    nursery.cancel_scope.cancel()
                p99 = percentile(during, 99)
                print(
                    f"while {senders} analysts send {label} statements: "
                    f"p50 {statistics.median(during):.1f} ms, p99 {p99:.1f} ms "
                    f"(p99 ratio to alone {p99 / base_p99:.2f}); their statements got "
                    f"{dict(sorted(statuses.items()))}"
                )
                assert stack.connector_process is not None
                print_rss(stack.connector_process.pid)


def print_rss(pid: int) -> None:
    tree = process_tree_rss(pid)
    parts = ", ".join(
        f"{command.split(' -c ')[-1][:40]} {rss / 1024:.1f}" for _, rss, command in tree
    )
    print(f"  RSS (MiB): {parts}; in all {sum(rss for _, rss, _ in tree) / 1024:.1f}")


def process_tree_rss(pid: int) -> list[tuple[int, int, str]]:
    """(pid, VmRSS in KiB, command line) of ``pid`` and its descendants, from /proc (Linux)."""
    out = []
    pending = [pid]
    while pending:
        current = pending.pop()
        proc = Path("/proc") / str(current)
        try:
            status = (proc / "status").read_text()
            command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            for task in (proc / "task").iterdir():
                pending += [int(c) for c in (task / "children").read_text().split()]
        except FileNotFoundError:  # ended meanwhile
            continue
        rss = next((line for line in status.splitlines() if line.startswith("VmRSS:")), None)
        if rss is not None:  # a zombie (a killed parse worker not yet reaped) has no memory
            out.append((current, int(rss.split()[1]), command.strip()))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=200, help="admin queries per phase")
    parser.add_argument("--senders", type=int, default=2, help="analysts sending big statements")
    args = parser.parse_args(argv)
    trio.run(run, args.count, args.senders)


if __name__ == "__main__":
    main()
