"""Connector resilience against a scripted relay: DRAIN/GOAWAY reconnect at once, a black-holed
network is detected within the dead-peer deadline, a restarted relay is rejoined, the concurrency
cap refuses excess queries with a typed error, and CANCEL stops the statement in the database."""

from __future__ import annotations

import json
from pathlib import Path

import trio

from connector.config import load_config
from connector.runtime import open_connector
from edgetds.devidp import DevIdP
from identity.keys import load_private_key
from protocol import events
from tdslite import open_server
from tests.connector.rogue_relay import (
    RogueRelay,
    open_proxy,
    open_rogue_relay,
)
from tests.support.connect_proxy import open_connect_proxy
from tests.support.connector_keys import Keys, closed_port, config_for
from tests.support.connector_stack import TEST_POLICY
from tests.support.e2e_stack import SETUP_SQL, TDSLITE_USERS, admin_batch
from tests.support.waiting import eventually

SLOW = "SELECT COUNT(*) AS c FROM d a, d b, d c, d e, d f, d g, d h, d i, d j"


async def test_relay_drain_gets_a_replacement_connection_at_once(
    tmp_path: Path, keys: Keys, idp: DevIdP, rogue: RogueRelay
) -> None:
    path = config_for(
        tmp_path, keys, idp, rogue.ws_url, db_port=closed_port(), ha_connections=1,
        backoff_base_s=30.0, backoff_cap_s=30.0,
    )  # fmt: skip
    with trio.fail_after(20):
        async with open_connector(load_config(path)) as connector:
            first = await rogue.wait_session()
            await first.ready.wait()
            started = trio.current_time()
            await first.send(events.Drain("relay deploy"))
            second = await rogue.wait_session(2)
            await second.ready.wait()
            took = trio.current_time() - started
            await first.closed.wait()  # idle: the old connection closes itself
            assert connector.immediate_reconnects == 1
            assert connector.ready_links == 1
    assert took < 2.0
    assert any(isinstance(e, events.GoAway) for e in first.received)


async def test_goaway_reconnects_at_once(
    tmp_path: Path, keys: Keys, idp: DevIdP, rogue: RogueRelay
) -> None:
    path = config_for(
        tmp_path, keys, idp, rogue.ws_url, db_port=closed_port(), ha_connections=1,
        backoff_base_s=30.0, backoff_cap_s=30.0,
    )  # fmt: skip
    with trio.fail_after(20):
        async with open_connector(load_config(path)) as connector:
            first = await rogue.wait_session()
            await first.ready.wait()
            await first.send(events.GoAway("relay.overloaded", "going away", 0))
            await first.ws.aclose()
            second = await rogue.wait_session(2)
            await second.ready.wait()
            assert connector.immediate_reconnects == 1


async def test_black_holed_network_is_detected_within_the_deadline(
    tmp_path: Path, keys: Keys, idp: DevIdP, rogue: RogueRelay
) -> None:
    port = int(rogue.ws_url.rsplit(":", 1)[1])
    async with open_proxy(port) as proxy:
        path = config_for(
            tmp_path, keys, idp, f"ws://127.0.0.1:{proxy.port}", db_port=closed_port(),
            ha_connections=1, ping_interval_s=0.2, dead_peer_after_s=1.0, open_timeout_s=1.0,
        )  # fmt: skip
        with trio.fail_after(30):
            async with open_connector(load_config(path)) as connector:
                await connector.wait_ready()
                proxy.freeze()
                started = trio.current_time()
                while connector.ready_links:
                    await connector.wait_changed()
                detected = trio.current_time() - started
                proxy.thaw()
                await connector.wait_ready()  # a new connection through the healed network
                healed = trio.current_time() - started
    # ping every 0.2 s, dead after 1.0 s, closing handshake bounded by 1.0 s
    assert detected < 3.0, detected
    assert healed < 6.0, healed
    assert proxy.connections >= 2


async def test_restarted_relay_is_rejoined(tmp_path: Path, keys: Keys, idp: DevIdP) -> None:
    pub = load_private_key(keys.connector.private_path).public_key()
    kw = dict(tunnel="demo", connector_id="conn-1", connector_public_key=pub, relay_key=keys.relay)
    port = closed_port()
    path = config_for(tmp_path, keys, idp, f"ws://127.0.0.1:{port}", db_port=closed_port())
    with trio.fail_after(30):
        async with open_connector(load_config(path)) as connector:
            # the relay is not up yet: the connector retries with backoff until it is
            while connector.reconnects < 1:
                await connector.wait_changed()
            async with open_rogue_relay(port=port, **kw) as relay:  # type: ignore[arg-type]
                await connector.wait_ready(2)
                assert len(relay.sessions) == 2
            # the relay went away: the connector notices and backs off
            while connector.ready_links:
                await connector.wait_changed()
            failed_before = connector.reconnects
            while connector.reconnects < failed_before + 1:
                await connector.wait_changed()
            async with open_rogue_relay(port=port, **kw) as again:  # type: ignore[arg-type]
                await connector.wait_ready(2)
                assert len(again.sessions) >= 2
            assert connector.reconnects >= 2


async def test_concurrency_cap_and_cancel_frame(
    tmp_path: Path, keys: Keys, idp: DevIdP, rogue: RogueRelay
) -> None:
    users = tmp_path / "users.toml"
    users.write_text(TDSLITE_USERS)
    async with open_server(users=users, db=":memory:") as db:
        await trio.to_thread.run_sync(admin_batch, db, SETUP_SQL)
        path = config_for(
            tmp_path, keys, idp, rogue.ws_url, db_port=db.port, database=db.engine.database,
            ha_connections=2, max_concurrent_queries=1,
        )  # fmt: skip
        token = idp.mint(sub="alice", groups=["analysts"])
        with trio.fail_after(30):
            async with open_connector(load_config(path)) as connector:
                session = await rogue.wait_session()
                other = await rogue.wait_session(2)
                await session.ready.wait()
                await other.ready.wait()
                # each connection takes 1 stream (READY max_streams), the connector 1 in total
                slow = await session.query(token=token, sql=SLOW)
                while connector.service.in_flight < 1:
                    await connector.service.wait_changed()
                excess = await other.query(token=token, sql="SELECT 1 AS one")
                # every connector slot is taken: it waits for one (nothing reaches tdslite)
                while connector.service.admission.waiting() < 1:
                    await connector.service.wait_changed()
                assert not excess.done.is_set()
                await eventually(lambda: db.statement_log.is_running(SLOW))
                await session.cancel(slow.stream_id)
                await slow.done.wait()
                assert json.loads(slow.body.splitlines()[-1])["error"]["code"] == (
                    "query.cancelled"
                )
                # the freed slot goes to the waiting query
                await excess.done.wait()
                assert excess.terminal == "done", excess.body
                await eventually(
                    lambda: any(e["statement"] == SLOW for e in db.statement_log.entries)
                )
                (entry,) = [e for e in db.statement_log.entries if e["statement"] == SLOW]
                assert entry["outcome"].get("cancelled") is True
                # the slot is free again
                ok = await session.query(token=token, sql="SELECT n FROM d WHERE n = 3")
                await ok.done.wait()
                assert ok.terminal == "done", ok.body


async def test_cancel_ends_a_query_stalled_on_a_client_that_never_reads(
    tmp_path: Path, keys: Keys, idp: DevIdP, rogue: RogueRelay
) -> None:
    """The connector sends up to the window, then waits for CREDIT that never comes; a CANCEL
    (or the timeout: same watchdog) must still end the stream at once and free the connection."""
    users = tmp_path / "users.toml"
    users.write_text(TDSLITE_USERS)
    big = (
        "SELECT a.n AS a, b.n AS b, c.n AS c, N'padding padding padding' AS p "
        "FROM d a, d b, d c, d e, d f"
    )
    async with open_server(users=users, db=":memory:") as db:
        await trio.to_thread.run_sync(admin_batch, db, SETUP_SQL)
        path = config_for(
            tmp_path, keys, idp, rogue.ws_url, db_port=db.port, database=db.engine.database,
            ha_connections=1,
        )  # fmt: skip
        token = idp.mint(sub="alice", groups=["analysts"])
        window = rogue.limits.stream_window
        with trio.fail_after(60):
            async with open_connector(load_config(path)) as connector:
                session = await rogue.wait_session()
                await session.ready.wait()
                session.grant_credit = False  # the client stopped reading: no CREDIT ever
                stalled = await session.query(token=token, sql=big)

                def sent() -> int:
                    return sum(len(data) for kind, data in stalled.chunks if kind != "error")

                await eventually(lambda: sent() >= window - 64 * 1024)
                await trio.sleep(0.5)  # stalled on credit now
                assert sent() <= window  # it never overran the credit
                started = trio.current_time()
                await session.cancel(stalled.stream_id)
                await stalled.done.wait()
                took = trio.current_time() - started
                last = json.loads(stalled.chunks[-1][1])
                assert last["error"]["code"] == "query.cancelled"
                (pool,) = [p for p in connector.service.pools.statistics() if p.login == "reader"]
                assert pool.in_use == 0  # the connection came back (or was discarded)
    assert took < 4


async def test_dials_through_an_http_connect_proxy(
    tmp_path: Path, keys: Keys, idp: DevIdP, rogue: RogueRelay
) -> None:
    async with open_connect_proxy() as proxy:
        path = config_for(
            tmp_path, keys, idp, rogue.ws_url, db_port=closed_port(),
            proxy=proxy.url,
        )  # fmt: skip
        with trio.fail_after(20):
            async with open_connector(load_config(path)) as connector:
                await connector.wait_ready(2)
    host, port = rogue.ws_url.removeprefix("ws://").rsplit(":", 1)
    assert proxy.tunnels == [(host, int(port))] * 2


async def test_an_identity_at_its_role_cap_is_refused_others_are_not(
    tmp_path: Path, keys: Keys, idp: DevIdP, rogue: RogueRelay
) -> None:
    users = tmp_path / "users.toml"
    users.write_text(TDSLITE_USERS)
    policy = TEST_POLICY.replace(
        "timeout_ms = 240000\n", "timeout_ms = 240000\nmax_concurrent_per_identity = 1\n", 1
    )
    async with open_server(users=users, db=":memory:") as db:
        await trio.to_thread.run_sync(admin_batch, db, SETUP_SQL)
        path = config_for(
            tmp_path, keys, idp, rogue.ws_url, db_port=db.port, database=db.engine.database,
            ha_connections=1, max_concurrent_queries=4, policy=policy,
        )  # fmt: skip
        alice = idp.mint(sub="alice", groups=["analysts"])
        with trio.fail_after(30):
            async with open_connector(load_config(path)) as connector:
                session = await rogue.wait_session()
                await session.ready.wait()
                slow = await session.query(token=alice, sql=SLOW)
                while connector.service.in_flight < 1:
                    await connector.service.wait_changed()
                again = await session.query(token=alice, sql="SELECT 1 AS one")
                await again.done.wait()
                err = json.loads(again.body)["error"]
                assert (err["code"], err["limit"]) == ("limits.too_many_queries", "identity")
                assert "max_concurrent_per_identity" in err["message"]
                bob = await session.query(
                    token=idp.mint(sub="bob", groups=["analysts"]), sql="SELECT 1 AS one"
                )
                await bob.done.wait()
                assert bob.terminal == "done", bob.body
                await session.cancel(slow.stream_id)
                await slow.done.wait()
