"""`relay.http.receive_until` without the server's extension (the relay's app under another ASGI
server): ``receive()`` in a cancel scope with the deadline, as the server's own extension keeps it
(tests/asgiapp/test_receive_until.py), under trio's MockClock (autojump)."""

from __future__ import annotations

from typing import Any

import trio
import trio.testing

from relay.http import receive_until

_REQUEST = {"type": "http.request", "body": b"{}", "more_body": False}


async def test_a_message_that_comes_in_time_is_returned(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def receive() -> dict[str, Any]:
        await trio.sleep(9)
        return _REQUEST

    until = receive_until(receive, {"type": "http", "extensions": {}})
    assert await until(trio.current_time() + 10, None) == _REQUEST


async def test_none_at_the_deadline(autojump_clock: trio.testing.MockClock) -> None:
    async def receive() -> dict[str, Any]:
        await trio.sleep(11)
        return _REQUEST

    until = receive_until(receive)
    started = trio.current_time()
    assert await until(started + 10, None) is None
    assert trio.current_time() - started == 10


async def test_cancelling_the_scope_on_wait_got_returns_none() -> None:
    scopes: list[trio.CancelScope] = []

    async def receive() -> dict[str, Any]:
        scopes[0].cancel()
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    until = receive_until(receive)
    assert await until(trio.current_time() + 10, scopes.append) is None
    assert len(scopes) == 1
