"""A 1,000,000-row result through the tunnel vs direct: rows/s and the connector's memory.

The stack of bench/tunnel.py (tdslite, the connector and the Python relay each in its own
process). The result is ``--rows`` rows of (int, nvarchar) made by cross joining a 10-row table.

- direct: python-tds straight to tdslite, ``fetchmany`` until the end -> rows/s (the baseline,
  same run, same tdslite);
- tunnel: one ``POST /query`` streamed by httpx, NDJSON split by newline, every row line decoded
  (``json.loads``: the client holds each row as values, as python-tds's client does; with
  ``--count-only`` the lines are only counted) -> rows/s, while the connector process's RSS
  (VmRSS in /proc/PID/status) is sampled every 20 ms: the peak growth over its RSS before the
  query is what a large result costs the connector.

Each part also reports the CPU seconds each process spent on it (its CPU-time clock,
bench/cputime.py): less swayed by other load on the machine than the rates are. The connector's
against the direct client's (python-tds reading the same rows) is what the connector adds per row.

Goals: tunnel >= 80 % of direct rows/s; connector RSS growth <= 32 MiB.
Run: ``.venv/bin/python -m bench.big_result [--rows 1000000] [--count-only]``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import trio

from bench.checks import Check, print_table
from bench.checks import ratio as cpu_ratio
from bench.stack import DemoStack, open_demo_stack, process_cpu_seconds
from edgetds.loadtest.targets import NdjsonCounter

#: the analysts may stream big results for a long time in this benchmark
POLICY = """
[roles.analyst]
match = { groups = ["analysts"] }
login = "reader"
read_only = true
allow_sql = true
max_rows = 100000000
max_bytes = 10000000000
timeout_ms = 1800000
"""


def big_sql(rows: int) -> str:
    joins = max(1, math.ceil(math.log10(max(rows, 2))))
    names = [f"t{i}" for i in range(joins)]
    value = " + ".join(f"{10**i} * {n}.d" for i, n in enumerate(names))
    source = " CROSS JOIN ".join(f"digits {n}" for n in names)
    return f"SELECT TOP {rows} {value} AS n, N'row label text' AS label FROM {source}"


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def direct_rows(stack: DemoStack, sql: str) -> tuple[int, float]:
    import pytds

    d = stack.direct
    with pytds.connect(
        dsn=d.host, port=d.port, user=d.user, password=d.password, database=d.database,
        autocommit=True, timeout=1800,
    ) as conn, conn.cursor() as cursor:  # fmt: skip
        start = time.perf_counter()
        cursor.execute(sql)
        rows = 0
        while batch := cursor.fetchmany(5000):
            rows += len(batch)
        return rows, time.perf_counter() - start


async def tunnel_rows(
    stack: DemoStack, sql: str, pid: int, *, decode: bool = True
) -> tuple[int, float, int, int]:
    """(rows, seconds, rss before KiB, peak rss KiB) for one streamed query; with ``decode``
    each row line is also decoded (``json.loads``), so the client holds every row as values, as
    python-tds's client does."""
    token = stack.idp.mint(sub="bench", groups=["analysts"], expires_in=3600)
    url = f"{stack.relay.http_url}/v1/tunnels/{stack.relay.tunnel}/query"
    before = rss_kib(pid)
    peak = before
    counter = NdjsonCounter()

    async def sample() -> None:
        nonlocal peak
        while True:
            peak = max(peak, rss_kib(pid))
            await trio.sleep(0.02)

    async with (
        httpx.AsyncClient(timeout=1800, trust_env=False) as client,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(sample)
        start = time.perf_counter()
        headers = {"authorization": f"Bearer {token}"}
        body = {"sql": sql, "params": {}, "timeout_ms": 1_800_000}
        async with client.stream("POST", url, json=body, headers=headers) as resp:
            resp.raise_for_status()
            nbytes = 0
            rest = b""
            async for chunk in resp.aiter_raw():
                nbytes += len(chunk)
                counter.feed(chunk)
                if decode:
                    lines = (rest + chunk).split(b"\n")
                    rest = lines.pop()
                    for line in lines:
                        if line[:1] == b"[":
                            json.loads(line)
        elapsed = time.perf_counter() - start
        nursery.cancel_scope.cancel()
    outcome = counter.outcome(nbytes)
    if not outcome.ok:
        raise RuntimeError(f"the tunnelled query failed: {outcome.code}")
    return outcome.rows, elapsed, before, peak


async def run(rows: int, out: dict[str, Any], *, decode: bool = True) -> None:
    sql = big_sql(rows)
    with tempfile.TemporaryDirectory(prefix="edgetds-bench-") as tmp:
        async with open_demo_stack(
            Path(tmp),
            connector="subprocess",
            tds_process=True,
            relay_kind="python-process",
            policy=POLICY,
            relay_limits={"query_timeout_ms": 1_800_000},
        ) as stack:
            assert stack.connector_process is not None
            pid = stack.connector_process.pid
            await tunnel_rows(stack, big_sql(1000), pid)  # warm up pools, JWKS, imports
            assert stack.relay_pid is not None
            assert stack.tds_pid is not None
            direct_pids = {"client": os.getpid(), "tdslite": stack.tds_pid}
            tunnel_pids = {"connector": pid, "relay": stack.relay_pid, **direct_pids}
            cpu = _cpu(direct_pids)
            d_rows, d_s = await trio.to_thread.run_sync(direct_rows, stack, sql)
            d_cpu = _cpu(direct_pids, since=cpu)
            cpu = _cpu(tunnel_pids)
            t_rows, t_s, before, peak = await tunnel_rows(stack, sql, pid, decode=decode)
            t_cpu = _cpu(tunnel_pids, since=cpu)
    d_rate, t_rate = d_rows / d_s, t_rows / t_s
    growth_mib = (peak - before) / 1024
    print(f"(3) {rows:,}-row result through the tunnel vs direct")
    print(f"  direct  {d_rows:>10,} rows in {d_s:7.1f} s = {d_rate:10,.0f} rows/s")
    print(f"  tunnel  {t_rows:>10,} rows in {t_s:7.1f} s = {t_rate:10,.0f} rows/s")
    print(f"  CPU s   direct: {_cpu_text(d_cpu)}; tunnel: {_cpu_text(t_cpu)}")
    ratio = t_rate / d_rate
    print(
        f"  -> rows/s ratio {ratio:.3f} ({'meets' if ratio >= 0.8 else 'MISSES'} goal >= 0.80); "
        f"connector RSS {before / 1024:.1f} MiB before, peak {peak / 1024:.1f} MiB, growth "
        f"{growth_mib:.1f} MiB ({'meets' if growth_mib <= 32 else 'MISSES'} goal <= 32)"
    )
    found = [
        Check(f"big result ({rows:,} rows): tunnel / direct rows/s", round(ratio, 3), 0.8, ">="),
        Check("big result: connector RSS growth", round(growth_mib, 1), 32, "<=", " MiB"),
        Check(
            "big result: connector CPU / direct client CPU",
            cpu_ratio(t_cpu["connector"], d_cpu["client"]),
            None,
        ),
    ]
    print_table(found, "big result")
    out.update(
        checks=[c.as_json() for c in found],
        rows=rows,
        direct_rows_per_s=round(d_rate),
        tunnel_rows_per_s=round(t_rate),
        ratio=round(ratio, 3),
        connector_rss_before_mib=round(before / 1024, 1),
        connector_rss_peak_mib=round(peak / 1024, 1),
        connector_rss_growth_mib=round(growth_mib, 1),
        direct_cpu_s=d_cpu,
        tunnel_cpu_s=t_cpu,
    )


def _cpu(pids: dict[str, int], since: dict[str, float] | None = None) -> dict[str, float]:
    """CPU seconds of each process so far, or since ``since`` (rounded to 10 ms)."""
    now = {name: process_cpu_seconds(pid) for name, pid in pids.items()}
    if since is None:
        return now
    return {name: round(now[name] - since[name], 2) for name in pids}


def _cpu_text(cpu: dict[str, float]) -> str:
    return ", ".join(f"{name} {seconds:.2f}" for name, seconds in cpu.items())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    parser.add_argument(
        "--count-only",
        action="store_true",
        help="the tunnel's client counts the rows without decoding them (the direct client's "
        "python-tds decodes every row either way)",
    )
    args = parser.parse_args(argv)
    out: dict[str, Any] = {}
    trio.run(partial(run, decode=not args.count_only), args.rows, out)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
