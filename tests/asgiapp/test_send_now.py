"""asgiapp.server's `SEND_NOW` WebSocket extension on real sockets (127.0.0.1): a binary message
written at once when the socket takes it whole, byte for byte the frame ``send`` writes (and what
wsproto makes of it as a server); when the socket is full, the rest is sent by what it returns,
under the write lock, so a message another task sends meanwhile follows it whole.

The app accepts, sends what the path asks for, notes what `SEND_NOW` returned, and closes; the
client is wsproto on a raw TCP stream.
"""

from __future__ import annotations

import functools
from typing import Any

import trio
import trio.testing
import wsproto
import wsproto.events as ws_events

from asgiapp.server import SEND_NOW
from tests.asgiapp.test_receive_until import served

SMALL = bytes(range(200))
#: far more than a socket's buffers hold: the first write cannot take it whole
BIG = bytes(range(256)) * (32 * 1024)
AFTER = b"after"


class Noted:
    def __init__(self) -> None:
        self.lines: list[str] = []
        #: set by the test once it has seen the app wait for the client to read
        self.read = trio.Event()
        self.finished = trio.Event()


async def app(noted: Noted, scope: dict[str, Any], receive: Any, send: Any) -> None:
    try:
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        send_now = scope["extensions"][SEND_NOW]
        if scope["path"] == "/small":
            noted.lines.append(f"now {send_now(SMALL)}")
            await send({"type": "websocket.send", "bytes": SMALL})
        elif scope["path"] == "/big":
            rest = send_now(BIG)
            noted.lines.append(f"rest {rest is not None}")

            async def other() -> None:
                later = send_now(AFTER)
                noted.lines.append(f"busy {later is not None}")
                if later is not None:
                    await later

            async with trio.open_nursery() as nursery:
                # other tasks' messages wait for the write lock the rest holds
                nursery.start_soon(send, {"type": "websocket.send", "bytes": AFTER})
                nursery.start_soon(other)
                await trio.testing.wait_all_tasks_blocked()
                await noted.read.wait()
                await rest
        await send({"type": "websocket.close", "code": 1000})
        await receive()
    finally:
        noted.finished.set()


async def _upgrade(stream: trio.SocketStream, client: wsproto.WSConnection, path: str) -> bytes:
    """The handshake; returns what came after the 101's head."""
    await stream.send_all(client.send(ws_events.Request(host="t", target=path)))
    data = b""
    while b"\r\n\r\n" not in data:
        data += await stream.receive_some(65536)
    head, _, after = data.partition(b"\r\n\r\n")
    client.receive_data(head + b"\r\n\r\n")
    assert isinstance(next(client.events()), ws_events.AcceptConnection)
    return after


async def _messages(
    stream: trio.SocketStream, client: wsproto.WSConnection, wire: bytes
) -> tuple[list[bytes], bytes]:
    """The client's binary messages up to the server's close (answered), and the raw bytes."""
    messages: list[bytes] = []
    part = b""
    client.receive_data(wire)
    while True:
        for event in client.events():
            if isinstance(event, ws_events.CloseConnection):
                await stream.send_all(client.send(event.response()))
                return messages, wire
            assert isinstance(event, ws_events.BytesMessage)
            part += event.data
            if event.message_finished:
                messages.append(part)
                part = b""
        data = await stream.receive_some(65536)
        wire += data
        client.receive_data(data or None)


async def _exchange(path: str) -> tuple[list[str], list[bytes], bytes]:
    """Connect to `path`, let the app write once the client is ready to read: what the app
    noted, the messages the client received, and the bytes on the wire."""
    noted = Noted()
    with trio.fail_after(30):
        async with served(functools.partial(app, noted)) as stream:
            client = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
            after = await _upgrade(stream, client, path)
            await trio.testing.wait_all_tasks_blocked()  # the app wrote what it could
            noted.read.set()
            messages, wire = await _messages(stream, client, after)
            await noted.finished.wait()
    return noted.lines, messages, wire


async def test_a_message_the_socket_takes_goes_out_at_once_as_send_writes_it() -> None:
    lines, messages, wire = await _exchange("/small")
    assert lines == ["now None"]
    assert messages == [SMALL, SMALL]
    server = wsproto.connection.Connection(wsproto.ConnectionType.SERVER)
    frame = server.send(ws_events.BytesMessage(data=SMALL))
    assert wire.startswith(frame + frame)


async def test_a_full_socket_gets_the_rest_from_what_send_now_returned() -> None:
    lines, messages, _wire = await _exchange("/big")
    assert lines == ["rest True", "busy True"]
    assert messages == [BIG, AFTER, AFTER]
