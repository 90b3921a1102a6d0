"""Chaos: a process dies in the middle of a session's transaction. The connector (``edgetds
connector run``) or the Python relay (``edgetds relay serve``) is SIGKILLed after the session's
UPDATEs ran and before its commit: tdslite's table shows nothing of them (its statement log
shows they ran and that no COMMIT did), and the client gets the typed error SPEC.md 11.5 names."""

from __future__ import annotations

import json
import signal

import trio

from tests.support.chaos_stack import Chaos, RelayProcess
from tests.support.e2e_stack import admin_batch
from tests.support.sessions_http import STOCK_SQL, SessionClient, stock


async def _transaction_in_flight(chaos: Chaos, http_url: str) -> tuple[SessionClient, str]:
    """A session of bob's with two uncommitted UPDATEs."""
    assert chaos.db.server is not None
    await trio.to_thread.run_sync(admin_batch, chaos.db.server, STOCK_SQL)
    token = chaos.idp.mint(sub="bob", groups=["admins"], expires_in=600)
    client = SessionClient(chaos.http, http_url, "demo", token)
    sid = await client.open()
    for sql in (
        "UPDATE stock SET qty = qty - 4 WHERE id = 1",
        "UPDATE stock SET qty = 4 WHERE id = 2",
    ):
        assert (await client.query(sid, sql)).status == 200
    return client, sid


def _committed(chaos: Chaos) -> list[str]:
    """The COMMIT statements tdslite ran (a session's commit op sends COMMIT TRANSACTION)."""
    return [
        e["statement"] for e in chaos.db.log.entries if str(e["statement"]).startswith("COMMIT")
    ]


async def test_a_killed_connector_leaves_nothing_of_the_transaction(chaos: Chaos) -> None:
    relay = RelayProcess(chaos.workdir, issuer=chaos.idp.issuer, connector_ids=["conn-1"])
    chaos.use_relay(relay.handle)
    with trio.fail_after(90):
        async with relay.running():
            async with chaos.connector("conn-1") as proc:
                await chaos.wait_connections(2)
                client, sid = await _transaction_in_flight(chaos, relay.handle.http_url)
                proc.send_signal(signal.SIGKILL)
                await proc.wait()
                await chaos.wait_connections(0)
            answer = await client.op(sid, "commit")
            assert (answer.status, answer.error["session"]["reason"]) == (410, "transport.lost")
            assert chaos.db.server is not None
            # the reader waits for the dead connection's locks, then sees the rollback
            assert await stock(chaos.db.server) == [(1, 10), (2, 0)]
            updates = [e for e in chaos.db.log.entries if "UPDATE stock" in str(e["statement"])]
            assert len(updates) == 2
            assert _committed(chaos) == []


async def test_a_relay_killed_mid_transaction_rolls_back_at_the_connector(chaos: Chaos) -> None:
    relay = RelayProcess(chaos.workdir, issuer=chaos.idp.issuer, connector_ids=["conn-1"])
    chaos.use_relay(relay.handle)
    with trio.fail_after(90):
        async with chaos.connector("conn-1"):
            async with relay.running() as first:
                await chaos.wait_connections(2)
                client, sid = await _transaction_in_flight(chaos, relay.handle.http_url)
                first.send_signal(signal.SIGKILL)
                await first.wait()
            assert chaos.db.server is not None
            # the connector saw its connections go and rolled the session back
            assert await stock(chaos.db.server) == [(1, 10), (2, 0)]
            async with relay.running():
                await chaos.wait_connections(2)
                answer = await client.op(sid, "commit")
                # the restarted relay never saw the session
                assert (answer.status, answer.error["code"]) == (404, "session.not_found")
            assert await stock(chaos.db.server) == [(1, 10), (2, 0)]
            assert _committed(chaos) == []
            audit = (chaos.workdir / "conn-1" / "audit.jsonl").read_text().splitlines()
            ends = [json.loads(line)["session"] for line in audit if '"end"' in line]
            assert ends == [{"id": sid, "op": "end", "reason": "transport.lost"}]
