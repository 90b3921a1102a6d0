"""tests/support/ports.py: a port named before its server starts stays ours until the server
binds it, however many other processes pick ports meanwhile."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest
import trio

from tests.support.ports import closed_port, reserved_port

#: another process binding the port without SO_REUSEADDR (what a port picked by bind(0) and
#: closed again cannot prevent)
TAKE = "import socket, sys; s = socket.socket(); s.bind(('127.0.0.1', int(sys.argv[1])))"


def test_another_process_cannot_take_a_reserved_port() -> None:
    port = reserved_port()
    taken = subprocess.run([sys.executable, "-c", TAKE, str(port)], capture_output=True)
    assert taken.returncode != 0, "another process bound the reserved port"
    assert b"Address already in use" in taken.stderr


def test_bind_zero_never_hands_out_a_reserved_port() -> None:
    port = reserved_port()
    picked = set()
    for _ in range(2000):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            picked.add(s.getsockname()[1])
    assert port not in picked


async def test_a_server_binds_a_reserved_port_and_binds_it_again_after_a_restart() -> None:
    port = reserved_port()
    for _ in range(2):  # a restart on the same port (TIME_WAIT connections included)
        listeners = await trio.open_tcp_listeners(port, host="127.0.0.1")  # SO_REUSEADDR
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.serve_listeners, _echo, listeners)
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                await stream.send_all(b"ping")
                assert await stream.receive_some(4) == b"ping"
            nursery.cancel_scope.cancel()


async def test_nothing_answers_on_a_closed_port() -> None:
    with pytest.raises(OSError, match="all attempts to connect"):
        await trio.open_tcp_stream("127.0.0.1", closed_port())


async def _echo(stream: trio.SocketStream) -> None:
    async with stream:
        await stream.send_all(await stream.receive_some(4))
