"""A tiny real HTTP CONNECT proxy (a test peer, like a corporate egress proxy) on 127.0.0.1.

    async with open_connect_proxy(username="u", password="p") as proxy:
        proxy.url                 # "http://127.0.0.1:PORT" (add credentials yourself)
        proxy.tunnels             # CONNECT requests granted, as (host, port) pairs
        proxy.refused             # requests answered 407 (wrong/missing Basic credentials)

It accepts only CONNECT, checks ``Proxy-Authorization: Basic`` when credentials are set (407 with
``Proxy-Authenticate`` otherwise), dials the target and copies bytes both ways until either side
closes. No HTTP library on purpose: a proxy sees the request head as bytes, and so do we.
"""

from __future__ import annotations

import base64
import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import trio

__all__ = ["ConnectProxy", "open_connect_proxy"]

_MAX_HEAD = 16 * 1024


@dataclass
class ConnectProxy:
    url: str
    username: str | None = None
    password: str | None = None
    tunnels: list[tuple[str, int]] = field(default_factory=list)
    refused: int = 0

    def _authorized(self, headers: dict[str, str]) -> bool:
        if self.username is None:
            return True
        value = headers.get("proxy-authorization", "")
        scheme, _, encoded = value.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            decoded = base64.b64decode(encoded, validate=True).decode()
        except (ValueError, UnicodeDecodeError):
            return False
        return decoded == f"{self.username}:{self.password}"

    async def handle(self, client: trio.SocketStream) -> None:
        async with client:
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = await client.receive_some(4096)
                if not chunk or len(head) > _MAX_HEAD:
                    return
                head += chunk
            head, _, rest = head.partition(b"\r\n\r\n")
            request_line, *lines = head.decode("latin-1").split("\r\n")
            headers = {}
            for line in lines:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            method, target, _version = request_line.split(" ", 2)
            if method != "CONNECT":
                await client.send_all(
                    b"HTTP/1.1 405 Method Not Allowed\r\ncontent-length: 0\r\n\r\n"
                )
                return
            if not self._authorized(headers):
                self.refused += 1
                await client.send_all(
                    b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                    b'Proxy-Authenticate: Basic realm="test"\r\ncontent-length: 0\r\n\r\n'
                )
                return
            host, _, port = target.rpartition(":")
            host = host.strip("[]")
            try:
                upstream = await trio.open_tcp_stream(host, int(port))
            except OSError:
                await client.send_all(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n")
                return
            self.tunnels.append((host, int(port)))
            async with upstream:
                await client.send_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
                if rest:
                    await upstream.send_all(rest)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_pipe, client, upstream, nursery.cancel_scope)
                    nursery.start_soon(_pipe, upstream, client, nursery.cancel_scope)


async def _pipe(src: trio.abc.Stream, dst: trio.abc.Stream, scope: trio.CancelScope) -> None:
    try:
        while data := await src.receive_some(65536):
            await dst.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    scope.cancel()  # one side closed: end the tunnel


@asynccontextmanager
async def open_connect_proxy(
    *, username: str | None = None, password: str | None = None, host: str = "127.0.0.1"
) -> AsyncIterator[ConnectProxy]:
    """Serve the proxy on host, port 0, until the block exits."""
    proxy = ConnectProxy(url="", username=username, password=password)
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, proxy.handle, 0, host=host)
        )
        bound_host, port = listeners[0].socket.getsockname()[:2]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        proxy.url = f"http://{shown}:{port}"
        try:
            yield proxy
        finally:
            nursery.cancel_scope.cancel()
