"""The load generator's lean HTTP/1.1 client (edgetds/loadtest/_http.py) against a real server on
127.0.0.1 that answers with scripted bytes: keep-alive reuse, a server that closed the idle
connection, a response cut short, a non-200 answer."""

from __future__ import annotations

import random
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial

import h11
import pytest
import trio
import trustme

from edgetds.loadtest import TokenSource, parse_scenario
from edgetds.loadtest._http import HttpConnection, ResponseInvalid, ResponseTruncated
from edgetds.loadtest.targets import HttpTarget

BODY = b'{"columns":[{"name":"n","type":"int"}]}\n[1]\n[2]\n{"done":{"rows":2}}\n'


def chunked(body: bytes, pieces: int = 3) -> bytes:
    step = max(1, len(body) // pieces)
    out = b""
    for i in range(0, len(body), step):
        part = body[i : i + step]
        out += b"%x\r\n%s\r\n" % (len(part), part)
    return b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + out + b"0\r\n\r\n"


async def read_request(stream: trio.abc.Stream, buffer: bytearray) -> bytes | None:
    """One request (head + Content-Length body) off ``stream``; None at EOF."""
    while b"\r\n\r\n" not in buffer:
        data = await stream.receive_some(65536)
        if not data:
            return None
        buffer += data
    head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(rest) < length:
        rest += await stream.receive_some(65536)
    buffer[:] = rest[length:]
    return head + b"\r\n\r\n" + rest[:length]


@asynccontextmanager
async def scripted_server(
    answer: Callable[[int, int], tuple[bytes, bool]], *, tls: ssl.SSLContext | None = None
) -> AsyncIterator[tuple[str, list[bytes], list[int]]]:
    """A server whose ``answer(connection number, request number on it)`` gives the bytes to send
    and whether to close afterwards (over TLS with ``tls``). Yields (base URL, requests seen,
    connections accepted)."""
    requests: list[bytes] = []
    accepted: list[int] = []

    async def handle(plain: trio.SocketStream) -> None:
        stream: trio.abc.Stream = plain
        if tls is not None:
            stream = trio.SSLStream(plain, tls, server_side=True)
        accepted.append(len(accepted))
        number = len(accepted) - 1
        buffer = bytearray()
        index = 0
        async with stream:
            while (request := await read_request(stream, buffer)) is not None:
                requests.append(request)
                data, close = answer(number, index)
                index += 1
                await stream.send_all(data)
                if close:
                    return

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        yield f"{'https' if tls else 'http'}://127.0.0.1:{port}", requests, accepted
        nursery.cancel_scope.cancel()


async def test_keep_alive_one_connection_many_requests() -> None:
    with trio.fail_after(10):
        async with scripted_server(lambda c, r: (chunked(BODY), False)) as (url, seen, accepted):
            conn = HttpConnection(url)
            for _ in range(3):
                chunks: list[bytes] = []
                status, other = await conn.post(
                    "/v1/q", [(b"authorization", b"Bearer t")], b'{"a":1}', chunks.append
                )
                assert (status, other) == (200, b"")
                assert b"".join(chunks) == BODY
            await conn.aclose()
    assert accepted == [0]
    assert len(seen) == 3
    assert seen[0].startswith(b"POST /v1/q HTTP/1.1\r\n")
    assert b"authorization: Bearer t\r\n" in seen[0]
    assert seen[0].endswith(b'\r\n\r\n{"a":1}')


def h11_request_bytes(
    authority: bytes, path: bytes, headers: list[tuple[bytes, bytes]], body: bytes
) -> bytes:
    """What a fresh h11 client connection writes for this POST (head built and validated anew)."""
    conn = h11.Connection(h11.CLIENT)
    head = [(b"host", authority), (b"content-length", str(len(body)).encode()), *headers]
    out = conn.send(h11.Request(method=b"POST", target=path, headers=head)) or b""
    out += conn.send(h11.Data(data=body)) or b""
    return out + (conn.send(h11.EndOfMessage()) or b"")


async def test_reused_request_heads_are_the_bytes_h11_writes() -> None:
    # The client builds a request head once per (path, headers, body length) and sends it again:
    # every request must still be byte for byte what h11 writes for a freshly built one.
    bodies = [b'{"n":1}', b'{"n":22}', b'{"n":3}', b'{"n":444}', b'{"n":22}', b"{}"]
    tokens = [
        [(b"authorization", b"Bearer a"), (b"content-type", b"application/json")],
        [(b"authorization", b"Bearer bb"), (b"content-type", b"application/json")],
    ]
    sent = []
    with trio.fail_after(10):
        async with scripted_server(lambda c, r: (chunked(BODY), False)) as (url, seen, accepted):
            conn = HttpConnection(url)
            for i, body in enumerate(bodies * 2):
                headers = tokens[i % 2]
                path = "/v1/q" if i < len(bodies) else "/v1/other"
                assert (await conn.post(path, tuple(headers), body, lambda chunk: None))[0] == 200
                sent.append(
                    h11_request_bytes(url.split("//")[1].encode(), path.encode(), headers, body)
                )
            await conn.aclose()
    assert accepted == [0]
    assert seen == sent


async def test_a_connection_the_server_closed_while_idle_is_replaced() -> None:
    # the server closes after each answer without saying so (as on a keep-alive timeout)
    with trio.fail_after(10):
        async with scripted_server(lambda c, r: (chunked(BODY), True)) as (url, seen, accepted):
            conn = HttpConnection(url)
            for _ in range(2):
                chunks: list[bytes] = []
                assert (await conn.post("/q", [], b"{}", chunks.append))[0] == 200
                assert b"".join(chunks) == BODY
                await trio.testing.wait_all_tasks_blocked()
            await conn.aclose()
    assert accepted == [0, 1]
    assert len(seen) == 2


async def test_a_new_connection_closed_without_an_answer_is_no_retry() -> None:
    with trio.fail_after(10):
        async with scripted_server(lambda c, r: (b"", True)) as (url, seen, accepted):
            conn = HttpConnection(url)
            with pytest.raises(ResponseTruncated, match="without a response"):
                await conn.post("/q", [], b"{}", lambda chunk: None)
    assert accepted == [0]
    assert len(seen) == 1


async def test_the_retry_closed_without_an_answer_is_a_truncated_response() -> None:
    # the first connection answers once and closes while idle; the retry's new one answers nothing
    def answer(connection: int, request: int) -> tuple[bytes, bool]:
        return (chunked(BODY) if connection == 0 else b""), True

    with trio.fail_after(10):
        async with scripted_server(answer) as (url, seen, accepted):
            conn = HttpConnection(url)
            assert (await conn.post("/q", [], b"{}", lambda chunk: None))[0] == 200
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(ResponseTruncated, match="without a response"):
                await conn.post("/q", [], b"{}", lambda chunk: None)
    assert accepted == [0, 1]  # one retry, no more
    assert len(seen) == 2


def target_for(url: str) -> tuple[HttpTarget, object]:
    sc = parse_scenario(
        {
            "name": "t",
            "seed": 1,
            "load": {"concurrency": 1, "count": 1},
            "queries": [{"name": "one", "sql": "SELECT 1"}],
        }
    )
    return HttpTarget(url, "demo", TokenSource(["tok"])), sc.queries[0]


async def test_target_counts_rows_and_maps_failures() -> None:
    cut = chunked(BODY)[:-20]  # the server goes away mid-body
    refused = (
        b"HTTP/1.1 403 Forbidden\r\ncontent-type: application/json\r\ncontent-length: 58\r\n\r\n"
        b'{"error":{"code":"policy.denied","message":"not allowed"}}'
    )
    script = {0: (chunked(BODY), False), 1: (refused, False), 2: (cut, True)}
    with trio.fail_after(10):
        async with scripted_server(lambda c, r: script[r]) as (url, seen, _):
            target, query = target_for(url)
            rng = random.Random(1)
            ok = await target(0, 0, query, rng)  # type: ignore[arg-type]
            denied = await target(0, 0, query, rng)  # type: ignore[arg-type]
            truncated = await target(0, 0, query, rng)  # type: ignore[arg-type]
            await target.aclose()
    assert (ok.code, ok.rows, ok.nbytes) == (None, 2, len(BODY))
    assert (denied.code, denied.message) == ("policy.denied", "not allowed")
    assert truncated.code == "truncated"
    assert seen[0].startswith(b"POST /v1/tunnels/demo/query HTTP/1.1\r\n")
    assert b"authorization: Bearer tok\r\n" in seen[0]


OK_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: application/x-ndjson\r\n"


@pytest.mark.parametrize(
    ("name", "response", "reuses"),
    [
        ("content-length", OK_HEAD + b"content-length: %d\r\n\r\n%s" % (len(BODY), BODY), True),
        ("chunked", chunked(BODY, pieces=7), True),
        ("chunked, one byte a chunk", chunked(BODY, pieces=len(BODY)), True),
        ("interim 100 first", b"HTTP/1.1 100 Continue\r\n\r\n" + chunked(BODY), True),
        (
            "connection: close",
            OK_HEAD + b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(BODY), BODY),
            False,
        ),
        (
            "HTTP/1.0",
            b"HTTP/1.0 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(BODY), BODY),
            False,
        ),
        ("ended by the close", OK_HEAD + b"\r\n" + BODY, False),
        ("bytes after the response", chunked(BODY) + b"HTTP/1.1 200 OK\r\n", False),
        ("garbage after the response", chunked(BODY) + b"\x00\x01 nonsense\r\n\r\n", False),
    ],
)
async def test_response_framings(name: str, response: bytes, reuses: bool) -> None:
    # every way a 200's body can be framed gives the same body; a response after which the
    # connection cannot carry another one closes it (the second request opens a new one), though
    # the server keeps it open (it closes only where the close ends the body)
    close = name == "ended by the close"
    with trio.fail_after(10):
        async with scripted_server(lambda c, r: (response, close)) as (url, seen, accepted):
            conn = HttpConnection(url)
            for _ in range(2):
                chunks: list[bytes] = []
                assert await conn.post("/q", [], b"{}", chunks.append) == (200, b""), name
                assert b"".join(chunks) == BODY, name
            await conn.aclose()
    assert accepted == ([0] if reuses else [0, 1]), name
    assert len(seen) == 2


async def test_non_200_bodies_and_no_body() -> None:
    script = {
        0: b"HTTP/1.1 503 Busy\r\ncontent-length: 4\r\n\r\nbusy",
        1: b"HTTP/1.1 401 No\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        2: b"HTTP/1.1 204 No Content\r\n\r\n",
    }
    with trio.fail_after(10):
        async with scripted_server(lambda c, r: (script[r], False)) as (url, _, accepted):
            conn = HttpConnection(url)
            got = [await conn.post("/q", [], b"{}", lambda chunk: None) for _ in range(3)]
            await conn.aclose()
    assert got == [(503, b"busy"), (401, b"abcde"), (204, b"")]
    assert accepted == [0]


@pytest.mark.parametrize(
    ("response", "error", "match"),
    [
        (b"hello\r\n\r\n", ResponseInvalid, "malformed HTTP response"),
        (b"HTTP/1.1 2000 OK\r\n\r\n", ResponseInvalid, "malformed HTTP response"),
        (b"HTTP/1.1 200 OK\r\nbad header\r\n\r\n", ResponseInvalid, "malformed HTTP response"),
        (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
            ResponseInvalid,
            "malformed HTTP response",
        ),
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\nab",
            ResponseInvalid,
            "malformed HTTP response",
        ),
        (
            b"HTTP/1.1 101 Switching Protocols\r\nupgrade: x\r\nconnection: upgrade\r\n\r\n",
            ResponseInvalid,
            "switched protocols",
        ),
        (b"HTTP/1.1 200 OK\r\nx: " + b"a" * 40_000, ResponseInvalid, "no end of the head"),
        (b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n" + BODY, ResponseTruncated, "mid-"),
        (chunked(BODY)[:-5], ResponseTruncated, "mid-response"),
        (b"HTTP/1.1 200 OK\r\ncontent-", ResponseTruncated, "mid-response"),
    ],
)
async def test_a_malformed_or_cut_response_is_an_error_not_a_hang(
    response: bytes, error: type[Exception], match: str
) -> None:
    # the server sends these bytes and closes: a clear error, and the connection is not reused
    with trio.fail_after(10):
        async with scripted_server(lambda c, r: (response, True)) as (url, _, accepted):
            conn = HttpConnection(url)
            chunks: list[bytes] = []
            with pytest.raises(error, match=match):
                await conn.post("/q", [], b"{}", chunks.append)
            assert not conn.connected
    assert accepted == [0]


async def test_a_malformed_response_is_reported_as_such() -> None:
    with trio.fail_after(10):
        async with scripted_server(lambda c, r: (b"SSH-2.0-OpenSSH\r\n", True)) as (url, _, _):
            target, query = target_for(url)
            outcome = await target(0, 0, query, random.Random(1))  # type: ignore[arg-type]
            await target.aclose()
    assert outcome.code == "truncated"
    assert outcome.message is not None
    assert outcome.message.startswith("malformed HTTP response")


async def test_https_keep_alive_and_framings() -> None:
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    script = {0: chunked(BODY), 1: OK_HEAD + b"content-length: %d\r\n\r\n%s" % (len(BODY), BODY)}
    with trio.fail_after(10):
        async with scripted_server(lambda c, r: (script[r % 2], False), tls=server_ctx) as (
            url,
            seen,
            accepted,
        ):
            conn = HttpConnection(url, tls=client_ctx)
            for _ in range(3):
                chunks: list[bytes] = []
                assert await conn.post("/q", [], b"{}", chunks.append) == (200, b"")
                assert b"".join(chunks) == BODY
            await conn.aclose()
    assert accepted == [0]
    assert len(seen) == 3


async def test_a_body_larger_than_the_socket_buffer_is_sent_whole() -> None:
    body = bytes(range(256)) * (32 * 1024)  # 8 MiB: the send waits for the server to read
    with trio.fail_after(20):
        async with scripted_server(lambda c, r: (chunked(BODY), False)) as (url, seen, _):
            conn = HttpConnection(url)
            assert (await conn.post("/q", [], body, lambda chunk: None))[0] == 200
            await conn.aclose()
    assert seen[0].endswith(b"\r\n\r\n" + body)


async def test_a_cancelled_request_closes_its_connection() -> None:
    # the first request gets no answer: the caller gives up, the next one opens a new connection
    def answer(connection: int, request: int) -> tuple[bytes, bool]:
        return (b"" if connection == 0 else chunked(BODY)), False

    with trio.fail_after(10):
        async with scripted_server(answer) as (url, seen, accepted):
            conn = HttpConnection(url)
            with trio.move_on_after(0.2) as scope:
                await conn.post("/q", [], b"{}", lambda chunk: None)
            assert scope.cancelled_caught
            assert not conn.connected
            assert (await conn.post("/q", [], b"{}", lambda chunk: None))[0] == 200
            await conn.aclose()
    assert accepted == [0, 1]
    assert len(seen) == 2


async def test_a_connection_reset_while_idle_is_replaced() -> None:
    # the server resets the connection (RST: SO_LINGER 0) after its answer: the next request on
    # it fails in send or recv with ECONNRESET/EPIPE and is sent again on a new connection
    accepted: list[int] = []

    async def handle(stream: trio.SocketStream) -> None:
        accepted.append(len(accepted))
        buffer = bytearray()
        if await read_request(stream, buffer) is not None:
            await stream.send_all(chunked(BODY))
        stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await stream.aclose()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
            url = f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}"
            conn = HttpConnection(url)
            for _ in range(3):
                assert (await conn.post("/q", [], b"{}", lambda chunk: None))[0] == 200
                await trio.testing.wait_all_tasks_blocked()
            await conn.aclose()
            nursery.cancel_scope.cancel()
    assert accepted == [0, 1, 2]
