"""Chaos: a client asks for a large result and reads it one byte a second. Credit is granted only
as the relay delivers bytes to that client, so the connector stalls that one stream: its memory
stays flat, other queries on the same connector keep flowing, and when the slow client hangs up
the query stops in the database."""

from __future__ import annotations

import trio

from tests.chaos._common import check_and_record, counted, under_load
from tests.support.chaos import Tally, rss_kib, slow_read
from tests.support.chaos_stack import TUNNEL, Chaos
from tests.support.relays import start_python_relay
from tests.support.waiting import eventually

SLOW_S = 8.0


def big(tag: str) -> str:
    """About 200,000 rows of ~220 bytes (~45 MB): far more than every window and buffer."""
    return (
        "SELECT a.n + 10 * b.n + 100 * c.n + 1000 * e.n + 10000 * f.n AS i, "
        f"'{tag}' AS tag, N'{'x' * 200}' AS pad FROM d a, d b, d c, d e, d f, two t"
    )


async def test_one_byte_a_second_client_stalls_only_its_own_query(chaos: Chaos) -> None:
    tally = Tally("slow_client")
    slow_tag = tally.new_tag()
    async with start_python_relay(
        tunnel=TUNNEL, connector_ids=["conn-1"], issuer=chaos.idp.issuer
    ) as relay:
        chaos.use_relay(relay)
        with trio.fail_after(120):
            async with chaos.connector("conn-1", ha_connections=1) as proc:
                await chaos.wait_connections(1)
                rss_before = rss_kib(proc.pid)
                read: list[bytes] = []
                async with under_load(chaos, tally, counted, workers=3):
                    started = trio.current_time()
                    read.append(
                        await slow_read(
                            chaos.query_url,
                            {"sql": big(slow_tag), "params": {}},
                            {"Authorization": f"Bearer {chaos.token}"},
                            seconds=SLOW_S,
                        )
                    )
                    hung_up_at = trio.current_time()
                    rss_stalled = rss_kib(proc.pid)
                rss_peak = rss_kib(proc.pid, "VmHWM")
                # the abandoned query is cancelled: tdslite logs it as it ends
                await eventually(
                    lambda: any(slow_tag in e["statement"] for e in chaos.db.log.entries)
                )
                stopped_s = trio.current_time() - hung_up_at
                links_after = await chaos.connections()
    during = [e for e in tally.events if e[0] - e[3] > started]
    (entry,) = [e for e in chaos.db.log.entries if slow_tag in e["statement"]]
    check_and_record(
        tally,
        chaos.db.log.entries,
        allowed=(),
        rss_kib=(rss_before, rss_peak),
        rss_growth_mib=32.0,
        slow_client_bytes_read=len(read[0]),
        ok_while_slow_client_read=sum(1 for e in during if e[1] == "ok"),
        stopped_in_db_after_hangup_s=round(stopped_s, 2),
        connector_rss_while_stalled_mib=round(rss_stalled / 1024, 1),
    )
    assert read[0].startswith(b"HTTP/1.1 200"), read[0][:100]
    assert len(read[0]) <= 12 + SLOW_S + 1
    assert len(during) >= 5, "other queries must keep flowing while one client stalls"
    assert max(e[3] for e in during) < 5.0
    assert entry["outcome"].get("cancelled") is True, entry  # stopped, not run to the end
    assert stopped_s < 15.0
    assert links_after == 1, "the slow client must not cost the connector its link"
