"""What does a transaction across requests cost? A 3-statement transaction through the tunnel vs
the same through python-tds directly, and a statement in a session vs a one-shot query.

Everything real on 127.0.0.1, each part in its own process: tdslite, the connector (``edgetds
connector run``), the Python relay (``edgetds relay serve``); this process is the client (httpx
for the tunnel, python-tds for the baseline, one after the other, concurrency 1).

The transaction moves an amount between two rows and reads them back:

    UPDATE accounts SET balance = balance - @n WHERE id = 1
    UPDATE accounts SET balance = balance + @n WHERE id = 2
    SELECT id, balance FROM accounts WHERE id IN (1, 2)

1. session: ``POST .../sessions``, three ``.../query``, ``.../commit`` (5 HTTP requests).
2. /transaction: the three statements in one ``POST .../transaction``.
3. direct: python-tds as the writer login: BEGIN TRANSACTION, the three statements, COMMIT.
4. per statement: the first UPDATE as a session ``query`` vs the same as a one-shot ``/query``
   (each one-shot query gets a fresh pooled connection reset and its session context set; a
   session's statement runs on its pinned connection as it is).

Prints p50/p99 of each and the ratios: session / direct, /transaction / direct, and session
statement / one-shot query (the goal: <= 1.0).
Run: ``.venv/bin/python -m bench.sessions [--count N]``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytds
import trio

from bench.stack import DemoStack, open_demo_stack

MOVE = [
    {"sql": "UPDATE accounts SET balance = balance - @n WHERE id = 1", "params": {"n": 1}},
    {"sql": "UPDATE accounts SET balance = balance + @n WHERE id = 2", "params": {"n": 1}},
    {"sql": "SELECT id, balance FROM accounts WHERE id IN (1, 2)", "params": {}},
]
SETUP = (
    "CREATE TABLE accounts (id int PRIMARY KEY, balance int NOT NULL)",
    "INSERT INTO accounts (id, balance) VALUES (1, 1000000), (2, 0)",
)


def _setup(stack: DemoStack) -> None:
    d = stack.direct
    with pytds.connect(
        dsn=d.host, port=d.port, user="owner", password="owner-pw", autocommit=True
    ) as conn:
        with conn.cursor() as cursor:
            for sql in SETUP:
                cursor.execute(sql)


def _direct_runs(stack: DemoStack, count: int) -> list[float]:
    """The transaction through python-tds as the writer login: seconds per transaction."""
    d = stack.direct
    times = []
    with pytds.connect(dsn=d.host, port=d.port, user="writer", password="writer-pw",
                       database=d.database, autocommit=True) as conn:  # fmt: skip
        with conn.cursor() as cursor:
            for _ in range(count):
                start = time.perf_counter()
                cursor.execute("BEGIN TRANSACTION")
                cursor.execute("UPDATE accounts SET balance = balance - %s WHERE id = 1", (1,))
                cursor.execute("UPDATE accounts SET balance = balance + %s WHERE id = 2", (1,))
                cursor.execute("SELECT id, balance FROM accounts WHERE id IN (1, 2)")
                cursor.fetchall()
                cursor.execute("COMMIT TRANSACTION")
                times.append(time.perf_counter() - start)
    return times


def _ms(times: list[float], q: float) -> float:
    ordered = sorted(times)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 2)


def _line(label: str, times: list[float]) -> str:
    return (
        f"  {label:<28} n={len(times):<5} p50 {_ms(times, 0.5):>7} ms  p99 {_ms(times, 0.99):>7} ms"
    )


async def _timed(count: int, once: Callable[[], Awaitable[None]]) -> list[float]:
    times = []
    for _ in range(count):
        start = time.perf_counter()
        await once()
        times.append(time.perf_counter() - start)
    return times


async def run(count: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="edgetds-bench-") as tmp:
        async with open_demo_stack(
            Path(tmp), connector="subprocess", tds_process=True, relay_kind="python-process"
        ) as stack:
            await trio.to_thread.run_sync(_setup, stack)
            base = f"{stack.relay.http_url}/v1/tunnels/demo"
            token = stack.idp.mint(sub="bench", groups=["admins"], expires_in=3600)
            headers = {"Authorization": f"Bearer {token}"}
            async with httpx.AsyncClient(timeout=60, headers=headers) as http:

                async def ok(resp: httpx.Response) -> httpx.Response:
                    if resp.status_code not in (200, 201) or b'"error"' in resp.content:
                        raise SystemExit(f"unexpected answer {resp.status_code}: {resp.text}")
                    return resp

                async def session() -> None:
                    sid = (await ok(await http.post(f"{base}/sessions", json={}))).json()["session"]
                    for statement in MOVE:
                        await ok(await http.post(f"{base}/sessions/{sid}/query", json=statement))
                    await ok(await http.post(f"{base}/sessions/{sid}/commit"))

                async def transaction() -> None:
                    await ok(await http.post(f"{base}/transaction", json={"statements": MOVE}))

                async def one_shot() -> None:
                    await ok(await http.post(f"{base}/query", json=MOVE[0]))

                for fn in (session, transaction, one_shot):  # warm up, unrecorded
                    await _timed(20, fn)
                results = {
                    "session (5 requests)": await _timed(count, session),
                    "/transaction (1 request)": await _timed(count, transaction),
                    "direct python-tds": await trio.to_thread.run_sync(_direct_runs, stack, count),
                    "one-shot /query": await _timed(count, one_shot),
                }
                # a statement in an open session: begin once, then the same UPDATE N times
                sid = (await ok(await http.post(f"{base}/sessions", json={}))).json()["session"]

                async def in_session() -> None:
                    await ok(await http.post(f"{base}/sessions/{sid}/query", json=MOVE[0]))

                results["statement in a session"] = await _timed(count, in_session)
                await ok(await http.post(f"{base}/sessions/{sid}/rollback"))
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=200, help="transactions per variant")
    args = parser.parse_args(argv)
    results = trio.run(run, args.count)
    print(f"a 3-statement transaction, concurrency 1, {args.count} each")
    for label, times in results.items():
        print(_line(label, times))
    p50 = {label: statistics.median(times) for label, times in results.items()}
    direct = p50["direct python-tds"]
    print(f"  -> session / direct (p50): {p50['session (5 requests)'] / direct:.2f}x")
    print(f"  -> /transaction / direct (p50): {p50['/transaction (1 request)'] / direct:.2f}x")
    ratio = p50["statement in a session"] / p50["one-shot /query"]
    verdict = "ok" if ratio <= 1.0 else "OVER"
    print(f"  -> statement in a session / one-shot query (p50): {ratio:.2f}x ({verdict} <= 1.0)")


if __name__ == "__main__":
    main()
