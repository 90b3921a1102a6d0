"""Chaos: two connector replicas (real processes, conn-1 and conn-2) serve one tunnel; conn-1 is
SIGKILLed under load. Its in-flight queries end with transport.lost, the tunnel keeps answering
through conn-2, nothing runs twice, and a restarted conn-1 rejoins."""

from __future__ import annotations

import signal

import trio

from tests.chaos._common import check_and_record, under_load
from tests.support.chaos import Tally, rss_kib
from tests.support.chaos_stack import TUNNEL, Chaos
from tests.support.relays import start_python_relay


async def test_one_connector_replica_killed_mid_load(chaos: Chaos) -> None:
    tally = Tally("replica_kill")
    async with start_python_relay(
        tunnel=TUNNEL, connector_ids=["conn-1", "conn-2"], issuer=chaos.idp.issuer
    ) as relay:
        chaos.use_relay(relay)
        with trio.fail_after(120):
            async with chaos.connector("conn-2") as survivor:
                async with chaos.connector("conn-1") as victim:
                    await chaos.wait_connections(4)
                    rss_before = rss_kib(survivor.pid)
                    async with under_load(chaos, tally, workers=6):
                        await trio.sleep(2.0)
                        victim.send_signal(signal.SIGKILL)
                        await victim.wait()
                        killed_at = trio.current_time()
                        down_to_two_s = await chaos.wait_connections(2)
                        await trio.sleep(1.5)  # the tunnel keeps serving on conn-2 alone
                        ok_before_restart = tally.ok
                        async with chaos.connector("conn-1"):
                            restarted_at = trio.current_time()
                            rejoin_s = await chaos.wait_connections(4)
                            await trio.sleep(1.0)
                        alone = [e for e in tally.events if killed_at + 0.5 < e[0] - e[3]]
                rss_peak = rss_kib(survivor.pid, "VmHWM")
    alone_ok = sum(1 for e in alone if e[1] == "ok")
    check_and_record(
        tally,
        chaos.db.log.entries,
        allowed={"transport.lost"},
        rss_kib=(rss_before, rss_peak),
        relay_noticed_s=round(down_to_two_s, 2),
        rejoin_s=round(rejoin_s, 2),
        ok_while_alone=alone_ok,
    )
    assert restarted_at > killed_at
    assert ok_before_restart > 0
    assert alone_ok > 0, "the surviving replica must keep serving"
    assert down_to_two_s < 3.0, "the relay sees a killed connector's sockets close at once"
    assert rejoin_s < 15.0
