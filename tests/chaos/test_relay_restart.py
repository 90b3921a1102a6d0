"""Chaos: the Python relay (`edgetds relay serve`, a real process on a fixed port) is SIGKILLed
under load and started again on the same URL. In-flight queries end with an error the client
sees (the relay's own HTTP connections die with it), nothing runs twice, and the connector
rejoins the restarted relay by itself within its backoff."""

from __future__ import annotations

import signal

import trio

from tests.chaos._common import check_and_record, under_load, wait_ok_after
from tests.support.chaos import Tally, rss_kib
from tests.support.chaos_stack import Chaos, RelayProcess

DOWN_S = 1.5


async def test_relay_killed_and_restarted_mid_load(chaos: Chaos) -> None:
    tally = Tally("relay_restart")
    relay = RelayProcess(chaos.workdir, issuer=chaos.idp.issuer, connector_ids=["conn-1"])
    chaos.use_relay(relay.handle)
    with trio.fail_after(120):
        async with chaos.connector("conn-1") as proc, relay.running() as first:
            await chaos.wait_connections(2)
            rss_before = rss_kib(proc.pid)
            async with under_load(chaos, tally):
                await trio.sleep(1.5)
                first.send_signal(signal.SIGKILL)
                await first.wait()
                await trio.sleep(DOWN_S)
                async with relay.running():
                    up_at = trio.current_time()
                    reconnect_s = await chaos.wait_connections(2)
                    first_ok = await wait_ok_after(tally, up_at)
                    await trio.sleep(1.0)
                    after = await chaos.connections()
                    with trio.fail_after(10):  # all connections back (and stay) within a bound
                        settled_s = await chaos.wait_connections(2)
            rss_peak = rss_kib(proc.pid, "VmHWM")
    check_and_record(
        tally,
        chaos.db.log.entries,
        rss_kib=(rss_before, rss_peak),
        reconnect_s=round(reconnect_s, 2),
        first_ok_after_restart_s=round(first_ok, 2),
        relay_down_s=DOWN_S,
        connections_1s_after=after,
    )
    assert settled_s < 10.0
    assert sum(tally.client_errors.values()) > 0, "the kill was not observed by any client"
    assert reconnect_s < 5.0, "backoff (base 0.05 s, cap 0.5 s) must bring both links back"
