"""Chaos: tdslite (the SQL Server stand-in) stopped and restarted under load. The connector stays
connected to the relay, queries fail fast with connector.database_unavailable, and it recovers by
itself when the database returns."""

from __future__ import annotations

import trio

from tests.chaos._common import check_and_record, under_load, wait_ok_after
from tests.support.chaos import Tally, one_query, rss_kib
from tests.support.chaos_stack import TUNNEL, Chaos
from tests.support.relays import start_python_relay
from tests.support.waiting import eventually

OUTAGE_S = 2.5


async def test_database_stopped_and_restarted(chaos: Chaos) -> None:
    tally = Tally("tdslite_restart")
    async with start_python_relay(
        tunnel=TUNNEL, connector_ids=["conn-1"], issuer=chaos.idp.issuer
    ) as relay:
        chaos.use_relay(relay)
        async with chaos.connector("conn-1") as proc:
            with trio.fail_after(90):
                await chaos.wait_connections(2)
                rss_before = rss_kib(proc.pid)
                async with under_load(chaos, tally):
                    await trio.sleep(1.5)
                    await chaos.db.stop()
                    down_at = trio.current_time()
                    await trio.sleep(OUTAGE_S)
                    during = await chaos.connections()  # the tunnel stays up
                    await chaos.db.start()
                    up_at = trio.current_time()
                    recover_s = await wait_ok_after(tally, up_at)
                    await trio.sleep(1.0)
                after = await chaos.connections()
                rss_peak = rss_kib(proc.pid, "VmHWM")
    # queries that started while the database was down (they end at the latest by login timeout)
    outage = [e for e in tally.events if down_at < e[0] - e[3] < up_at]
    slowest_refusal = max((e[3] for e in outage if e[1] == "typed"), default=0.0)
    check_and_record(
        tally,
        chaos.db.log.entries,
        allowed={"connector.database_unavailable"},  # also for statements the stop cut
        rss_kib=(rss_before, rss_peak),
        recover_s=round(recover_s, 2),
        slowest_refusal_s=round(slowest_refusal, 2),
        connections_during_outage=during,
    )
    assert during == 2, "the connector must stay connected while the database is down"
    assert after == 2
    assert tally.typed["connector.database_unavailable"] > 0, "the outage was not observed"
    assert slowest_refusal < 8.0, "queries must fail fast while the database is down"
    assert recover_s < 10.0


async def test_statement_cut_by_a_database_stop_is_database_unavailable(chaos: Chaos) -> None:
    async with start_python_relay(
        tunnel=TUNNEL, connector_ids=["conn-1"], issuer=chaos.idp.issuer
    ) as relay:
        chaos.use_relay(relay)
        async with chaos.connector("conn-1", ha_connections=1):
            with trio.fail_after(60):
                await chaos.wait_connections(1)
                tally = Tally("tdslite_cut")
                answer: list[tuple[str, str]] = []

                async def slow() -> None:
                    answer.append(
                        await one_query(chaos.http, chaos.query_url, chaos.token, tally, SLOW)
                    )

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(slow)
                    await eventually(lambda: chaos.db.log.is_running(SLOW("").split("' AS")[1]))
                    await chaos.db.stop()
                await chaos.db.start()
    assert answer == [("typed", "connector.database_unavailable")], tally.samples


def SLOW(tag: str) -> str:  # noqa: N802 - a statement template, like the others
    return f"SELECT COUNT(*) AS c, '{tag}' AS tag FROM d a, d b, d c, d e, d f, d g, d h, d i"
