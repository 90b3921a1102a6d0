"""How fast is tdslite? Simple-query throughput with python-tds, straight at a tdslite process.

Measured on one python-tds connection (sequential round trips), ``--rounds`` times for
``--seconds`` each, alternating between tdslite and the baseline; the median is reported:

1. ``SELECT 1`` (a SQL batch);
2. a 100-row select (id, nvarchar, decimal(10,2), datetime2) from a table;
3. a parameterised point query (sp_executesql RPC, one row);
4. ``SELECT 1`` from ``--clients`` client processes at once (aggregate queries/s).

Also the server's own CPU time per query (its CPU-time clock, bench/cputime.py), which a busy
machine does not skew.

Baseline, in the same run: the same client against the same TDS server code backed by a constant
engine (precomputed results, no SQL translation, no SQLite): the ceiling of the wire layer +
python-tds. tdslite's figure is also given as a ratio to it, so the engine's share shows.
Both servers run as separate processes (``edgetds tdslite serve``), so the client's GIL is its own.

Run: ``.venv/bin/python -m bench.tdslite_throughput [--seconds 1] [--rounds 5] [--clients 4]``
"""

from __future__ import annotations

import argparse
import datetime
import decimal
import importlib.metadata
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytds

from bench.cputime import process_cpu_seconds as cpu_seconds

USERS = '[users.bench]\npassword = "bench-pw"\nrole = "admin"\n'
ROWS_SQL = "SELECT id, name, amount, created FROM bench_rows ORDER BY id"
POINT_SQL = "SELECT id, name, amount, created FROM bench_rows WHERE id = %s"


@contextmanager
def server_process(args: Sequence[str]) -> Iterator[tuple[int, int]]:
    """Start a server subprocess that prints '... listening on HOST:PORT' first.

    Yields (port, pid). Its stderr goes to a file: an unread pipe would fill up and stall it.
    """
    with tempfile.TemporaryFile("w+") as errors:
        proc = subprocess.Popen(
            [sys.executable, *args], stdout=subprocess.PIPE, stderr=errors, text=True
        )
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if "listening on" not in line:
                errors.seek(0)
                raise RuntimeError(f"server did not start: {line!r} {errors.read()[-2000:]}")
            yield int(line.rsplit(":", 1)[1]), proc.pid
        finally:
            proc.terminate()
            proc.wait(10)
            if proc.stdout is not None:
                proc.stdout.close()


def connect(port: int) -> pytds.Connection:
    return pytds.connect(
        "127.0.0.1", port=port, user="bench", password="bench-pw", autocommit=True, timeout=30
    )


def rate(fn: Callable[[], None], seconds: float) -> float:
    """Calls of ``fn`` per second over ``seconds`` (after a short warm-up)."""
    for _ in range(20):
        fn()
    n = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(10):
            fn()
        n += 10
        now = time.perf_counter()
        if now >= deadline:
            return n / (now - start)


QUERIES: dict[str, tuple[str, tuple[Any, ...] | None, int | None]] = {
    # name: (sql, params, expected row count)
    "SELECT 1": ("SELECT 1", None, 1),
    "100-row select": (ROWS_SQL, None, 100),
    "point query (RPC)": (POINT_SQL, (42,), 1),
}


def measure(cur: Any, query: str, seconds: float) -> float:
    sql, params, expected = QUERIES[query]

    def once() -> None:
        cur.execute(sql, params)
        rows = cur.fetchall()
        assert expected is None or len(rows) == expected

    return rate(once, seconds)


def cpu_per_query(cur: Any, pid: int, query: str, count: int) -> float:
    """Server CPU milliseconds per query: independent of how busy the machine is."""
    sql, params, _ = QUERIES[query]
    before = cpu_seconds(pid)
    for _ in range(count):
        cur.execute(sql, params)
        cur.fetchall()
    return (cpu_seconds(pid) - before) * 1000 / count


def _client(port: int, seconds: float, queue: Any) -> None:
    with connect(port) as conn, conn.cursor() as cur:

        def select_1() -> None:
            cur.execute("SELECT 1")
            cur.fetchall()

        queue.put(rate(select_1, seconds))


def concurrent(port: int, seconds: float, clients: int) -> float:
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_client, args=(port, seconds, queue)) for _ in range(clients)]
    for p in procs:
        p.start()
    total = sum(queue.get(timeout=seconds + 60) for _ in procs)
    for p in procs:
        p.join()
    return float(total)


def seed(port: int) -> None:
    with connect(port) as conn, conn.cursor() as cur:
        cur.execute(
            "CREATE TABLE bench_rows (id int PRIMARY KEY, name nvarchar(50), "
            "amount decimal(10,2), created datetime2)"
        )
        base = datetime.datetime(2026, 1, 1)
        for i in range(100):
            cur.execute(
                "INSERT INTO bench_rows VALUES (%s, %s, %s, %s)",
                (i, f"customer {i}", decimal.Decimal(i) / 4, base + datetime.timedelta(hours=i)),
            )


# --- the baseline: the same TDS server code over a constant engine ---------------------------


def serve_constant() -> None:
    """Run tdslite's server with an engine that answers from precomputed results."""
    import trio

    from tdslite.engine import Column, ResultSet, SqlType, User
    from tdslite.server import open_server

    one = ([Column("", SqlType("int"))], [(1,)])
    cols = [
        Column("id", SqlType("int")),
        Column("name", SqlType("nvarchar", length=50)),
        Column("amount", SqlType("decimal", precision=10, scale=2)),
        Column("created", SqlType("datetime2", scale=7)),
    ]
    base = datetime.datetime(2026, 1, 1)
    rows = [
        (i, f"customer {i}", decimal.Decimal(i) / 4, base + datetime.timedelta(hours=i))
        for i in range(100)
    ]

    class Session:
        effective_user = "bench"
        database = "bench"
        in_transaction = False

        def execute(self, sql: str, params: Sequence[Any] = ()) -> Iterator[ResultSet]:
            if sql.startswith("SELECT 1"):
                yield ResultSet(one[0], iter(one[1]))
            elif "WHERE id" in sql:
                yield ResultSet(cols, iter(rows[42:43]))
            else:
                yield ResultSet(cols, iter(rows))

        def take_transaction_events(self) -> list[str]:
            return []  # no transaction begins or ends

        def cancel(self) -> None: ...
        def reset(self) -> None: ...
        def close(self) -> None: ...

    user = User("bench", "bench-pw", "admin", "bench")

    class Engine:
        def authenticate(self, login: str, password: str) -> User:
            return user

        def open_session(self, user: User, *, database: str | None = None) -> Session:
            return Session()

        def close(self) -> None: ...

    async def main() -> None:
        async with open_server(users={"bench": user}, engine=Engine()) as server:  # type: ignore[arg-type]
            print(f"constant tdslite listening on {server.address}", flush=True)
            await trio.sleep_forever()

    trio.run(main)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="per measurement round")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds per query")
    parser.add_argument("--cpu-queries", type=int, default=200, help="queries per CPU run")
    parser.add_argument("--clients", type=int, default=4, help="client processes for the last one")
    parser.add_argument("--serve-constant", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_constant:
        serve_constant()
        return 0
    # The two servers run side by side and are measured in alternating rounds (median per
    # query), so that a busy machine slows both alike instead of skewing the ratio.
    results: dict[str, dict[str, list[float]]] = {"tdslite": {}, "baseline": {}}
    cpu: dict[str, dict[str, float]] = {"tdslite": {}, "baseline": {}}
    with tempfile.TemporaryDirectory() as tmp:
        users = Path(tmp) / "users.toml"
        users.write_text(USERS)
        tds_cmd = ["-m", "edgetds", "tdslite", "serve", "--port", "0",
                   "--db", str(Path(tmp) / "bench.sqlite"), "--users", str(users)]  # fmt: skip
        base_cmd = ["-m", "bench.tdslite_throughput", "--serve-constant"]
        with (
            server_process(tds_cmd) as (tds_port, tds_pid),
            server_process(base_cmd) as (
                base_port,
                base_pid,
            ),
        ):
            seed(tds_port)
            ports = {"tdslite": tds_port, "baseline": base_port}
            pids = {"tdslite": tds_pid, "baseline": base_pid}
            with connect(tds_port) as tds_conn, connect(base_port) as base_conn:
                cursors = {"tdslite": tds_conn.cursor(), "baseline": base_conn.cursor()}
                for _ in range(args.rounds):
                    for query in QUERIES:
                        for name, cur in cursors.items():
                            value = measure(cur, query, args.seconds)
                            results[name].setdefault(query, []).append(value)
                for _ in range(args.rounds):
                    for query in QUERIES:
                        for name, cur in cursors.items():
                            ms = cpu_per_query(cur, pids[name], query, args.cpu_queries)
                            cpu[name][query] = min(ms, cpu[name].get(query, ms))
            concurrent_name = f"SELECT 1, {args.clients} clients"
            for _ in range(args.rounds):
                for name, port in ports.items():
                    value = concurrent(port, args.seconds, args.clients)
                    results[name].setdefault(concurrent_name, []).append(value)
    client = f"python-tds {importlib.metadata.version('python-tds')}"
    print(
        f"tdslite throughput, {client}, {os.cpu_count()} CPUs, load average "
        f"{os.getloadavg()[0]:.1f}, median of {args.rounds} rounds of {args.seconds:g} s"
    )
    print(f"{'query':<26}{'tdslite q/s':>14}{'baseline q/s':>15}{'ratio':>8}")
    for query, values in results["tdslite"].items():
        tds = statistics.median(values)
        base = statistics.median(results["baseline"][query])
        print(f"{query:<26}{tds:>14.0f}{base:>15.0f}{tds / base:>8.2f}")
    print(f"\nserver CPU per query (ms), best of {args.rounds} runs of {args.cpu_queries} queries")
    print(f"{'query':<26}{'tdslite':>14}{'baseline':>15}{'ratio':>8}")
    for query, ms in cpu["tdslite"].items():
        base_ms = cpu["baseline"][query]
        print(f"{query:<26}{ms:>14.2f}{base_ms:>15.2f}{ms / base_ms:>8.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
