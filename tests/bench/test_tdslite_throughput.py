"""`bench.tdslite_throughput`'s baseline: tdslite's own server over an engine of precomputed
results must answer every query the benchmark sends (the server calls more of its session as
tdslite grows; the stand-in session must keep up)."""

from __future__ import annotations

from bench.tdslite_throughput import QUERIES, connect, server_process


def test_the_constant_engine_answers_every_benchmark_query() -> None:
    with server_process(["-m", "bench.tdslite_throughput", "--serve-constant"]) as (port, _):
        with connect(port) as conn, conn.cursor() as cur:
            for _ in range(2):  # the second round on a connection that has answered before
                for name, (sql, params, expected) in QUERIES.items():
                    cur.execute(sql, params)
                    assert len(cur.fetchall()) == expected, name
