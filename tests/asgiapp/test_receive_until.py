"""asgiapp.server's `RECEIVE_UNTIL` extension on real sockets (127.0.0.1), under trio's MockClock
(autojump) where a deadline is involved: ``receive()`` with one deadline, in the server's own
cancel scope, and no scope at all while the message is already read.

The app reads its request with ``until(deadline, on_wait)`` and notes what it saw (a line per
message: its type, ``more_body`` and body length, or ``late`` for None; how many scopes
``on_wait`` was handed; then what the path asks for), which each test reads once it finished.
"""

from __future__ import annotations

import functools
import math
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import trio
import trio.testing

from asgiapp.server import RECEIVE_UNTIL, ServerConfig, serve

#: the deadline the app gives `until`, in seconds from its first call
DEADLINE_S = 10.0


class Seen:
    """What the app noted, and whether it finished."""

    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self.finished = trio.Event()

    async def wait(self) -> list[bytes]:
        with trio.fail_after(60):
            await self.finished.wait()
        return self.lines


async def app(seen: Seen, scope: dict[str, Any], receive: Any, send: Any) -> None:
    try:
        await _app(seen.lines, scope, send)
    finally:
        seen.finished.set()


async def _app(lines: list[bytes], scope: dict[str, Any], send: Any) -> None:
    until = scope["extensions"][RECEIVE_UNTIL]
    deadline = trio.current_time() + DEADLINE_S
    scopes: list[trio.CancelScope] = []
    # the body
    while True:
        message = await until(deadline, scopes.append)
        if message is None:
            lines.append(b"late at %d" % round(trio.current_time() - deadline + DEADLINE_S))
            break
        lines.append(
            b"%s %d %d"
            % (message["type"].encode(), message.get("more_body", False), len(message["body"]))
        )
        if not message.get("more_body", False):
            break
    lines.append(b"waits %d" % len(scopes))
    path = scope["path"]
    if path == "/wake":  # the body was read: another task ends the wait for the disconnect
        async with trio.open_nursery() as nursery:

            def wake(waited: trio.CancelScope) -> None:
                scopes.append(waited)
                nursery.start_soon(_cancel, waited)

            message = await until(math.inf, wake)
        lines.append(b"woken %s" % (b"late" if message is None else message["type"].encode()))
    elif path == "/after":  # wait for the client until the deadline
        message = await until(deadline, scopes.append)
        lines.append(
            b"after %s at %d"
            % (
                b"late" if message is None else message["type"].encode(),
                round(trio.current_time() - deadline + DEADLINE_S),
            )
        )
    elif path == "/answered":  # a watcher waits; this task completes the response
        async with trio.open_nursery() as nursery:
            watched: list[bytes] = []

            async def watch() -> None:
                message = await until(math.inf, None)
                watched.append(b"late" if message is None else message["type"].encode())

            nursery.start_soon(watch)
            await trio.testing.wait_all_tasks_blocked()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"\n".join(lines)})
        lines.append(b"answered " + b"".join(watched))
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"\n".join(lines)})


async def _cancel(scope: trio.CancelScope) -> None:
    scope.cancel()


@asynccontextmanager
async def served(app: Any) -> AsyncIterator[trio.SocketStream]:
    """`app` served on 127.0.0.1 (idle and head limits far off); yields a connection to it."""
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        config = ServerConfig(keep_alive_timeout_s=100, head_timeout_s=100)
        urls = await nursery.start(
            functools.partial(serve, app, config, shutdown_trigger=stop.wait)
        )
        host, _, port = urls[0].removeprefix("http://").rpartition(":")
        stream = await trio.open_tcp_stream(host, int(port))
        try:
            yield stream
        finally:
            await trio.aclose_forcefully(stream)
            stop.set()


def serving(seen: Seen) -> AbstractAsyncContextManager[trio.SocketStream]:
    return served(functools.partial(app, seen))


def post(path: str, length: int) -> bytes:
    return b"POST %s HTTP/1.1\r\nhost: t\r\ncontent-length: %d\r\n\r\n" % (path.encode(), length)


async def test_a_body_read_with_its_head_waits_in_no_scope() -> None:
    seen = Seen()
    async with serving(seen) as stream:
        await stream.send_all(post("/", 5) + b"hello")
        assert await seen.wait() == [b"http.request 0 5", b"waits 0"]


async def test_one_deadline_for_the_whole_body(autojump_clock: trio.testing.MockClock) -> None:
    """Each part comes 6 s after the last (less than the deadline), and the body is late all the
    same at 10 s; each wait for the socket ran in a scope of the server's, handed to on_wait."""
    seen = Seen()
    async with serving(seen) as stream:
        await stream.send_all(post("/", 30) + b"a" * 10)
        await trio.sleep(6)
        await stream.send_all(b"b" * 10)
        await trio.sleep(6)
        await stream.send_all(b"c" * 10)
        lines = await seen.wait()
    assert lines == [b"http.request 1 10", b"http.request 1 10", b"late at 10", b"waits 2"]


async def test_a_body_in_time_arrives_whole(autojump_clock: trio.testing.MockClock) -> None:
    seen = Seen()
    async with serving(seen) as stream:
        await stream.send_all(post("/", 20) + b"a" * 10)
        await trio.sleep(9)
        await stream.send_all(b"b" * 10)
        lines = await seen.wait()
    assert lines == [b"http.request 1 10", b"http.request 0 10", b"waits 1"]


async def test_after_the_body_the_wait_ends_at_the_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    seen = Seen()
    async with serving(seen) as stream:
        await stream.send_all(post("/after", 2) + b"hi")
        lines = await seen.wait()
    assert lines == [b"http.request 0 2", b"waits 0", b"after late at 10"]


async def test_after_the_body_a_client_that_leaves_is_a_disconnect(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The client half-closes its side 3 s in: the wait ends then, with http.disconnect."""
    seen = Seen()
    async with serving(seen) as stream:
        await stream.send_all(post("/after", 2) + b"hi")
        await trio.sleep(3)
        await stream.send_eof()
        lines = await seen.wait()
    assert lines == [b"http.request 0 2", b"waits 0", b"after http.disconnect at 3"]


async def test_cancelling_the_scope_on_wait_got_ends_the_wait_with_none() -> None:
    seen = Seen()
    async with serving(seen) as stream:
        await stream.send_all(post("/wake", 2) + b"hi")
        lines = await seen.wait()
    assert lines == [b"http.request 0 2", b"waits 0", b"woken late"]


async def test_a_wait_the_complete_response_ends_is_a_disconnect() -> None:
    """As with ``receive()``: once another task completes the response, a task waiting in
    ``until`` gets http.disconnect (not None), though the server cancelled its scope."""
    seen = Seen()
    async with serving(seen) as stream:
        await stream.send_all(post("/answered", 2) + b"hi")
        lines = await seen.wait()
    assert lines == [b"http.request 0 2", b"waits 0", b"answered http.disconnect"]
