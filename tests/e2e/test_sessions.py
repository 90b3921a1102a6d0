"""Sessions end to end through the Python relay (SPEC.md 7.4, 11.5): the faults that need the
relay's own pieces (its session table, a second tunnel, a restart, a connector too old for
sessions). Real dev IdP tokens, the real relay and connector, tdslite's table as the truth."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio.testing

from connector.config import load_config
from connector.runtime import Connector, open_connector
from edgetds.devidp import DevIdP, open_dev_idp
from identity.keys import encode_public_key
from identity.oidc import default_verify_context
from relay.server import RunningRelay, open_relay
from tdslite import TdsServer, open_server
from tests.support.connector_stack import write_connector_config
from tests.support.e2e_stack import SETUP_SQL, TDSLITE_USERS, admin_batch, write_key
from tests.support.ports import reserved_port
from tests.support.protocol_peer import open_peer
from tests.support.relays import relay_config
from tests.support.sessions_http import SessionClient, make_stock, stock


@dataclass
class Rig:
    idp: DevIdP
    db: TdsServer
    relay: RunningRelay
    connector: Connector
    http: httpx.AsyncClient

    def client(self, sub: str = "bob", tunnel: str = "demo") -> SessionClient:
        token = self.idp.mint(sub=sub, groups=["admins"])
        return SessionClient(self.http, self.relay.http_url, tunnel, token)


async def _database(stack: AsyncExitStack, tmp_path: Path) -> tuple[DevIdP, TdsServer]:
    users = tmp_path / "users.toml"
    users.write_text(TDSLITE_USERS)
    idp = await stack.enter_async_context(open_dev_idp(key_dir=tmp_path / "idp"))
    db = await stack.enter_async_context(open_server(users=users, db=":memory:"))
    await trio.to_thread.run_sync(admin_batch, db, SETUP_SQL)
    await make_stock(db)
    return idp, db


def _relay_config(idp: DevIdP, port: int, **limits: int) -> tuple[Any, dict[str, Any]]:
    """The tunnels ``demo`` and ``other`` (the same connector may serve both)."""
    config, keys = relay_config(
        tunnel="demo",
        connector_ids=["conn-1"],
        issuer=idp.issuer,
        listen=f"127.0.0.1:{port}",
        limits={"auth_failure_burst": 100_000, "query_burst": 100_000, **limits},
    )
    demo = config.tunnels["demo"]
    tunnels = {"demo": demo, "other": dataclasses.replace(demo, name="other")}
    return dataclasses.replace(config, tunnels=tunnels), keys


async def _connector(
    stack: AsyncExitStack, tmp_path: Path, idp: DevIdP, db: TdsServer, ws_url: str,
    config: Any, keys: dict[str, Any],
) -> Connector:  # fmt: skip
    """A connector dialling ``ws_url`` (READY on return unless no relay listens there yet)."""
    path = write_connector_config(
        tmp_path / "connector",
        relay_urls=[ws_url],
        relay_public_keys=[encode_public_key(config.private_key)],
        private_key_file=write_key(tmp_path / "conn-1.key", keys["conn-1"]),
        issuer=idp.issuer,
        db_host=db.host,
        db_port=db.port,
        database=db.engine.database,
        ha_connections=1,
    )
    # a long idle timeout: the 10,000 begins take longer than the default 30 s
    path.write_text(path.read_text() + "\n[sessions]\nidle_timeout_ms = 240000\n")
    connector: Connector = await stack.enter_async_context(open_connector(load_config(path)))
    return connector


@asynccontextmanager
async def rig(tmp_path: Path, **limits: int) -> AsyncIterator[Rig]:
    """IdP + tdslite (with the stock table) + a Python relay with the tunnels ``demo`` and
    ``other`` (and these [limits]) + a connector serving ``demo``."""
    async with AsyncExitStack() as stack:
        idp, db = await _database(stack, tmp_path)
        config, keys = _relay_config(idp, 0, **limits)
        relay = await stack.enter_async_context(open_relay(config))
        connector = await _connector(stack, tmp_path, idp, db, relay.ws_url, config, keys)
        await connector.wait_ready()
        http = await stack.enter_async_context(
            httpx.AsyncClient(verify=default_verify_context(), timeout=60)
        )
        yield Rig(idp, db, relay, connector, http)


async def test_ten_thousand_begins_hold_the_caps_and_leak_nothing(tmp_path: Path) -> None:
    with trio.fail_after(240):
        async with rig(tmp_path) as r:
            client = r.client()
            statuses: dict[int, int] = {}
            opened: list[str] = []

            async def worker(count: int) -> None:
                for _ in range(count):
                    answer = await client.begin()
                    statuses[answer.status] = statuses.get(answer.status, 0) + 1
                    if answer.status == 201:
                        opened.append(answer.body["session"])
                    else:
                        assert answer.error["code"] == "limits.too_many_sessions"

            async with trio.open_nursery() as nursery:
                for _ in range(50):
                    nursery.start_soon(worker, 200)
            assert statuses == {201: 8, 429: 9_992}
            table = r.relay.app.sessions
            assert table.statistics() == {"open": 8, "remembered": 0}  # refusals left no trace
            assert len(r.connector.service.sessions.open_sessions()) == 8
            pools = {s.login: s for s in r.connector.service.pools.statistics()}
            assert pools["writer"].in_use == 8
            for sid in opened:
                assert (await client.delete(sid)).status == 200
            assert table.statistics() == {"open": 0, "remembered": 8}
            assert r.connector.service.sessions.open_sessions() == []
            pools = {s.login: s for s in r.connector.service.pools.statistics()}
            assert pools["writer"].in_use == 0
            assert (await client.begin()).status == 201


async def test_the_tunnel_cap_counts_every_identity(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with rig(tmp_path, max_sessions_per_tunnel=3) as r:
            opened = [await r.client(f"user{i}").open() for i in range(3)]
            over = await r.client("user3").begin()
            assert (over.status, over.error["code"]) == (429, "limits.too_many_sessions")
            assert over.error["limit"] == "tunnel"
            assert over.headers["retry-after"] == "1"
            stats = (await r.http.get(f"{r.relay.http_url}/v1/relay/stats")).json()
            assert stats["sessions"] == {"open": 3, "remembered": 0}
            assert (await r.client("user0").delete(opened[0])).status == 200
            assert (await r.client("user3").begin()).status == 201


async def test_another_tunnels_id_is_not_found_and_busy_is_refused(tmp_path: Path) -> None:
    slow = "SELECT COUNT(*) FROM d a, d b, d c, d e, d f, d g, d h, d i, d j"
    with trio.fail_after(60):
        async with rig(tmp_path) as r:
            client = r.client()
            sid = await client.open()
            elsewhere = r.client(tunnel="other")
            foreign = await elsewhere.query(sid, "SELECT 1")
            assert (foreign.status, foreign.error["code"]) == (404, "session.not_found")
            manager = r.connector.service.sessions
            (session,) = manager.open_sessions()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(client.query, sid, slow)
                while not session.busy:  # the slow statement runs at the connector
                    await session.changed.wait()
                busy = await client.op(sid, "commit")
                assert (busy.status, busy.error["code"]) == (409, "session.busy")
                nursery.cancel_scope.cancel()  # the client goes away: the relay CANCELs it
            while session.busy:
                await session.changed.wait()
            # the interrupted statement cost the session (its connection was cut) or not; either
            # way the session answers again, and nothing is left open after a DELETE
            after = await client.delete(sid)
            assert after.status in (200, 410), after.lines
            while manager.open_sessions():
                await manager.wait_changed()


async def test_a_relay_restart_mid_transaction_rolls_back(tmp_path: Path) -> None:
    port = reserved_port()
    with trio.fail_after(90):
        async with AsyncExitStack() as stack:
            idp, db = await _database(stack, tmp_path)
            config, keys = _relay_config(idp, port)
            http = await stack.enter_async_context(
                httpx.AsyncClient(verify=default_verify_context(), timeout=60)
            )
            url = f"ws://127.0.0.1:{port}"
            connector = await _connector(stack, tmp_path, idp, db, url, config, keys)
            async with open_relay(config) as first:
                await connector.wait_ready()
                r = Rig(idp, db, first, connector, http)
                client = r.client()
                sid = await client.open()
                await client.query(sid, "UPDATE stock SET qty = 0 WHERE id = 1")
                manager = connector.service.sessions
                assert len(manager.open_sessions()) == 1
            # the relay is gone mid-transaction: the connector rolls the session back
            while manager.open_sessions():
                await manager.wait_changed()
            assert await stock(db) == [(1, 10), (2, 0)]
            async with open_relay(config) as second:  # the same address and keys
                await connector.wait_ready()
                r.relay = second
                after = await r.client().op(sid, "commit")
                # the new relay never saw this session (404); nothing was committed
                assert (after.status, after.error["code"]) == (404, "session.not_found")
                assert await stock(db) == [(1, 10), (2, 0)]
                assert (await r.client().open()) != sid


async def test_a_connector_without_the_session_capability_gets_503(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with AsyncExitStack() as stack:
            idp, _db = await _database(stack, tmp_path)
            config, keys = _relay_config(idp, 0)
            relay = await stack.enter_async_context(open_relay(config))
            public = encode_public_key(config.private_key)
            await stack.enter_async_context(
                open_peer(relay.ws_url, "demo", "conn-1", keys["conn-1"], public, caps=())
            )
            http = await stack.enter_async_context(
                httpx.AsyncClient(verify=default_verify_context(), timeout=60)
            )
            token = idp.mint(sub="bob", groups=["admins"])
            client = SessionClient(http, relay.http_url, "demo", token)
            answer = await client.begin()
            while answer.error["code"] == "tunnel.no_connector" and "old" not in str(answer.error):
                answer = await client.begin()  # the peer's READY may still be on its way
            assert answer.status == 503
            assert "too old for sessions" in answer.error["message"]
            assert relay.app.sessions.statistics() == {"open": 0, "remembered": 0}


@pytest.fixture
def clock() -> trio.testing.MockClock:
    """Real time, plus jumps: the relay forgets ended sessions on trio's clock."""
    return trio.testing.MockClock(rate=1.0)


async def test_the_relay_forgets_ended_sessions_after_ten_minutes(
    tmp_path: Path, clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(60 + 601):
        async with (
            rig(tmp_path) as r,
            # a new connection per request: a jump of the clock expires the relay's keep-alive
            # timeout (5 s) on an idle connection at the very moment the next request reuses it
            httpx.AsyncClient(
                verify=default_verify_context(),
                timeout=60,
                limits=httpx.Limits(max_keepalive_connections=0),
            ) as http,
        ):
            client = dataclasses.replace(r, http=http).client()
            sid = await client.open()
            assert (await client.op(sid, "commit")).status == 200
            assert (await client.op(sid, "commit")).status == 410
            clock.jump(599)
            assert (await client.op(sid, "commit")).status == 410
            clock.jump(2)
            forgotten = await client.op(sid, "commit")
            assert (forgotten.status, forgotten.error["code"]) == (404, "session.not_found")
            assert r.relay.app.sessions.statistics() == {"open": 0, "remembered": 0}
