"""The tunnel link's writes over a real WebSocket on 127.0.0.1.

A message the socket takes whole at once is written with no schedule point and no cancel scope
(`_WebSocket.send_now`); what a full socket did not take goes out whole, before any message
queued after it, and a caller cancelled meanwhile still waits for it (the link's shielded
write). A failed write closes the connection as websockets' ``send`` does. `StreamSink.hold`
takes a result's last chunk exactly as ``send_columns``/``send_rows`` with ``flush=False`` hold
it, or takes nothing.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace

import pytest
import trio
import trio.testing
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from websockets.exceptions import ConnectionClosedError
from websockets.trio.client import connect
from websockets.trio.server import ServerConnection, serve

from connector.results import QueryFailed
from connector.tunnel import StreamSink, TunnelLink, _WebSocket
from protocol import MIN_FRAME, Connection, Limits, Role, events, ndjson_line, sign_hello
from tests.support.links import idle_link

#: larger than what loopback's socket buffers take while the peer reads nothing
BIG = bytes(range(256)) * (64 * 1024)  # 16 MiB


@dataclass
class Peer:
    """The server's side: reads nothing until ``reading`` is set (after the first message,
    which its WebSocket reads and queues), then keeps every message in ``received``."""

    url: str = ""
    reading: trio.Event = field(default_factory=trio.Event)
    received: list[bytes] = field(default_factory=list)
    arrived: trio.Event = field(default_factory=trio.Event)

    async def handler(self, ws: ServerConnection) -> None:
        await self.reading.wait()
        async for message in ws:
            assert isinstance(message, bytes)
            self.received.append(message)
            self.arrived.set()
            self.arrived = trio.Event()

    async def wait_for(self, count: int) -> None:
        while len(self.received) < count:
            await self.arrived.wait()


@asynccontextmanager
async def _connected() -> AsyncIterator[tuple[Peer, _WebSocket]]:
    peer = Peer()
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            lambda task_status: serve(
                peer.handler,
                0,
                host="127.0.0.1",
                compression=None,
                max_size=None,
                max_queue=0,  # its reader pauses once one message waits for the handler
                task_status=task_status,
            )
        )
        port = server.listeners[0].socket.getsockname()[1]
        peer.url = f"ws://127.0.0.1:{port}"
        async with connect(
            peer.url,
            compression=None,
            ping_interval=None,
            max_size=None,
            create_connection=_WebSocket,
        ) as ws:
            assert isinstance(ws, _WebSocket)
            yield peer, ws
        peer.reading.set()
        await server.aclose()
        nursery.cancel_scope.cancel()


async def test_a_message_the_socket_takes_is_written_at_once() -> None:
    with trio.fail_after(30):
        async with _connected() as (peer, ws):
            with trio.testing.assert_no_checkpoints():
                assert ws.send_now(b"one") is None
            assert not ws.protocol.writes
            await ws.send(b"two")  # websockets' own write of the next message
            peer.reading.set()
            await peer.wait_for(2)
            assert peer.received == [b"one", b"two"]


async def test_what_a_full_socket_did_not_take_goes_out_whole_before_later_messages() -> None:
    with trio.fail_after(60):
        async with _connected() as (peer, ws):
            assert ws.send_now(b"first") is None
            rest = ws.send_now(BIG)
            assert rest is not None
            assert ws.protocol.writes  # the rest, at the front of websockets' queue
            done: list[str] = []

            async def write_rest() -> None:
                await rest
                done.append("big")

            async def write_after() -> None:
                await ws.send(b"after")
                done.append("after")

            async with trio.open_nursery() as nursery:
                nursery.start_soon(write_rest)
                await trio.testing.wait_all_tasks_blocked()
                nursery.start_soon(write_after)
                await trio.testing.wait_all_tasks_blocked()
                assert done == []  # the socket is full: both wait, the rest first
                peer.reading.set()
            assert done == ["big", "after"]
            await peer.wait_for(3)
            assert peer.received == [b"first", BIG, b"after"]


async def test_a_failed_write_closes_the_connection_as_send_does() -> None:
    with trio.fail_after(30):
        async with _connected() as (_, ws):
            assert ws._raw_socket is not None
            ws._raw_socket.shutdown(socket.SHUT_WR)  # the next write fails (EPIPE)
            rest = ws.send_now(b"lost")
            assert rest is not None  # nothing was written: websockets' write fails as it does
            with pytest.raises(ConnectionClosedError):
                await rest
            with pytest.raises(ConnectionClosedError):
                await ws.send(b"after")


def _ready_link(limits: Limits) -> tuple[TunnelLink, Connection]:
    """A link whose protocol connection took a relay's HELLO (``limits``) and answered READY,
    and the relay's side of it, which took the READY; nothing is written to a socket yet."""

    key = Ed25519PrivateKey.generate()
    link = idle_link(key)
    relay = Connection(Role.RELAY, limits=limits)
    hello = sign_hello(
        key,
        relay_key_id="k",
        session_id="s",
        tunnel="t",
        connector_id="c1",
        nonce="n",
        limits=limits,
    )
    relay.send(events.Hello(fields=hello))
    link.conn.receive_data(relay.data_to_send())
    link.conn.events()
    link.conn.send(events.Ready(connector_id="c1", max_streams=link.limits.max_streams))
    relay.receive_data(link.conn.data_to_send())
    assert [type(e) for e in relay.events()] == [events.Ready]
    return link, relay


def _received(relay: Connection, messages: list[bytes]) -> list[events.AnyEvent]:
    for message in messages:
        relay.receive_data(message)
    return relay.events()


async def test_the_link_writes_a_message_whole_for_a_caller_cancelled_meanwhile() -> None:
    link, relay = _ready_link(Limits())
    drains = [events.Drain(str(n) * 900_000) for n in range(10)]  # 9 MB, a message each
    with trio.fail_after(60):
        async with _connected() as (peer, ws):
            link.ws = ws
            first = events.Drain("first")
            with trio.testing.assert_no_checkpoints():
                await link.send(first)  # taken by the socket at once
            steps: list[str] = []

            async def cancelled_sender() -> None:
                with trio.CancelScope() as scope:
                    scope.cancel()
                    await link.send(*drains)
                    steps.append("sent")
                    await trio.lowlevel.checkpoint()
                    steps.append("not cancelled")
                assert scope.cancelled_caught

            async with trio.open_nursery() as nursery:
                nursery.start_soon(cancelled_sender)
                await trio.testing.wait_all_tasks_blocked()
                assert steps == []  # waiting for the socket, not cancelled half-way
                peer.reading.set()
            assert steps == ["sent"]  # then cancelled at its next checkpoint
            await peer.wait_for(1 + len(drains))
    assert _received(relay, peer.received) == [first, *drains]


def _open_stream(link: TunnelLink, relay: Connection) -> StreamSink:
    query = events.Query(
        stream_id=relay.next_stream_id,
        query_id=f"q{relay.next_stream_id}",
        token="t",
        sql="SELECT 1",
        query=None,
        params={},
        options={},
        attestation={},
    )
    relay.send(query)
    link.conn.receive_data(relay.data_to_send())
    assert link.conn.events() == [query]
    return StreamSink(link, query.stream_id)


COLUMNS = b'{"columns":[{"name":"n","type":"int"}]}\n'
#: rows that fill a MIN_FRAME window exactly, with COLUMNS
ROWS = b"[1]\n" * ((MIN_FRAME - len(COLUMNS)) // 4) + b"1" * ((MIN_FRAME - len(COLUMNS)) % 4)


async def test_hold_takes_the_last_chunk_as_send_with_flush_false_holds_it() -> None:
    """Held by `hold` or by the sends (one stream each): the same frames in one message."""
    link, relay = _ready_link(Limits())
    rows = b"[1]\n[2]\n"
    with trio.fail_after(30):
        async with _connected() as (peer, ws):
            peer.reading.set()
            link.ws = ws
            held, sent = _open_stream(link, relay), _open_stream(link, relay)
            with trio.testing.assert_no_checkpoints():
                assert held.hold(COLUMNS, rows)
            await sent.send_columns(COLUMNS, flush=False)
            await sent.send_rows(rows, flush=False)
            assert held.bytes_sent == sent.bytes_sent == len(COLUMNS) + len(rows)
            for sink in (held, sent):
                await sink.finish(ndjson_line({"done": {"rows": 2}}), error=False)
            await peer.wait_for(2)  # each stream's frames in one message
    messages = [_received(relay, [message]) for message in peer.received]
    assert [type(e) for e in messages[0]] == [events.Columns, events.Rows, events.Done]
    assert [replace(e, stream_id=0) for e in messages[0]] == [
        replace(e, stream_id=0) for e in messages[1]
    ]
    assert {e.stream_id for e in messages[0]} == {held.stream_id}


async def test_hold_takes_nothing_unless_the_window_takes_all_of_it() -> None:
    link, relay = _ready_link(Limits(max_frame=MIN_FRAME, stream_window=MIN_FRAME))
    sink = _open_stream(link, relay)
    # the window takes the columns, not the rows with them: nothing is taken
    assert not sink.hold(COLUMNS, ROWS + b"\n")
    assert (sink._held, sink._held_bytes, sink.bytes_sent) == ([], 0, 0)
    assert not sink.hold(None, ROWS + b"\n" + COLUMNS)  # larger than a frame
    with pytest.raises(QueryFailed):  # what the sends do with a column list that large
        await sink.send_columns(ROWS + COLUMNS + b"\n", flush=False)
    assert not sink.hold(ROWS + COLUMNS + b"\n", b"")
    assert (sink._held, sink.bytes_sent) == ([], 0)
    assert sink.hold(COLUMNS, ROWS)  # exactly the window
    assert sink._held == [
        events.Columns(sink.stream_id, COLUMNS),
        events.Rows(sink.stream_id, ROWS),
    ]
    assert sink.bytes_sent == MIN_FRAME
    assert not sink.hold(None, b"[2]\n")  # the window is taken
    closed = _open_stream(link, relay)
    link.closed = True
    assert not closed.hold(None, b"[2]\n")
