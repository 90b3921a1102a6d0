"""A wire tap for TDS: a TCP relay on 127.0.0.1 in front of a TDS server (tdslite) that decodes
each request message the client sends (type, the RESETCONNECTION status bit, the RPC calls in it
or a SQL batch's text), to prove what a client put on the wire and in how many requests."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import trio

from tdslite.server import _rpc

__all__ = ["ATTENTION", "RPC", "SQL_BATCH", "Message", "WireTap"]

RPC, SQL_BATCH, ATTENTION = 0x03, 0x01, 0x06


@dataclass
class Message:
    """One request message the client sent."""

    type: int
    reset: bool
    #: for an RPC: (procedure, first parameter's value) of each call, in order
    calls: list[tuple[str, Any]] = field(default_factory=list)
    text: str = ""  #: for a SQL batch: its text


class WireTap:
    """A TCP relay in front of tdslite that decodes the client's request messages."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.messages: list[Message] = []
        self.links: list[tuple[trio.SocketStream, trio.SocketStream]] = []

    def requests(self) -> list[Message]:
        return [m for m in self.messages if m.type in (RPC, SQL_BATCH)]

    async def serve(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._handle, listeners)

    async def cut(self) -> None:
        """Close every live link (both sides), as a network failure or a server restart."""
        for client, upstream in self.links:
            await client.aclose()
            await upstream.aclose()
        self.links.clear()

    async def _handle(self, client: trio.SocketStream) -> None:
        async with client, await trio.open_tcp_stream("127.0.0.1", self.target_port) as upstream:
            self.links.append((client, upstream))
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._pump, client, upstream, True, nursery.cancel_scope)
                nursery.start_soon(self._pump, upstream, client, False, nursery.cancel_scope)

    async def _pump(
        self, src: trio.SocketStream, dst: trio.SocketStream, read: bool, scope: trio.CancelScope
    ) -> None:
        buffer, payload, first_status = b"", b"", None
        try:
            while data := await src.receive_some(65536):
                await dst.send_all(data)
                if not read:
                    continue
                buffer += data
                while len(buffer) >= 8 and len(buffer) >= int.from_bytes(buffer[2:4], "big"):
                    size = int.from_bytes(buffer[2:4], "big")
                    packet, buffer = buffer[:size], buffer[size:]
                    first_status = packet[1] if first_status is None else first_status
                    payload += packet[8:]
                    if packet[1] & 0x01:  # EOM: the message is complete
                        self._record(packet[0], first_status, payload)
                        payload, first_status = b"", None
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        scope.cancel()

    def _record(self, kind: int, status: int, payload: bytes) -> None:
        message = Message(kind, bool(status & 0x08))
        if kind == RPC:
            message.calls = [
                (c.name, c.params[0].value if c.params else None) for c in _rpc.parse(payload)
            ]
        elif kind == SQL_BATCH:
            size = int.from_bytes(payload[:4], "little")
            message.text = payload[size:].decode("utf-16-le")
        self.messages.append(message)
