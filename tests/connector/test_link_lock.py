"""The write locks of a tunnel link and of its WebSocket: a free lock is taken without a Trio
schedule point (the link's reader flushes after every message, and a query writes its answer
under both), websockets' reader writes nothing, and takes no lock, when nothing is queued after a
message it read, and the locks still serialise writers (tests/connector/test_coalesce.py sends
12 answers at once on one link)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio
import trio.testing

import tdslite
from connector._free import Free
from connector.config import load_config
from connector.runtime import open_connector
from edgetds.devidp import DevIdP
from protocol import events
from tests.connector.rogue_relay import RogueRelay
from tests.support.connector_keys import Keys, config_for
from tests.support.connector_stack import TDSLITE_USERS
from tests.support.links import idle_link


async def test_a_free_write_lock_is_taken_without_a_schedule_point() -> None:
    link = idle_link()
    with trio.fail_after(5):
        with trio.testing.assert_no_checkpoints():
            await link.flush()  # nothing queued: no round of the run loop
        # a writer holding the lock still makes the next one wait for it
        await link._send_lock.acquire()
        flushed: list[str] = []

        async def flush() -> None:
            await link.flush()
            flushed.append("flushed")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(flush)
            await trio.testing.wait_all_tasks_blocked()
            assert flushed == []
            link._send_lock.release()
        assert flushed == ["flushed"]
        assert not link._send_lock.locked()


async def _write(ws: Any, written: list[bytes]) -> None:
    await ws.send_data()
    written.append(b"written")


async def test_the_websocket_writes_under_a_free_lock_and_skips_empty_writes(
    tmp_path: Path, keys: Keys, idp: DevIdP, rogue: RogueRelay
) -> None:
    users = tmp_path / "users.toml"
    users.write_text(TDSLITE_USERS)
    with trio.fail_after(30):
        async with tdslite.open_server(users=users) as db:
            path = config_for(tmp_path, keys, idp, rogue.ws_url, db_port=db.port)
            async with open_connector(load_config(path)) as connector:
                await connector.wait_ready()
                links = [link for link in connector._links if link.ready]
                assert links
                for link in links:
                    ws = link.ws
                    assert ws is not None
                    assert isinstance(ws.send_lock, Free)  # set with the connection, never swapped
                    with trio.testing.assert_no_checkpoints():
                        await ws.send_data()  # what websockets' reader does after each message
                    # a writer holding the lock makes the next one wait, queued data and all
                    await ws.send_lock.acquire()
                    ws.protocol.send_ping(b"held")
                    written: list[bytes] = []
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(_write, ws, written)
                        await trio.testing.wait_all_tasks_blocked()
                        assert written == []
                        assert ws.protocol.writes  # still queued behind the held lock
                        ws.send_lock.release()
                    assert written == [b"written"]
                    assert not ws.protocol.writes


async def test_messages_the_link_reader_must_handle_keep_their_order(
    tmp_path: Path, keys: Keys, idp: DevIdP, rogue: RogueRelay
) -> None:
    """A message with more than QUERY/CANCEL/CREDIT/PONG in it (here a PING with a QUERY) goes
    to the link's reader with what was parsed of it; the next message waits for it; a message
    that breaks the protocol is answered by the reader (GOAWAY, close) as before."""
    users = tmp_path / "users.toml"
    users.write_text(TDSLITE_USERS)
    token = idp.mint(sub="alice", groups=["analysts"])
    with trio.fail_after(30):
        async with tdslite.open_server(users=users) as db:
            path = config_for(tmp_path, keys, idp, rogue.ws_url, db_port=db.port, ha_connections=1)
            async with open_connector(load_config(path)):
                session = await rogue.wait_session()
                await session.ready.wait()
                session.conn.send(events.Ping(b"12345678"))  # goes out with the next QUERY
                first = await session.query(token=token, sql="SELECT 1 AS one")
                second = await session.query(token=token, sql="SELECT 2 AS two")
                await first.done.wait()
                await second.done.wait()
                assert (first.terminal, second.terminal) == ("done", "done")
                assert b"[1]" in first.body
                assert b"[2]" in second.body
                assert events.Pong(b"12345678") in session.received
                await session.ws.send(b"\x00not a frame of edgetds/1")
                await session.closed.wait()
    goaway = [e for e in session.received if isinstance(e, events.GoAway)]
    assert goaway
    assert goaway[0].code == "protocol.error"
