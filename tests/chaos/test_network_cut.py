"""Chaos: the network between connector and relay becomes a black hole (a TCP proxy that swallows
every byte and keeps both sockets open, so no one is told). Both ends' keepalives must notice:
in-flight queries end with a typed error within a bound, and the connector reconnects through
the healed network by itself."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import trio

from tests.chaos._common import check_and_record, under_load, wait_ok_after
from tests.support.chaos import BlackHoleProxy, Tally, one_query, rss_kib
from tests.support.chaos_stack import TUNNEL, Chaos
from tests.support.relays import TEST_LIMITS, RelayHandle, start_python_relay
from tests.support.waiting import eventually
from tests.support.worker_relay import TEST_LIMITS as WORKER_TEST_LIMITS
from tests.support.worker_relay import open_worker_relay

CUT_S = 3.0
#: what the connector logs when a connection is up again (READY sent)
READY_LINE = "tunnel ready"
#: PROBE_TIMEOUT_MS of relay/worker/src/liveness.js: when a connector opens a connection, the
#: Worker PINGs its other connections and closes those silent this long (its alarm times it)
PROBE_TIMEOUT_S = 3.0
#: after both of the connector's connections are back, the Worker counts exactly those two within
#: the probe timeout of the later one, plus its alarm's and this test's status polling's latency
#: on a loaded machine
SETTLE_BOUND_S = PROBE_TIMEOUT_S + 2.0
#: what the connector logs when a connection ended
ENDED_LINE = "connection ended"
#: the connector's timing in these tests (backoff as tests/support/connector_stack.py sets it)
CONNECTOR = {
    "ping_interval_s": 0.2,
    "dead_peer_after_s": 1.0,
    "open_timeout_s": 1.0,
    "backoff_base_s": 0.05,
    "backoff_cap_s": 0.5,
}
#: a connection whose peer went silent ends within: the ping interval, the pong timeout
#: (dead_peer_after_s - ping_interval_s) and the bounded closing handshake (dead_peer_after_s),
#: plus 1 s for a loaded machine
DEAD_BOUND_S = CONNECTOR["ping_interval_s"] + 2 * CONNECTOR["dead_peer_after_s"] + 1.0
#: both connections are back after the heal within: a dial made in the dark failing
#: (open_timeout_s), the longest backoff delay (backoff_cap_s) and the dial that succeeds
#: (open_timeout_s), plus 2 s for a loaded machine
RECONNECT_BOUND_S = 2 * CONNECTOR["open_timeout_s"] + CONNECTOR["backoff_cap_s"] + 2.0
#: relay keepalive (SPEC 6.3 defaults are 15 s / 45 s; shortened so the test takes seconds)
RELAY_LIMITS = {**TEST_LIMITS, "ping_interval_s": 0.5, "dead_after_s": 2.0}


def long_running(tag: str) -> str:
    """A statement that runs for many seconds in tdslite (10^8 rows counted)."""
    return f"SELECT COUNT(*) AS c, '{tag}' AS tag FROM d a, d b, d c, d e, d f, d g, d h, d i"


@dataclass
class Cut:
    """A network cut under load: when it happened, the long query's tag, the connector's RSS."""

    proxy: BlackHoleProxy
    at: float
    long_tag: str
    rss_before: int
    rss_peak: int = 0


@asynccontextmanager
async def cut_under_load(
    chaos: Chaos, ws_url: str, tally: Tally, nursery: trio.Nursery
) -> AsyncIterator[Cut]:
    """conn-1 dials the relay at ``ws_url`` through a black-hole proxy; under load, with one long
    statement certainly in flight, the network goes dark; the block runs during the cut (heal it
    with ``cut.proxy.heal()``); the load stops when it exits."""
    proxy = BlackHoleProxy(int(ws_url.rsplit(":", 1)[1]))
    await nursery.start(proxy.serve)
    async with chaos.connector("conn-1", [f"ws://127.0.0.1:{proxy.port}"], **CONNECTOR) as proc:
        await chaos.wait_connections(2)
        rss_before = rss_kib(proc.pid)
        async with under_load(chaos, tally):
            long_tag = tally.new_tag()
            nursery.start_soon(
                functools.partial(
                    one_query, chaos.http, chaos.query_url, chaos.token, tally,
                    long_running, tag=long_tag,
                )
            )  # fmt: skip
            await eventually(lambda: chaos.db.log.is_running(long_tag))
            proxy.blackhole()
            cut = Cut(proxy, trio.current_time(), long_tag, rss_before)
            yield cut
        cut.rss_peak = rss_kib(proc.pid, "VmHWM")


@asynccontextmanager
async def python_relay(chaos: Chaos) -> AsyncIterator[tuple[RelayHandle, trio.Nursery]]:
    """The Python relay in process with a fast keepalive (RELAY_LIMITS), registered with
    `chaos`, and a nursery for the proxy and the load (cancel it when done)."""
    async with (
        start_python_relay(
            tunnel=TUNNEL, connector_ids=["conn-1"], issuer=chaos.idp.issuer, limits=RELAY_LIMITS
        ) as relay,
        trio.open_nursery() as nursery,
    ):
        chaos.use_relay(relay)
        yield relay, nursery


async def test_black_holed_network_ends_in_flight_queries_and_heals(chaos: Chaos) -> None:
    tally = Tally("network_cut")
    async with python_relay(chaos) as (relay, nursery):
        with trio.fail_after(120):
            async with cut_under_load(chaos, relay.ws_url, tally, nursery) as cut:
                relay_gave_up_s = await chaos.wait_connections(0)
                await trio.sleep(max(0.0, CUT_S - (trio.current_time() - cut.at)))
                cut.proxy.heal()
                reconnect_s = await chaos.wait_connections(2)
                await trio.sleep(1.0)
        nursery.cancel_scope.cancel()
    # queries running when the network went dark, and how long each took to get its answer
    hit = [e for e in tally.events if e[0] - e[3] < cut.at < e[0]]
    slowest_hit = max((e[0] - cut.at for e in hit), default=0.0)
    check_and_record(
        tally,
        chaos.db.log.entries,
        allowed={"transport.lost", "tunnel.no_connector"},
        rss_kib=(cut.rss_before, cut.rss_peak),
        in_flight_at_cut=len(hit),
        in_flight_ended_within_s=round(slowest_hit, 2),
        relay_gave_up_s=round(relay_gave_up_s, 2),
        reconnect_after_heal_s=round(reconnect_s, 2),
    )
    assert hit, "no query was in flight at the cut"
    (long_one,) = [e for e in tally.events if e[4] == cut.long_tag]
    assert long_one[1:3] == ("typed", "transport.lost"), long_one
    assert long_one[0] - cut.at < 6.0
    assert all(e[1] != "ok" or e[0] - cut.at < 0.3 for e in hit), "a cut query reported ok late"
    assert slowest_hit < 6.0, "in-flight queries must end within the dead-peer bound"
    assert relay_gave_up_s < 6.0
    assert reconnect_s < 6.0


async def test_a_black_hole_after_a_slow_network_is_still_noticed(chaos: Chaos) -> None:
    """Pongs that come later than the ping interval (a slow or congested network) must not cost
    the connector its dead-peer check: when the network then goes dark, it still gives up on its
    connections and redials. (websockets' own keepalive, which the connector used, stopped for
    good after one late pong: its connections then never noticed a dead peer.)"""
    async with python_relay(chaos) as (relay, nursery):
        proxy = BlackHoleProxy(int(relay.ws_url.rsplit(":", 1)[1]))
        await nursery.start(proxy.serve)
        with trio.fail_after(60):
            async with chaos.connector(
                "conn-1", [f"ws://127.0.0.1:{proxy.port}"], **CONNECTOR
            ) as process:
                await chaos.wait_connections(2)
                log_mark = chaos.connector_log_size()
                proxy.lag_s = 2 * CONNECTOR["ping_interval_s"]  # under the pong timeout
                await eventually(lambda: all(link.late >= 3 for link in proxy.links))
                proxy.lag_s = 0.0
                proxy.blackhole()
                await chaos.wait_connections(0)  # the relay's own keepalive gave up
                # the connector gives up too (bound: its pong timeout and closing handshake)
                with trio.fail_after(DEAD_BOUND_S):
                    await eventually(lambda: chaos.connector_log(log_mark).count(ENDED_LINE) >= 2)
                proxy.heal()
                with trio.fail_after(RECONNECT_BOUND_S):
                    await chaos.wait_connections(2)
                assert process.returncode is None
        nursery.cancel_scope.cancel()
    assert "keepalive ping failed" not in chaos.connector_log()


async def test_black_holed_network_to_the_worker_relay(chaos: Chaos) -> None:
    """The Worker keeps no timer while idle (relay/worker/README.md, dead connector links): while
    a query is in flight it PINGs a connection silent for ping_interval_s and closes it 3 s later
    if it stays silent, and it probes a connector's other connections when that connector opens a
    new one. So the query in flight at the cut ends transport.lost, never at its deadline."""
    tally = Tally("network_cut_worker")
    async with (
        open_worker_relay(
            tunnel=TUNNEL, connector_ids=["conn-1"], issuer=chaos.idp.issuer,
            limits={**WORKER_TEST_LIMITS, "query_timeout_ms": 8_000, "ping_interval_s": 0.5},
        ) as worker,
        trio.open_nursery() as nursery,
    ):  # fmt: skip
        chaos.use_relay(worker.handle)
        with trio.fail_after(120):
            async with cut_under_load(chaos, worker.handle.ws_url, tally, nursery) as cut:
                await trio.sleep(CUT_S)
                during = await chaos.connections()
                log_mark = chaos.connector_log_size()
                cut.proxy.heal()
                healed_at = trio.current_time()
                first_ok = await wait_ok_after(tally, healed_at)
                # the event that matters: both of the connector's slots are back (its backoff
                # decides when; this block's deadline bounds it), so the Worker has been told of
                # both new connections and probed the dead ones: it must stop counting them
                # within PROBE_TIMEOUT_S of the later one
                await eventually(lambda: chaos.connector_log(log_mark).count(READY_LINE) >= 2)
                reconnected_s = trio.current_time() - healed_at
                samples = []
                settled_s = -1.0
                with trio.move_on_after(SETTLE_BOUND_S):
                    settled_s = await chaos.wait_connections(2)
                for _ in range(4):
                    samples.append(await chaos.connections())
                    await trio.sleep(0.5)
        nursery.cancel_scope.cancel()
    (long_one,) = [e for e in tally.events if e[4] == cut.long_tag]
    check_and_record(
        tally,
        chaos.db.log.entries,
        allowed={"transport.lost", "tunnel.no_connector", "query.timeout"},
        rss_kib=(cut.rss_before, cut.rss_peak),
        worker_connections_during_cut=during,
        long_query=f"{long_one[2] or long_one[1]} after {long_one[0] - cut.at:.2f} s",
        first_ok_after_heal_s=round(first_ok, 2),
        connector_back_after_heal_s=round(reconnected_s, 2),
        connections_settled_after_connector_s=round(settled_s, 2),
        connections_after_heal=samples,
    )
    assert long_one[1:3] == ("typed", "transport.lost"), long_one
    assert long_one[0] - cut.at < CUT_S + 6.0, "the cut query must end once the connector is back"
    assert 0 <= settled_s < SETTLE_BOUND_S, f"the dead connections are still counted: {samples}"
