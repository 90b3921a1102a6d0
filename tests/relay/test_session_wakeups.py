"""What a result costs the relay's session in task wake-ups (relay/session.py): a connector
message that queues nothing to send back (COLUMNS + ROWS + DONE of a small result) does not wake
the writer task, while a PING still gets its PONG at once; a query's handler sends its QUERY
itself (`send_queued`) when no write is in progress, and leaves it to the write in progress
otherwise, in frame order; releasing an ended stream wakes nobody.

Runs the relay's `ConnectorSession` over the in-memory WebSocket of test_session_clock, with a
real connector-role `protocol.Connection` as the far end; a trio Instrument counts the steps of
the session's writer task.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio
import trio.abc
import trio.testing

from protocol import FrameType, events
from relay.config import Limits
from relay.session import ConnectorSession, RelayStream, WebSocketIO
from tests.relay.test_session_clock import FarEnd, session_over_memory

COLUMNS = b'{"columns":[{"name":"n","type":"int","nullable":false}]}\n'
ROWS = b"[7]\n"
DONE = b'{"done":{"rows":1,"result_sets":1,"elapsed_ms":1,"query_id":"q-1"}}\n'


class WriterSteps(trio.abc.Instrument):
    """Counts the steps of ConnectorSession._writer tasks."""

    def __init__(self) -> None:
        self.steps = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task.name.endswith("ConnectorSession._writer"):
            self.steps += 1


def _query(stream_id: int, session_id: str) -> events.Query:
    return events.Query(
        stream_id=stream_id,
        query_id="q-1",
        token="t",
        sql="SELECT 7 AS n",
        query=None,
        params={},
        options={"max_rows": None, "timeout_ms": 1000},
        attestation={},
    )


async def _open(session: ConnectorSession, far: FarEnd) -> RelayStream:
    """Open a stream and wait until the far end has read its QUERY (the writer is idle again)."""
    stream = session.open_stream(_query)
    await trio.testing.wait_all_tasks_blocked()
    assert stream.stream_id in far.conn.open_streams()
    return stream


async def _answer(far: FarEnd, stream_id: int, *, ping: bool) -> None:
    """COLUMNS + ROWS + DONE as one message (and a PING first when `ping`)."""
    if ping:
        far.conn.send(events.Ping(b"12345678"))
    far.conn.send(events.Columns(stream_id, COLUMNS))
    far.conn.send(events.Rows(stream_id, ROWS))
    far.conn.send(events.Done(stream_id, DONE))
    await far.to_relay.send({"type": "websocket.receive", "bytes": far.conn.data_to_send()})


@asynccontextmanager
async def counted_session() -> AsyncIterator[tuple[ConnectorSession, FarEnd, WriterSteps]]:
    """A session over memory, its far end, and the count of its writer's steps."""
    counter = WriterSteps()
    trio.lowlevel.add_instrument(counter)
    try:
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                async with session_over_memory(Limits(), nursery) as (session, far):
                    yield session, far, counter
    finally:
        trio.lowlevel.remove_instrument(counter)


async def test_a_result_message_does_not_wake_the_writer_and_a_ping_does() -> None:
    async with counted_session() as (session, far, counter):
        stream = await _open(session, far)
        before = counter.steps
        await _answer(far, stream.stream_id, ping=False)
        received = [await stream.receive.receive() for _ in range(3)]
        await trio.testing.wait_all_tasks_blocked()
        assert counter.steps == before  # nothing to send: the writer slept on
        assert [type(e) for e in received] == [
            events.Columns,
            events.Rows,
            events.Done,
        ]
        stream.consumed(len(COLUMNS) + len(ROWS))
        stream.release("done")
        await trio.testing.wait_all_tasks_blocked()

        stream = await _open(session, far)
        before = counter.steps
        await _answer(far, stream.stream_id, ping=True)
        await trio.testing.wait_all_tasks_blocked()
        assert counter.steps > before
        assert session.conn.data_to_send() == b""  # the PONG went out
        session.abort()


class GatedSocket(WebSocketIO):
    """The session's socket, with every send held until `gate` is set: a write in progress.
    `sent` lists the messages that went out, in order."""

    def __init__(self, inner: WebSocketIO) -> None:
        self.inner = inner
        self.closed = False
        self.gate = trio.Event()
        self.sent: list[bytes] = []

    async def receive(self) -> bytes | None:
        return await self.inner.receive()

    async def send(self, data: bytes) -> None:
        await self.gate.wait()
        self.sent.append(data)
        await self.inner.send(data)

    async def close(self, code: int, reason: str = "") -> None:
        await self.inner.close(code, reason)


async def test_a_query_sent_by_its_handler_does_not_wake_the_writer() -> None:
    async with counted_session() as (session, far, counter):
        await trio.testing.wait_all_tasks_blocked()
        before = counter.steps
        stream = session.open_stream(_query, wake_writer=False)
        await session.send_queued()
        assert session.conn.data_to_send() == b""  # the QUERY went out
        await trio.testing.wait_all_tasks_blocked()
        assert stream.stream_id in far.conn.open_streams()
        await _answer(far, stream.stream_id, ping=False)
        received = [await stream.receive.receive() for _ in range(3)]
        assert isinstance(received[-1], events.Done)
        stream.release("done")  # ended: no CANCEL, nothing to send
        await trio.testing.wait_all_tasks_blocked()
        assert counter.steps == before  # the writer slept throughout
        session.abort()


async def test_a_query_queued_during_a_write_follows_it_and_its_handler_does_not_wait() -> None:
    async with counted_session() as (session, far, _counter):
        socket = GatedSocket(session.ws)
        session.ws = socket
        session.conn.send(events.Ping(b"12345678"))
        session.kick()
        await trio.testing.wait_all_tasks_blocked()  # the writer waits at the gate
        stream = session.open_stream(_query, wake_writer=False)
        await session.send_queued()  # returns while the write is in progress
        assert socket.sent == []
        socket.gate.set()
        await trio.testing.wait_all_tasks_blocked()
        assert [message[1] for message in socket.sent] == [
            FrameType.PING,
            FrameType.QUERY,
        ]
        assert stream.stream_id in far.conn.open_streams()
        session.abort()


async def test_a_handler_write_to_a_stuck_socket_ends_with_the_connection() -> None:
    async with counted_session() as (session, _far, _counter):
        socket = GatedSocket(session.ws)
        session.ws = socket
        stream = session.open_stream(_query, wake_writer=False)
        sender_done = trio.Event()

        async def handler() -> None:
            with trio.CancelScope() as scope:
                scope.cancel()  # the handler's own cancel does not cut the write
                await session.send_queued()
            sender_done.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(handler)
            await trio.testing.wait_all_tasks_blocked()
            assert not sender_done.is_set()  # the write waits for the socket
            session.abort()  # a dead connector: the connection ends, and the write with it
        assert sender_done.is_set()
        assert socket.sent == []
        [event] = [e async for e in stream.receive]
        assert isinstance(event, events.Error)  # transport.lost


class TakesAtOnce(WebSocketIO):
    """The session's socket with a server's SEND_NOW that always takes the message whole at
    once: `now` lists what went that way (sent on through `inner`'s channel by the test)."""

    def __init__(self, inner: WebSocketIO) -> None:
        self.inner = inner
        self.closed = False
        self.now: list[bytes] = []

    async def receive(self) -> bytes | None:
        return await self.inner.receive()

    async def send(self, data: bytes) -> None:
        await self.inner.send(data)

    def send_now(self, data: bytes) -> None:
        self.now.append(data)

    async def close(self, code: int, reason: str = "") -> None:
        await self.inner.close(code, reason)


async def test_a_query_the_socket_takes_at_once_is_written_in_the_call() -> None:
    """With SEND_NOW the handler's QUERY is written in its call, in one message, and the
    handler's own cancelled scope does not stop it (nothing in it waits)."""
    async with counted_session() as (session, far, counter):
        socket = TakesAtOnce(session.ws)
        session.ws = socket
        await trio.testing.wait_all_tasks_blocked()
        before = counter.steps
        stream = session.open_stream(_query, wake_writer=False)
        with trio.CancelScope() as scope:
            scope.cancel()
            await session.send_queued()
        assert not scope.cancelled_caught  # no checkpoint on the way
        assert [message[1] for message in socket.now] == [FrameType.QUERY]
        assert session.conn.data_to_send() == b""
        await socket.inner.send(socket.now[0])
        await trio.testing.wait_all_tasks_blocked()
        assert stream.stream_id in far.conn.open_streams()
        assert counter.steps == before  # the writer slept throughout
        session.abort()
