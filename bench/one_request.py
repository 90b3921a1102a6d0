"""What does the second TDS request of a query cost? The connector's execute() on one pooled
connection, the session context and ``SELECT @n AS n`` as two requests or as one (two RPCs of one
request, ``ExecRequest.one_request``), against a tdslite process. The baseline, "direct", is the
same statement from python-tds straight to the same tdslite (one sp_executesql RPC, as the
connector binds it; no reset, no session context): tdslite's CPU per query of the one-request form
over direct's is what the tunnel benchmark checks (``bench.tunnel``, at most 1.2x).

Sequential queries on ONE connection (every one after the first carries RESETCONNECTION, as on a
reused pooled connection), ``--rounds`` rounds of ``--count`` queries per form, the forms
alternated so a busy machine slows both alike. Per query: wall time, this process's CPU (the
connector's side: Trio, the worker thread, python-tds; ``time.process_time``) and tdslite's CPU
(its CPU-time clock, bench/cputime.py). Medians over the rounds.

Run: ``.venv/bin/python -m bench.one_request [--count 1000] [--rounds 5]``
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import pytds
import trio

from bench.tdslite_throughput import cpu_seconds, server_process
from connector.config import DatabaseConfig, LoginConfig
from connector.encode import BoundParam
from connector.execute import ExecRequest, execute, run_statement
from connector.pool import LoginPool
from connector.results import CancelToken

USERS = '[users.reader]\npassword = "reader-pw"\nrole = "read-only"\n'
FORMS = {"two requests": False, "one request": True}
DIRECT = "direct"


class _Discard:
    async def send_columns(self, data: bytes, *, flush: bool = True) -> None:
        pass

    async def send_rows(self, data: bytes, *, flush: bool = True) -> None:
        pass

    def hold(self, columns: bytes | None, rows: bytes) -> bool:
        return True


async def _round(pool: LoginPool, one: bool, count: int, pid: int) -> tuple[float, float, float]:
    """(wall, this process's CPU, tdslite's CPU) in ms per query."""
    sink = _Discard()
    wall, cpu, tds = time.perf_counter(), time.process_time(), cpu_seconds(pid)
    for i in range(count):
        req = ExecRequest(
            query_id=f"q{i}",
            sql="SELECT @n AS n",
            params=[BoundParam("@n", "int", i)],
            context={"edgetds.sub": "bench", "edgetds.iss": "https://idp", "edgetds.query_id": "q"},
            one_request=one,
        )
        await execute(pool, req, sink, CancelToken())
    return (
        (time.perf_counter() - wall) * 1000 / count,
        (time.process_time() - cpu) * 1000 / count,
        (cpu_seconds(pid) - tds) * 1000 / count,
    )


def _direct_round(conn: pytds.Connection, count: int, pid: int) -> tuple[float, float, float]:
    """As `_round`, python-tds straight to tdslite: the statement alone, as the connector binds
    it (blocking: nothing else runs meanwhile)."""
    wall, cpu, tds = time.perf_counter(), time.process_time(), cpu_seconds(pid)
    with conn.cursor() as cursor:
        for i in range(count):
            run_statement(cursor, "SELECT @n AS n", [BoundParam("@n", "int", i)])
            assert cursor.fetchall() == [(i,)]
            while cursor.nextset():
                pass
    return (
        (time.perf_counter() - wall) * 1000 / count,
        (time.process_time() - cpu) * 1000 / count,
        (cpu_seconds(pid) - tds) * 1000 / count,
    )


async def _run(port: int, pid: int, count: int, rounds: int) -> None:
    db = DatabaseConfig(
        host="127.0.0.1",
        port=port,
        database="bench",  # tdslite names the database after its file
        logins={"reader": LoginConfig("reader", "reader", "reader-pw", pool_size=1)},
        validate_host=False,
    )
    pool = LoginPool(db, db.logins["reader"], query_timeout_s=60)
    direct = pytds.connect(
        "127.0.0.1", port=port, user="reader", password="reader-pw", autocommit=True, timeout=60
    )
    figures: dict[str, list[tuple[float, float, float]]] = {DIRECT: []}
    figures.update({form: [] for form in FORMS})
    try:
        _direct_round(direct, 50, pid)  # warm up: connections, caches
        for one in FORMS.values():
            await _round(pool, one, 50, pid)
        for _ in range(rounds):
            figures[DIRECT].append(_direct_round(direct, count, pid))
            for form, one in FORMS.items():
                figures[form].append(await _round(pool, one, count, pid))
    finally:
        direct.close()
        await pool.aclose()
    print(f"{count} queries x {rounds} rounds per form; medians, per query")
    for form, runs in figures.items():
        wall, cpu, tds = (statistics.median(r[i] for r in runs) for i in range(3))
        print(f"  {form:13}  wall {wall:6.3f} ms  connector CPU {cpu:6.3f}  tdslite CPU {tds:6.3f}")
    tds_of = {form: statistics.median(r[2] for r in runs) for form, runs in figures.items()}
    print(f"tdslite CPU one request / direct: {tds_of['one request'] / tds_of[DIRECT]:.2f}x")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=1000, help="queries per round and form")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        users = Path(tmp) / "users.toml"
        users.write_text(USERS)
        cmd = ["-m", "edgetds", "tdslite", "serve", "--port", "0",
               "--db", str(Path(tmp) / "bench.sqlite"), "--users", str(users)]  # fmt: skip
        with server_process(cmd) as (port, pid):
            trio.run(_run, port, pid, args.count, args.rounds)


if __name__ == "__main__":
    main()
