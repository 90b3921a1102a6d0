"""asgiapp.server on real sockets (127.0.0.1): the HTTP/1.1 and WebSocket edge cases, raw bytes.

The app under test records what it receives and answers by path; the client side is a raw TCP
stream (h11 parses what comes back, wsproto speaks the WebSocket side).
"""

from __future__ import annotations

import functools
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import h11
import pytest
import trio
import trio.testing
import trustme
import wsproto
import wsproto.events as ws_events

from asgiapp.server import ServerConfig, serve


@dataclass
class Recorder:
    """What the app saw: scopes, and each request's received messages, in order."""

    scopes: list[dict[str, Any]] = field(default_factory=list)
    received: list[list[dict[str, Any]]] = field(default_factory=list)
    #: every message the app receives, as it gets it (a test waits on these)
    events: trio.MemorySendChannel[dict[str, Any]] | None = None
    #: released by the test: /wait answers once set
    release: trio.Event = field(default_factory=trio.Event)
    #: /hold waits in receive() (for http.disconnect) until the test cancels this
    hold: trio.CancelScope = field(default_factory=trio.CancelScope)


def make_app(rec: Recorder) -> Any:
    async def note(message: dict[str, Any]) -> None:
        rec.received[-1].append(dict(message))
        if rec.events is not None:
            await rec.events.send(dict(message))

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        rec.scopes.append(scope)
        rec.received.append([])
        path = scope["path"]
        if scope["type"] == "websocket":
            await websocket(scope, receive, send, note)
            return
        if path == "/fail-early":
            raise RuntimeError("fails before its response")
        if path == "/nothing":
            return
        if path == "/noread":  # answers without reading the body
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        body = b""
        while True:
            message = await receive()
            await note(message)
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if path == "/wait":
            await rec.release.wait()
        if path == "/hold":  # as the relay does while its query runs
            with rec.hold:
                await note(await receive())
        headers = [(b"content-type", b"text/plain")]
        if path == "/stream":
            # a streamed response, then wait for the client to go away
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": b"part", "more_body": True})
            await note(await receive())
            return
        if path == "/chunks":
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            for part in (b"a", b"", b"bc"):
                await send({"type": "http.response.body", "body": part, "more_body": True})
            await send({"type": "http.response.body", "body": b"d"})
            return
        if path == "/headers":  # names in any case, values as bytes or bytearray
            given = [
                (b"Content-Type", b"text/plain"),
                (bytearray(b"X-A"), bytearray(b"1")),
                (b"x-b", b"two words"),
                (b"content-length", b"2"),
            ]
            await send({"type": "http.response.start", "status": 200, "headers": given})
            await send({"type": "http.response.body", "body": b"ok"})
            return
        if path == "/badheader":
            bad = [(b"x-injected", b"v\r\nset-cookie: a=b")]
            await send({"type": "http.response.start", "status": 200, "headers": bad})
            await send({"type": "http.response.body", "body": b""})
            return
        if path == "/fail-late":
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": b"part", "more_body": True})
            raise RuntimeError("fails after its response started")
        answer = b"%s %s %d" % (scope["method"].encode(), scope["raw_path"], len(body))
        headers.append((b"content-length", str(len(answer)).encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": answer})
        if path == "/after":  # after a complete response, receive() reports http.disconnect
            await note(await receive())

    return app


async def websocket(scope: dict[str, Any], receive: Any, send: Any, note: Any) -> None:
    await note(await receive())  # websocket.connect
    if scope["path"] == "/deny":
        body = b'{"error":"no"}'
        await send(
            {
                "type": "websocket.http.response.start",
                "status": 403,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "websocket.http.response.body", "body": body})
        return
    await send({"type": "websocket.accept", "subprotocol": "edge.v1"})
    while True:
        message = await receive()
        await note(message)
        if message["type"] == "websocket.disconnect":
            return
        if message.get("text") == "close":
            await send({"type": "websocket.close", "code": 4000, "reason": "asked"})
            return
        await send({"type": "websocket.send", **{k: message[k] for k in ("bytes", "text")}})


#: client streams of the running test, closed when its server stops
_OPEN: list[trio.SocketStream] = []


async def tcp(host: str, port: int) -> trio.SocketStream:
    stream = await trio.open_tcp_stream(host, port)
    _OPEN.append(stream)
    return stream


@asynccontextmanager
async def running(
    rec: Recorder, config: ServerConfig | None = None
) -> AsyncIterator[tuple[str, int, trio.Event]]:
    """Serve the recording app; yields (host, port, the shutdown trigger)."""
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        urls = await nursery.start(
            functools.partial(
                serve, make_app(rec), config or ServerConfig(), shutdown_trigger=stop.wait
            )
        )
        host, _, port = urls[0].rpartition(":")
        try:
            yield host.split("//")[1], int(port), stop
        finally:
            while _OPEN:
                await trio.aclose_forcefully(_OPEN.pop())
            nursery.cancel_scope.cancel()


async def read_all(stream: trio.abc.Stream) -> bytes:
    """Everything until the server closes the connection."""
    data = b""
    while chunk := await stream.receive_some(65536):
        data += chunk
    return data


async def responses(stream: trio.abc.Stream, n: int) -> list[tuple[h11.Response, bytes]]:
    """The next `n` complete responses on the connection."""
    client = h11.Connection(h11.CLIENT)
    out: list[tuple[h11.Response, bytes]] = []
    # h11 wants a request of its own before it reads a response; tell it one was sent per answer
    for _ in range(n):
        client.send(h11.Request(method="GET", target="/", headers=[("host", "x")]))
        client.send(h11.EndOfMessage())
        head: h11.Response | None = None
        body = b""
        while True:
            event = client.next_event()
            if event is h11.NEED_DATA:
                client.receive_data(await stream.receive_some(65536))
            elif isinstance(event, h11.Response):
                head = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                assert head is not None
                out.append((head, body))
                break
        if client.our_state is h11.MUST_CLOSE:
            break
        client.start_next_cycle()
    return out


def get(path: str, extra: bytes = b"") -> bytes:
    return b"GET %s HTTP/1.1\r\nhost: t\r\n%s\r\n" % (path.encode(), extra)


async def test_scope_keep_alive_and_percent_decoding() -> None:
    rec = Recorder()
    async with running(rec) as (host, port, _):
        stream = await tcp(host, port)
        await stream.send_all(get("/a%20b%2Fc?x=1&y=%20", b"X-Token: AbC\r\n"))
        [(head, body)] = await responses(stream, 1)
        assert head.status_code == 200
        assert body == b"GET /a%20b%2Fc 0"
        assert dict(head.headers)[b"content-length"] == b"16"
        assert b"date" in dict(head.headers)
        await stream.send_all(get("/second"))  # same connection: keep-alive
        [(_, body)] = await responses(stream, 1)
        assert body == b"GET /second 0"
        await stream.aclose()
    scope = rec.scopes[0]
    assert scope["type"] == "http"
    assert scope["asgi"]["version"] == "3.0"
    assert scope["http_version"] == "1.1"
    assert scope["scheme"] == "http"
    assert scope["path"] == "/a b/c"
    assert scope["raw_path"] == b"/a%20b%2Fc"
    assert scope["query_string"] == b"x=1&y=%20"
    assert scope["root_path"] == ""
    assert (b"x-token", b"AbC") in scope["headers"]
    assert scope["client"][0] == "127.0.0.1"
    assert scope["server"] == ("127.0.0.1", port)
    assert len(rec.scopes) == 2


async def test_pipelined_requests_are_answered_in_order() -> None:
    rec = Recorder()
    async with running(rec) as (host, port, _):
        stream = await tcp(host, port)
        post = b"POST /p2 HTTP/1.1\r\nhost: t\r\ncontent-length: 5\r\n\r\nhello"
        await stream.send_all(get("/p1") + post + get("/p3") + get("/p4"))
        answers = await responses(stream, 4)
        await stream.aclose()
    assert [body for _, body in answers] == [
        b"GET /p1 0",
        b"POST /p2 5",
        b"GET /p3 0",
        b"GET /p4 0",
    ]


async def test_a_complete_response_ends_the_wait_for_disconnect() -> None:
    """/after waits in receive() after its response: http.disconnect at once, the connection
    goes on."""
    rec = Recorder()
    async with running(rec) as (host, port, _):
        stream = await tcp(host, port)
        await stream.send_all(get("/after") + get("/next"))
        answers = await responses(stream, 2)
    assert [body for _, body in answers] == [b"GET /after 0", b"GET /next 0"]
    assert rec.received[0][-1] == {"type": "http.disconnect"}


async def test_a_request_pipelined_while_the_app_waits_for_disconnect_is_kept() -> None:
    """/hold waits in receive() before answering (the server reads the socket for it): the next
    request's bytes that arrive meanwhile are kept for their turn."""
    rec = Recorder()
    send, receive = trio.open_memory_channel[dict[str, Any]](10)
    rec.events = send
    async with running(rec) as (host, port, _):
        stream = await tcp(host, port)
        await stream.send_all(get("/hold"))
        assert (await receive.receive())["type"] == "http.request"
        await stream.send_all(get("/next"))
        await trio.testing.wait_all_tasks_blocked()  # the server read /next while waiting
        rec.hold.cancel()
        with trio.fail_after(5):
            answers = await responses(stream, 2)
    assert [body for _, body in answers] == [b"GET /hold 0", b"GET /next 0"]


async def test_chunked_body_arrives_in_parts_with_more_body() -> None:
    rec = Recorder()
    send, receive = trio.open_memory_channel[dict[str, Any]](10)
    rec.events = send
    async with running(rec) as (host, port, _):
        stream = await tcp(host, port)
        await stream.send_all(
            b"POST /c HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n"
        )
        first = await receive.receive()
        assert first == {"type": "http.request", "body": b"hello", "more_body": True}
        await stream.send_all(b"6\r\n world\r\n0\r\n\r\n")
        last = await receive.receive()
        assert last == {"type": "http.request", "body": b" world", "more_body": False}
        [(_, body)] = await responses(stream, 1)
        assert body == b"POST /c 11"
        await stream.aclose()


async def test_content_length_body_in_two_writes() -> None:
    rec = Recorder()
    send, receive = trio.open_memory_channel[dict[str, Any]](10)
    rec.events = send
    async with running(rec) as (host, port, _):
        stream = await tcp(host, port)
        await stream.send_all(b"POST /l HTTP/1.1\r\nhost: t\r\ncontent-length: 8\r\n\r\nabc")
        assert await receive.receive() == {
            "type": "http.request",
            "body": b"abc",
            "more_body": True,
        }
        await stream.send_all(b"defgh")
        assert (await receive.receive())["more_body"] is False
        [(_, body)] = await responses(stream, 1)
        assert body == b"POST /l 8"


async def test_expect_100_continue_is_answered_when_the_body_is_read() -> None:
    rec = Recorder()
    async with running(rec) as (host, port, _):
        stream = await tcp(host, port)
        await stream.send_all(
            b"POST /e HTTP/1.1\r\nhost: t\r\ncontent-length: 2\r\nexpect: 100-continue\r\n\r\n"
        )
        assert (await stream.receive_some(1000)).startswith(b"HTTP/1.1 100 ")
        await stream.send_all(b"ok")
        [(_, body)] = await responses(stream, 1)
        assert body == b"POST /e 2"


async def test_an_unread_body_is_discarded_and_the_connection_kept() -> None:
    rec = Recorder()
    async with running(rec) as (host, port, _):
        stream = await tcp(host, port)
        noread = b"POST /noread HTTP/1.1\r\nhost: t\r\ncontent-length: 3000\r\n\r\n" + b"z" * 3000
        await stream.send_all(noread + get("/x"))
        answers = await responses(stream, 2)
        assert [(h.status_code, b) for h, b in answers] == [(204, b""), (200, b"GET /x 0")]


async def test_an_app_that_returns_without_a_response_gives_500() -> None:
    rec = Recorder()
    async with running(rec) as (host, port, _):
        stream = await tcp(host, port)
        await stream.send_all(get("/nothing") + get("/x"))
        answer = await read_all(stream)
    assert answer.startswith(b"HTTP/1.1 500 ")
    assert b"GET /x" not in answer  # closed after the 500


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nhost: t\r\ncontent-length: x\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nhost: t\r\nx-big: " + b"a" * (70 * 1024) + b"\r\n\r\n", 431),
        # what a front end and this server could frame or read differently: refused
        (b"POST / HTTP/1.1\r\nhost: t\r\ncontent-length: 3\r\ncontent-length: 5\r\n\r\nabc", 400),
        (
            b"POST / HTTP/1.1\r\nhost: t\r\ncontent-length: 5\r\n"
            b"transfer-encoding: chunked\r\n\r\n0\r\n\r\n",
            400,
        ),
        (b"POST / HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked, identity\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nhost: t\r\nx: a\r\n content-length: 3\r\n\r\nabc", 400),
        (b"GET / HTTP/1.1\nhost: t\n\n", 400),
        (b"GET / HTTP/1.1\r\nhost: t\r\ncontent-length : 0\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nhost: t\r\nx: a\x00b\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nx: y\r\n\r\n", 400),  # no Host
    ],
)
async def test_a_malformed_or_oversized_head_is_refused_and_closed(raw: bytes, status: int) -> None:
    rec = Recorder()
    async with running(rec) as (host, port, _):
        stream = await tcp(host, port)
        await stream.send_all(raw)
        answer = await read_all(stream)
    assert answer.startswith(b"HTTP/1.1 %d " % status)
    assert b"connection: close" in answer
    assert rec.scopes == []


async def test_a_tls_handshake_at_the_plain_port_is_answered_400_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A TLS client dialling the plain port (wss:// to ws://) sends a ClientHello, which has no
    blank line and waits for an answer: its first byte (0x16) is a control byte no head may hold,
    so the 400 goes out at once (the client reports a TLS error), not after the head's limit."""
    rec = Recorder()
    config = ServerConfig(head_timeout_s=10, keep_alive_timeout_s=30)
    async with running(rec, config) as (host, port, _):
        stream = await tcp(host, port)
        started = trio.current_time()
        await stream.send_all(
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(32, 64))
        )
        with trio.fail_after(60):
            answer = await read_all(stream)
        assert trio.current_time() - started < 10
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert rec.scopes == []


async def test_a_request_after_a_chunked_body_waits_for_its_turn() -> None:
    rec = Recorder()
    async with running(rec) as (host, port, _):
        stream = await tcp(host, port)
        chunked = (
            b"POST /c HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n"
            b"3;ext=1\r\nabc\r\n0\r\ntrailer: dropped\r\n\r\n"
        )
        await stream.send_all(chunked + get("/next"))
        answers = await responses(stream, 2)
    assert [body for _, body in answers] == [b"POST /c 3", b"GET /next 0"]
    assert all(name != b"trailer" for name, _ in rec.scopes[0]["headers"])


async def test_an_upgrade_to_another_protocol_is_served_then_closed() -> None:
    """An h2c upgrade (curl --http2): answered over HTTP/1.1; what follows is not read as HTTP."""
    rec = Recorder()
    async with running(rec) as (host, port, _):
        stream = await tcp(host, port)
        upgrade = b"upgrade: h2c\r\nconnection: Upgrade, HTTP2-Settings\r\nhttp2-settings: AA\r\n"
        await stream.send_all(get("/h2c", upgrade) + get("/never"))
        answer = await read_all(stream)
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert b"connection: close" in answer
    assert answer.endswith(b"GET /h2c 0")
    assert len(rec.scopes) == 1


async def test_a_16_kib_bearer_token_fits() -> None:
    rec = Recorder()
    async with running(rec) as (host, port, _):
        stream = await tcp(host, port)
        await stream.send_all(get("/t", b"authorization: Bearer " + b"t" * 16384 + b"\r\n"))
        [(head, _)] = await responses(stream, 1)
    assert head.status_code == 200


async def test_a_head_that_never_completes_is_cut_off(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rec = Recorder()
    config = ServerConfig(head_timeout_s=10, keep_alive_timeout_s=30)
    async with running(rec, config) as (host, port, _):
        stream = await tcp(host, port)
        started = trio.current_time()
        await stream.send_all(b"GET / HTTP/1.1\r\nhost: t\r\n")  # no blank line, ever
        with trio.fail_after(60):
            assert await read_all(stream) == b""
        assert 10 <= trio.current_time() - started < 30  # the head's limit, not the idle one
    assert rec.scopes == []


async def test_an_idle_keep_alive_connection_is_closed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rec = Recorder()
    async with running(rec, ServerConfig(keep_alive_timeout_s=5)) as (host, port, _):
        stream = await tcp(host, port)
        await stream.send_all(get("/one"))
        await responses(stream, 1)
        idle = trio.current_time()
        with trio.fail_after(60):
            assert await read_all(stream) == b""
        assert 5 <= trio.current_time() - idle < 10


async def test_connection_close_and_head() -> None:
    rec = Recorder()
    async with running(rec) as (host, port, _):
        stream = await tcp(host, port)
        await stream.send_all(b"HEAD /h HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n")
        answer = await read_all(stream)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"content-length: 9" in head  # the GET's length, no body
    assert body == b""


async def test_a_streamed_response_is_chunked_and_keeps_the_connection() -> None:
    rec = Recorder()
    async with running(rec) as (host, port, _):
        stream = await tcp(host, port)
        await stream.send_all(get("/chunks") + get("/after-chunks"))
        [(head, body), (_, second)] = await responses(stream, 2)
    assert dict(head.headers)[b"transfer-encoding"] == b"chunked"
    assert body == b"abcd"
    assert second == b"GET /after-chunks 0"


async def test_http_10_gets_a_body_ended_by_the_close() -> None:
    rec = Recorder()
    async with running(rec) as (host, port, _):
        stream = await tcp(host, port)
        await stream.send_all(b"GET /chunks HTTP/1.0\r\n\r\n")
        answer = await read_all(stream)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"transfer-encoding" not in head
    assert b"connection: close" in head
    assert body == b"abcd"


async def test_a_header_that_would_split_the_response_gives_500() -> None:
    rec = Recorder()
    async with running(rec) as (host, port, _):
        stream = await tcp(host, port)
        await stream.send_all(get("/badheader"))
        answer = await read_all(stream)
    assert answer.startswith(b"HTTP/1.1 500 ")
    assert b"set-cookie" not in answer


async def test_response_header_lines_are_the_same_each_time() -> None:
    """Header names checked once are written the same on later responses; a header that would
    split the response is refused every time."""
    rec = Recorder()
    async with running(rec) as (host, port, _):
        stream = await tcp(host, port)
        heads = []
        for _ in range(3):
            await stream.send_all(get("/headers"))
            head = b""
            while b"\r\n\r\nok" not in head:
                head += await stream.receive_some(65536)
            heads.append(head.partition(b"date: ")[0])
        for _ in range(2):
            bad = await tcp(host, port)
            await bad.send_all(get("/badheader"))
            answer = await read_all(bad)
            assert answer.startswith(b"HTTP/1.1 500 ")
            assert b"set-cookie" not in answer
    assert (
        heads
        == [
            b"HTTP/1.1 200 \r\ncontent-type: text/plain\r\nx-a: 1\r\nx-b: two words\r\n"
            b"content-length: 2\r\n"
        ]
        * 3
    )


async def test_a_client_that_leaves_mid_response_gives_http_disconnect() -> None:
    rec = Recorder()
    send, receive = trio.open_memory_channel[dict[str, Any]](10)
    rec.events = send
    async with running(rec) as (host, port, _):
        stream = await tcp(host, port)
        await stream.send_all(get("/stream"))
        assert (await receive.receive())["type"] == "http.request"
        assert b"part" in await stream.receive_some(65536)
        await stream.aclose()
        with trio.fail_after(5):
            assert await receive.receive() == {"type": "http.disconnect"}


async def test_a_client_that_leaves_while_the_app_waits_gives_http_disconnect() -> None:
    """The relay cancels a query whose client left before any answer: receive() says so."""
    rec = Recorder()

    waiting = trio.Event()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        rec.received.append([await receive()])
        waiting.set()
        rec.received[-1].append(await receive())  # waits: only http.disconnect can come
        rec.release.set()

    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        urls = await nursery.start(
            functools.partial(serve, app, ServerConfig(), shutdown_trigger=stop.wait)
        )
        port = int(urls[0].rpartition(":")[2])
        stream = await tcp("127.0.0.1", port)
        await stream.send_all(get("/q"))
        await waiting.wait()
        await stream.aclose()
        with trio.fail_after(5):
            await rec.release.wait()
        stop.set()
    assert rec.received[0][1] == {"type": "http.disconnect"}


async def test_an_app_failure_gives_500_before_its_response_and_a_close_after() -> None:
    rec = Recorder()
    async with running(rec) as (host, port, _):
        stream = await tcp(host, port)
        await stream.send_all(get("/fail-early"))
        assert (await read_all(stream)).startswith(b"HTTP/1.1 500 ")
        stream = await tcp(host, port)
        await stream.send_all(get("/fail-late"))
        answer = await read_all(stream)
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert b"transfer-encoding: chunked" in answer.lower()
    assert not answer.endswith(b"0\r\n\r\n")  # the chunked body never ended: cut off


# -- WebSocket ----------------------------------------------------------------------------------


async def ws_connect(
    host: str, port: int, path: str = "/ws", protocols: str = "other, edge.v1"
) -> tuple[trio.SocketStream, wsproto.WSConnection, list[ws_events.Event]]:
    stream = await tcp(host, port)
    client = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
    request = ws_events.Request(host="t", target=path, subprotocols=protocols.split(", "))
    await stream.send_all(client.send(request))
    got: list[ws_events.Event] = []
    while not got:
        client.receive_data(await stream.receive_some(65536))
        got = list(client.events())
    return stream, client, got


async def ws_next(stream: trio.SocketStream, client: wsproto.WSConnection) -> ws_events.Event:
    while True:
        for event in client.events():
            return event
        data = await stream.receive_some(65536)
        client.receive_data(data or None)


async def test_websocket_accept_echo_ping_and_clean_close() -> None:
    rec = Recorder()
    async with running(rec) as (host, port, _):
        stream, client, [accepted] = await ws_connect(host, port)
        assert isinstance(accepted, ws_events.AcceptConnection)
        assert accepted.subprotocol == "edge.v1"
        await stream.send_all(client.send(ws_events.BytesMessage(data=b"\x00\x01")))
        echo = await ws_next(stream, client)
        assert isinstance(echo, ws_events.BytesMessage)
        assert echo.data == b"\x00\x01"
        await stream.send_all(client.send(ws_events.TextMessage(data="hi")))
        echo = await ws_next(stream, client)
        assert isinstance(echo, ws_events.TextMessage)
        assert echo.data == "hi"
        await stream.send_all(client.send(ws_events.Ping(payload=b"p")))
        pong = await ws_next(stream, client)
        assert isinstance(pong, ws_events.Pong)
        assert pong.payload == b"p"
        await stream.send_all(client.send(ws_events.CloseConnection(code=1000)))
        closed = await ws_next(stream, client)
        assert isinstance(closed, ws_events.CloseConnection)
        assert closed.code == 1000
        assert await read_all(stream) == b""
    scope = rec.scopes[0]
    assert scope["type"] == "websocket"
    assert scope["scheme"] == "ws"
    assert scope["subprotocols"] == ["other", "edge.v1"]
    assert "websocket.http.response" in scope["extensions"]
    assert rec.received[0][0] == {"type": "websocket.connect"}
    assert rec.received[0][-1] == {"type": "websocket.disconnect", "code": 1000}


async def test_websocket_binary_messages_of_every_length_encoding() -> None:
    # 7-bit, 16-bit and 64-bit payload lengths (RFC 6455 5.2), each at its edges; the echo's
    # bytes on the wire are what wsproto makes of the same message as a server
    sizes = [0, 1, 125, 126, 65535, 65536, 200_000]
    rec = Recorder()
    async with running(rec) as (host, port, _):
        stream, client, _ = await ws_connect(host, port)
        server = wsproto.connection.Connection(wsproto.ConnectionType.SERVER)
        for size in sizes:
            data = bytes(range(256)) * (size // 256) + bytes(size % 256)
            await stream.send_all(client.send(ws_events.BytesMessage(data=data)))
            expected = server.send(ws_events.BytesMessage(data=data))
            wire = b""
            while len(wire) < len(expected):
                wire += await stream.receive_some(len(expected) - len(wire))
            assert wire == expected
            client.receive_data(wire)
            [echo] = client.events()
            assert isinstance(echo, ws_events.BytesMessage)
            assert (echo.data, echo.message_finished) == (data, True)
        await stream.send_all(client.send(ws_events.CloseConnection(code=1000)))
        closed = await ws_next(stream, client)
        assert isinstance(closed, ws_events.CloseConnection)
    assert rec.received[0][-1] == {"type": "websocket.disconnect", "code": 1000}


async def test_websocket_closed_by_the_app() -> None:
    rec = Recorder()
    async with running(rec) as (host, port, _):
        stream, client, _ = await ws_connect(host, port)
        await stream.send_all(client.send(ws_events.TextMessage(data="close")))
        closed = await ws_next(stream, client)
        assert isinstance(closed, ws_events.CloseConnection)
        assert (closed.code, closed.reason) == (4000, "asked")
        await stream.send_all(client.send(closed.response()))
        assert await read_all(stream) == b""


async def test_websocket_denial_is_an_http_response() -> None:
    rec = Recorder()
    async with running(rec) as (host, port, _):
        stream = await tcp(host, port)
        client = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
        await stream.send_all(client.send(ws_events.Request(host="t", target="/deny")))
        answer = await read_all(stream)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 403 ")
    assert b"content-type: application/json" in head
    assert b'{"error":"no"}' in body


async def test_a_websocket_message_over_the_limit_is_refused_with_1009() -> None:
    rec = Recorder()
    config = ServerConfig(websocket_max_message_size=1000)
    async with running(rec, config) as (host, port, _):
        stream, client, _ = await ws_connect(host, port)
        await stream.send_all(client.send(ws_events.BytesMessage(data=b"x" * 1000)))
        assert isinstance(await ws_next(stream, client), ws_events.BytesMessage)  # at the limit
        # over it, in two fragments
        await stream.send_all(
            client.send(ws_events.BytesMessage(data=b"y" * 600, message_finished=False))
            + client.send(ws_events.BytesMessage(data=b"y" * 600))
        )
        closed = await ws_next(stream, client)
        assert isinstance(closed, ws_events.CloseConnection)
        assert closed.code == 1009
    assert rec.received[0][-1] == {"type": "websocket.disconnect", "code": 1009}


async def test_an_invalid_upgrade_is_refused() -> None:
    rec = Recorder()
    async with running(rec) as (host, port, _):
        stream = await tcp(host, port)
        await stream.send_all(get("/ws", b"upgrade: websocket\r\nconnection: upgrade\r\n"))
        assert (await read_all(stream)).startswith(b"HTTP/1.1 400 ")
    assert rec.scopes == []


# -- TLS, addresses, shutdown -------------------------------------------------------------------


async def test_tls_with_alpn_http11(tmp_path: Any) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(certfile)
    cert.private_key_pem.write_to_path(keyfile)
    rec = Recorder()
    config = ServerConfig(certfile=str(certfile), keyfile=str(keyfile))
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        urls = await nursery.start(
            functools.partial(serve, make_app(rec), config, shutdown_trigger=stop.wait)
        )
        assert urls[0].startswith("https://127.0.0.1:")
        context = ssl.create_default_context()
        ca.configure_trust(context)
        context.set_alpn_protocols(["h2", "http/1.1"])
        raw = await tcp("127.0.0.1", int(urls[0].rpartition(":")[2]))
        stream = trio.SSLStream(raw, context, server_hostname="127.0.0.1")
        await stream.send_all(get("/secure"))
        [(head, body)] = await responses(stream, 1)
        assert stream.selected_alpn_protocol() == "http/1.1"
        assert body == b"GET /secure 0"
        await stream.aclose()
        stop.set()
    assert rec.scopes[0]["scheme"] == "https"


async def test_ipv6_url_in_brackets() -> None:
    try:
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            urls = await nursery.start(
                functools.partial(
                    serve,
                    make_app(Recorder()),
                    ServerConfig(host="::1"),
                    shutdown_trigger=stop.wait,
                )
            )
            stop.set()
    except* OSError:
        pytest.skip("no IPv6 loopback here")
    assert urls[0].startswith("http://[::1]:")
    assert int(urls[0].rpartition(":")[2]) > 0


async def test_shutdown_lets_a_request_finish_and_closes_idle_connections() -> None:
    rec = Recorder()
    send, receive = trio.open_memory_channel[dict[str, Any]](10)
    rec.events = send
    async with running(rec, ServerConfig(graceful_timeout_s=5)) as (host, port, stop):
        idle = await tcp(host, port)
        busy = await tcp(host, port)
        await busy.send_all(get("/wait"))
        await receive.receive()  # /wait is in the app
        stop.set()
        with trio.fail_after(5):
            assert await read_all(idle) == b""  # the idle one is closed at once
        with pytest.raises(OSError, match="connect"):
            await tcp(host, port)  # no longer accepting
        rec.release.set()
        answer = await read_all(busy)  # the request in progress finishes, then the close
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert b"connection: close" in answer
    assert answer.endswith(b"GET /wait 0")


async def test_shutdown_cancels_what_outlasts_the_grace_period() -> None:
    rec = Recorder()
    send, receive = trio.open_memory_channel[dict[str, Any]](10)
    rec.events = send
    async with running(rec, ServerConfig(graceful_timeout_s=0.2)) as (host, port, stop):
        busy = await tcp(host, port)
        await busy.send_all(get("/wait"))
        await receive.receive()
        stop.set()
        with trio.fail_after(5):
            assert await read_all(busy) == b""  # never released: cut off after the grace
