"""Which WebSocket library should carry edgetds/1 over Trio? websockets.trio vs trio-websocket.

Both ends run in this process on 127.0.0.1 (port 0), no TLS, no compression, binary messages:

1. echo round trip: one 64-byte message out, the echo back; N sequential rounds -> p50/p99 (us).
2. pipelined throughput: the client sends M messages of 16 KiB (a ROWS-sized chunk) without
   waiting; the server acknowledges the last one -> messages/s and MiB/s.

The baseline, measured in the same run, is a raw trio TCP stream doing the same work with a
4-byte length prefix (the floor any WebSocket library sits on); each library is reported as a
ratio to it. Run: ``.venv/bin/python -m bench.ws_transport [--rounds N] [--messages M]``.
"""

from __future__ import annotations

import argparse
import statistics
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial

import trio
import trio_websocket
from websockets.trio.client import connect as ws_connect
from websockets.trio.server import serve as ws_serve

SMALL = b"x" * 64
CHUNK = b"r" * 16384
ACK = b"ack"


@dataclass(frozen=True)
class Result:
    name: str
    p50_us: float
    p99_us: float
    msgs_per_s: float

    @property
    def mib_per_s(self) -> float:
        return self.msgs_per_s * len(CHUNK) / 2**20


@dataclass
class Link:
    """A connected client end: send one message, receive one message."""

    send: Callable[[bytes], Awaitable[None]]
    recv: Callable[[], Awaitable[bytes]]


async def _measure(name: str, link: Link, rounds: int, messages: int) -> Result:
    for _ in range(100):  # warm-up
        await link.send(SMALL)
        await link.recv()
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        await link.send(SMALL)
        await link.recv()
        samples.append((time.perf_counter() - start) * 1e6)
    await link.send(b"bulk")
    start = time.perf_counter()
    for _ in range(messages):
        await link.send(CHUNK)
    assert await link.recv() == ACK
    elapsed = time.perf_counter() - start
    q = statistics.quantiles(samples, n=100)
    return Result(name, statistics.median(samples), q[98], messages / elapsed)


async def _serve_messages(
    recv: Callable[[], Awaitable[bytes]], send: Callable[[bytes], Awaitable[None]], messages: int
) -> None:
    while True:
        msg = await recv()
        if msg == b"bulk":
            for _ in range(messages):
                await recv()
            await send(ACK)
            return
        await send(msg)


# -- raw TCP (baseline) ---------------------------------------------------------------------------


class _Framed:
    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buf = bytearray()

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(struct.pack(">I", len(data)) + data)

    async def recv(self) -> bytes:
        while True:
            if len(self.buf) >= 4:
                (n,) = struct.unpack(">I", self.buf[:4])
                if len(self.buf) >= 4 + n:
                    msg = bytes(self.buf[4 : 4 + n])
                    del self.buf[: 4 + n]
                    return msg
            chunk = await self.stream.receive_some(65536)
            if not chunk:
                raise EOFError
            self.buf += chunk


@asynccontextmanager
async def raw_tcp(messages: int) -> AsyncIterator[Link]:
    async with trio.open_nursery() as nursery:

        async def handler(stream: trio.SocketStream) -> None:
            framed = _Framed(stream)
            await _serve_messages(framed.recv, framed.send, messages)

        listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        framed = _Framed(stream)
        yield Link(framed.send, framed.recv)
        await stream.aclose()
        nursery.cancel_scope.cancel()


# -- websockets.trio ------------------------------------------------------------------------------


@asynccontextmanager
async def websockets_trio(messages: int) -> AsyncIterator[Link]:
    async def handler(ws):  # type: ignore[no-untyped-def]
        async def recv() -> bytes:
            return await ws.recv(decode=False)  # type: ignore[no-any-return]

        await _serve_messages(recv, ws.send, messages)

    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            lambda task_status: ws_serve(
                handler,
                0,
                host="127.0.0.1",
                compression=None,
                max_size=2**24,
                ping_interval=None,
                task_status=task_status,
            )
        )
        port = server.listeners[0].socket.getsockname()[1]
        async with ws_connect(
            f"ws://127.0.0.1:{port}/", compression=None, max_size=2**24, ping_interval=None
        ) as ws:

            async def recv() -> bytes:
                return await ws.recv(decode=False)  # type: ignore[no-any-return]

            yield Link(ws.send, recv)
        await server.aclose()


# -- trio-websocket -------------------------------------------------------------------------------


@asynccontextmanager
async def trio_websocket_lib(messages: int) -> AsyncIterator[Link]:
    async def handler(request: trio_websocket.WebSocketRequest) -> None:
        ws = await request.accept()

        async def recv() -> bytes:
            msg = await ws.get_message()
            assert isinstance(msg, bytes)
            return msg

        await _serve_messages(recv, ws.send_message, messages)

    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            lambda task_status: trio_websocket.serve_websocket(
                handler,
                "127.0.0.1",
                0,
                ssl_context=None,
                max_message_size=2**24,
                task_status=task_status,
            )
        )
        async with trio_websocket.open_websocket(
            "127.0.0.1", server.port, "/", use_ssl=False, max_message_size=2**24
        ) as ws:

            async def recv() -> bytes:
                msg = await ws.get_message()
                assert isinstance(msg, bytes)
                return msg

            yield Link(ws.send_message, recv)
        nursery.cancel_scope.cancel()


async def run(rounds: int, messages: int) -> list[Result]:
    results = []
    for name, factory in (
        ("raw trio TCP (baseline)", raw_tcp),
        ("websockets.trio 17.4", websockets_trio),
        ("trio-websocket 0.12.2", trio_websocket_lib),
    ):
        async with factory(messages) as link:
            results.append(await _measure(name, link, rounds, messages))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3000, help="echo round trips (default 3000)")
    parser.add_argument("--messages", type=int, default=20000, help="pipelined 16 KiB messages")
    args = parser.parse_args()
    results = trio.run(run, args.rounds, args.messages)
    base = results[0]
    print(
        f"{'transport':26} {'p50 us':>8} {'p99 us':>8} {'msg/s':>9} {'MiB/s':>8}"
        "  vs baseline (rtt p50, msg/s)"
    )
    for r in results:
        print(
            f"{r.name:26} {r.p50_us:8.0f} {r.p99_us:8.0f} {r.msgs_per_s:9.0f} {r.mib_per_s:8.0f}"
            f"  x{r.p50_us / base.p50_us:.2f}, x{r.msgs_per_s / base.msgs_per_s:.2f}"
        )


if __name__ == "__main__":
    main()
