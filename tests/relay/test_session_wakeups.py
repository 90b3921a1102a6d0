"""What a result costs the relay's session in task wake-ups (relay/session.py): a connector
message that queues nothing to send back (COLUMNS + ROWS + DONE of a small result) does not wake
the writer task, while a PING still gets its PONG at once.

Runs the relay's `ConnectorSession` over the in-memory WebSocket of test_session_clock, with a
real connector-role `protocol.Connection` as the far end; a trio Instrument counts the steps of
the session's writer task.
"""

from __future__ import annotations

import trio
import trio.abc
import trio.testing

from protocol import events
from relay.config import Limits
from relay.session import ConnectorSession, RelayStream
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


async def test_a_result_message_does_not_wake_the_writer_and_a_ping_does() -> None:
    counter = WriterSteps()
    trio.lowlevel.add_instrument(counter)
    try:
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                async with session_over_memory(Limits(), nursery) as (session, far):
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
    finally:
        trio.lowlevel.remove_instrument(counter)
