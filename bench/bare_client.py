"""A bare python-tds client: the baseline of the connector's CPU target.

One process, one thread, one connection of python-tds, and a plain loop that does per query the
database work the connector does for a one-shot ``SELECT @n AS n`` (the reset as the
RESETCONNECTION flag, the session context and the statement in one request, every row read:
`edgetds.loadtest.targets.run_like_connector`), with nothing else around it: no event loop, no
thread hand-off, no load generator's bookkeeping. (The load generator's own direct client, which
`bench.tunnel` also runs as "direct+preamble", hands each query to a worker thread from Trio and
records it, which about doubles its CPU per query.)

Closed loop by default; ``--rate R`` paces the queries open loop at R per second (each starts
at its slot, as the load generator's ``rate`` does): the same work at another pace. Prints one
JSON line: ``{"count", "qps", "cpu_ms_per_query"}``, the CPU being this process's
(``time.process_time``) over the measured queries only, after ``--warmup`` unrecorded ones.

Run: ``.venv/bin/python -m bench.bare_client --direct "host=127.0.0.1;port=1433;user=reader;
password=@pw.txt;database=..." [--count 1000] [--warmup 200] [--rate R]``.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from connector.encode import decode_params
from edgetds.loadtest.targets import parse_direct, read_all_rows, run_like_connector

__all__ = ["main", "run"]

SQL = "SELECT @n AS n"


def _one(conn: Any, n: int) -> None:
    with conn.cursor() as cursor:
        run_like_connector(cursor, SQL, decode_params({"n": n}))
        read_all_rows(cursor)


def run(conn: Any, *, count: int, warmup: int, rate: float = 0) -> dict[str, float]:
    """``count`` queries on ``conn`` after ``warmup`` (closed loop, or ``rate`` per second)."""
    for n in range(warmup):
        _one(conn, n)
    interval = 1 / rate if rate > 0 else 0.0
    cpu, start = time.process_time(), time.perf_counter()
    for n in range(count):
        if interval:
            late = start + n * interval - time.perf_counter()
            if late > 0:
                time.sleep(late)
        _one(conn, n)
    wall = time.perf_counter() - start
    used = time.process_time() - cpu
    return {"count": count, "qps": count / wall, "cpu_ms_per_query": 1000 * used / count}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--direct", required=True, help="host=..;port=..;user=..;password=..")
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--rate", type=float, default=0, help="queries per second (0: closed loop)")
    args = parser.parse_args(argv)
    if args.count < 1 or args.warmup < 0 or args.rate < 0:
        parser.error("--count must be 1 or more, --warmup and --rate 0 or more")
    spec = parse_direct(args.direct)
    conn = spec.connect(timeout=60, appname="edgetds-bare", login_timeout=10)
    try:
        figures = run(conn, count=args.count, warmup=args.warmup, rate=args.rate)
    finally:
        conn.close()
    print(json.dumps(figures), flush=True)


if __name__ == "__main__":
    main()
