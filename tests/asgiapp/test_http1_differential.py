"""asgiapp.http1 against h11: every request the reader accepts, h11 accepts alike.

A corpus of request bytes (hand-written smuggling and header-confusion cases, and hypothesis's
mutations of valid requests) goes to both parsers. Whenever `RequestReader` hands out a request
and its complete body, h11 (the parser the server used before, still the reference) must read the
same method, target, version, headers (names lower-case, values without surrounding blanks) and
body, and leave the same bytes after it (what a pipelined request or an upgraded protocol gets):
no request is framed, or its headers read, differently. Refusing what h11 would accept is allowed
(and done wherever the two could disagree).
"""

from __future__ import annotations

from dataclasses import dataclass

import h11
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asgiapp.http1 import END, NEED_DATA, ProtocolError, Request, RequestReader

MAX_HEAD = 64 * 1024


@dataclass(frozen=True)
class Read:
    method: bytes
    target: bytes
    version: bytes
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes
    #: the bytes after the message
    rest: bytes


def ours(pieces: list[bytes]) -> Read | None:
    """What the reader makes of the bytes (fed in `pieces`): the first request, or None if it
    refused it or it is incomplete."""
    reader = RequestReader(MAX_HEAD)
    request: Request | None = None
    body: list[bytes] = []
    try:
        for i, piece in enumerate(pieces):
            reader.receive_data(piece)
            while True:
                event = reader.next_event()
                if event is NEED_DATA or event is None:
                    break
                if isinstance(event, Request):
                    request = event
                elif isinstance(event, bytes):
                    body.append(event)
                else:
                    assert event is END
                    assert request is not None
                    for later in pieces[i + 1 :]:  # what is received after the message
                        reader.receive_data(later)
                    rest = reader.trailing_data[0]
                    return Read(
                        request.method,
                        request.target,
                        request.http_version,
                        tuple(request.headers),
                        b"".join(body),
                        rest,
                    )
    except ProtocolError as exc:
        status = exc.status
        assert status in (400, 431)
    return None


def theirs(raw: bytes) -> Read | None:
    """What h11 makes of the bytes: the first request, or None if it refused it or it is
    incomplete."""
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
    conn.receive_data(raw)
    request: h11.Request | None = None
    body: list[bytes] = []
    try:
        while True:
            event = conn.next_event()
            if isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.Data):
                body.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                assert request is not None
                return Read(
                    bytes(request.method),
                    bytes(request.target),
                    bytes(request.http_version),
                    tuple((bytes(n), bytes(v)) for n, v in request.headers),
                    b"".join(body),
                    conn.trailing_data[0],
                )
            else:
                return None
    except h11.RemoteProtocolError:
        return None


def check(raw: bytes, splits: tuple[int, ...] = ()) -> Read | None:
    """The reader's answer, asserted to be h11's whenever the reader accepts."""
    cuts = sorted({min(max(cut, 0), len(raw)) for cut in splits})
    pieces = [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True)]
    mine = ours([piece for piece in pieces if piece])
    if mine is not None:
        assert theirs(raw) == mine, raw
    return mine


GET = b"GET /v1/x?y=1 HTTP/1.1\r\nHost: relay\r\nUser-Agent: t\r\nAccept: */*\r\n\r\n"
POST = (
    b"POST /v1/tunnels/t/query HTTP/1.1\r\nHost: relay\r\nContent-Type: application/json\r\n"
    b'Authorization: Bearer abc.def.ghi\r\nContent-Length: 11\r\n\r\n{"sql": 1}\n'
)
CHUNKED = (
    b"POST /c HTTP/1.1\r\nHost: relay\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"
)
HTTP10 = b"GET /old HTTP/1.0\r\nX: y\r\n\r\n"
WEBSOCKET = (
    b"GET /ws HTTP/1.1\r\nHost: relay\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)
VALID = [GET, POST, CHUNKED, HTTP10, WEBSOCKET + b"\x81\x80frame", POST + GET, CHUNKED + POST]


@pytest.mark.parametrize("raw", VALID)
def test_valid_requests_are_read_as_h11_reads_them(raw: bytes) -> None:
    assert check(raw) is not None
    for cut in range(1, len(raw)):  # in two pieces, cut anywhere
        assert check(raw, (cut,)) is not None


def head(*lines: bytes, body: bytes = b"", start: bytes = b"POST / HTTP/1.1") -> bytes:
    return start + b"\r\n" + b"".join(line + b"\r\n" for line in lines) + b"\r\n" + body


REFUSED = [
    # framing: smuggling
    head(b"Host: a", b"Content-Length: 3", b"Content-Length: 3", body=b"abc"),
    head(b"Host: a", b"Content-Length: 3", b"Content-Length: 4", body=b"abcd"),
    head(b"Host: a", b"Content-Length: 3, 3", body=b"abc"),
    head(b"Host: a", b"Content-Length: +3", body=b"abc"),
    head(b"Host: a", b"Content-Length: 0x3", body=b"abc"),
    head(b"Host: a", b"Content-Length: 3", b"Transfer-Encoding: chunked", body=b"0\r\n\r\n"),
    head(b"Host: a", b"Transfer-Encoding: chunked", b"Content-Length: 3", body=b"0\r\n\r\n"),
    head(b"Host: a", b"Transfer-Encoding: chunked, identity", body=b"0\r\n\r\n"),
    head(b"Host: a", b"Transfer-Encoding: identity, chunked", body=b"0\r\n\r\n"),
    head(
        b"Host: a", b"Transfer-Encoding: chunked", b"Transfer-Encoding: chunked", body=b"0\r\n\r\n"
    ),
    head(b"Host: a", b"Transfer-Encoding: gzip", body=b"abc"),
    head(b"Host: a", b"Transfer-Encoding : chunked", body=b"0\r\n\r\n"),
    head(b"Host: a", b"Transfer-Encoding:\x0bchunked", body=b"0\r\n\r\n"),
    head(b"Host: a", b"Transfer-Encoding: \x00chunked", body=b"0\r\n\r\n"),
    head(b"Host: a", b"Transfer-Encoding: chunked", body=b"5\nhello\n0\n\n"),
    head(b"Host: a", b"Transfer-Encoding: chunked", body=b"5 \r\nhello\r\n0\r\n\r\n"),
    head(b"Host: a", b"Transfer-Encoding: chunked", body=b"-5\r\nhello\r\n0\r\n\r\n"),
    head(b"Host: a", b"Transfer-Encoding: chunked", body=b"ffffffffffffffffffff1\r\nx\r\n"),
    head(b"Host: a", b"Transfer-Encoding: chunked", body=b"3\r\nhello\r\n0\r\n\r\n"),
    head(b"Host: a", b"Transfer-Encoding: chunked", body=b"0" * 20 + b"1\r\na\r\n0\r\n\r\n"),
    head(b"Host: a", b"Transfer-Encoding: chunked", body=b"1;a\nb\r\na\r\n0\r\n\r\n"),
    head(b"Host: a", b"Transfer-Encoding: chunked", body=b"1\r\na\r\n0\r\nX: a\nb\r\n\r\n"),
    head(b"Host: a", b"Transfer-Encoding: chunked", body=b"1\r\naXY0\r\n\r\n"),
    # header confusion
    head(b"Host: a", b"Content-Length: 3", b" Content-Length: 5", body=b"abcde"),  # obs-fold
    head(b"Host: a", b"X: a", b"\tContent-Length: 5", body=b"abcde"),
    head(b"Host: a", b"Content-Length : 3", body=b"abc"),
    head(b"Host: a", b" Content-Length: 3", body=b"abc"),
    head(b"Host: a", b"Content-Length:\x003", body=b"abc"),
    head(b"Host: a", b"X: a\x00b"),
    head(b"Host: a", b"X: a\rb"),
    head(b"Host: a", b"X: a\x7fb"),
    head(b"Host: a", b"X\x00: b"),
    head(b"Host: a", b"X\x80: b"),
    head(b"Host: a", b"X y: b"),
    head(b"Host: a", b": b"),
    head(b"Host: a", b"Content-Length: 3", body=b"abc").replace(b"\r\n", b"\n"),  # bare LF
    head(b"Host: a", b"Content-Length: 3\n", body=b"abc"),
    head(b"Host: a", b"Content-Length: 3\rX: y", body=b"abc"),
    # Host
    head(b"Content-Length: 0"),
    head(b"Host: a", b"Host: b", b"Content-Length: 0"),
    head(b"Host: a", b"Host: a", start=b"POST / HTTP/1.0"),  # h11 refuses two in any version
    # request line
    head(b"Host: a", start=b"GET  / HTTP/1.1"),
    head(b"Host: a", start=b"GET / HTTP/1.1 "),
    head(b"Host: a", start=b"GET /a b HTTP/1.1"),
    head(b"Host: a", start=b"GET /\x00 HTTP/1.1"),
    head(b"Host: a", start=b"GET /\x7f HTTP/1.1"),
    head(b"Host: a", start=b"GET / HTTP/2.0"),
    head(b"Host: a", start=b"GET / HTTP/0.9"),
    head(b"Host: a", start=b"GET / http/1.1"),
    head(b"Host: a", start=b"G\x00T / HTTP/1.1"),
    head(b"Host: a", start=b"G(T / HTTP/1.1"),
    head(b"Host: a", start=b"FOO / HTTP/1.1"),
    head(b"Host: a", start=b"get / HTTP/1.1"),
    head(b"Host: a", start=b"GET /"),
    b"\r\n" + head(b"Host: a", start=b"GET / HTTP/1.1"),
    # an upgrade with a body: its bytes could be read as either
    head(b"Host: a", b"Upgrade: h2c", b"Connection: upgrade", b"Content-Length: 3", body=b"abc"),
    head(b"Host: a", b"Upgrade: x", b"Connection: upgrade", b"Transfer-Encoding: chunked"),
    # long lines
    head(b"Host: a", b"X: " + b"a" * MAX_HEAD),
    head(b"Host: a", start=b"GET /" + b"a" * MAX_HEAD + b" HTTP/1.1"),
]


@pytest.mark.parametrize("raw", REFUSED)
def test_requests_that_could_be_read_two_ways_are_refused(raw: bytes) -> None:
    assert check(raw) is None


ACCEPTED_ALIKE = [
    head(b"Host: a", b"Content-Length: 3", body=b"abcGET"),
    head(b"Host: a", b"transfer-encoding: CHUNKED", body=b"1\r\na\r\n0\r\n\r\nrest"),
    head(b"Host: a", b"Transfer-Encoding: chunked", body=b"1;a=b;c\r\na\r\n0;x\r\n\r\n"),
    head(b"Host: a", b"Transfer-Encoding: chunked", body=b"0" * 19 + b"1\r\na\r\n0\r\n\r\n"),
    head(b"Host: a", b"Transfer-Encoding: chunked", body=b'1;a="q s"\r\na\r\n0\r\n\r\n'),
    head(b"Host: a", b"X:  \t spaced \t value \t "),
    head(b"Host: a", b"X:"),
    head(b"Host: a", b"X: \x80\xff obs-text"),
    head(b"Host: a", start=b"GET http://h/p?q HTTP/1.1"),
    head(b"Host: a", start=b"OPTIONS * HTTP/1.1"),
    head(b"Host: a", b"Expect: 100-continue", b"Content-Length: 1", body=b"x"),
    head(b"Host: a", b"Upgrade: h2c", b"Connection: Upgrade, HTTP2-Settings", b"X: y", body=b"h2"),
    head(start=b"POST / HTTP/1.0"),
]


@pytest.mark.parametrize("raw", ACCEPTED_ALIKE)
def test_unusual_but_valid_requests_are_read_as_h11_reads_them(raw: bytes) -> None:
    assert check(raw) is not None


def test_expect_100_continue_and_upgrade_flags() -> None:
    reader = RequestReader(MAX_HEAD)
    reader.receive_data(head(b"Host: a", b"Expect: x, 100-Continue", b"Content-Length: 1"))
    request = reader.next_event()
    assert isinstance(request, Request)
    assert request.expect_continue
    assert not request.upgrade
    reader = RequestReader(MAX_HEAD)
    reader.receive_data(
        head(b"Expect: 100-continue", b"Content-Length: 1", start=b"PUT / HTTP/1.0")
    )
    request = reader.next_event()
    assert isinstance(request, Request)
    assert not request.expect_continue
    reader = RequestReader(MAX_HEAD)
    reader.receive_data(WEBSOCKET + b"after")
    request = reader.next_event()
    assert isinstance(request, Request)
    assert request.upgrade
    assert reader.next_event() is END
    assert reader.next_event() is None  # nothing after an upgrade is read as HTTP
    assert reader.trailing_data == (b"after", False)


def test_head_limits() -> None:
    reader = RequestReader(1000)
    reader.receive_data(b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"a" * 1000)
    with pytest.raises(ProtocolError) as refused:
        reader.next_event()
    assert refused.value.status == 431
    reader = RequestReader(1000)
    reader.receive_data(head(b"Host: a", b"X: " + b"a" * 970, start=b"GET / HTTP/1.1"))
    with pytest.raises(ProtocolError) as refused:
        reader.next_event()
    assert refused.value.status == 431
    reader = RequestReader(1000)
    reader.receive_data(head(b"Host: a", b"X: " + b"a" * 940, start=b"GET / HTTP/1.1"))
    assert isinstance(reader.next_event(), Request)


#: bytes a mutation inserts: line ends, blanks, separators, controls, obs-text, letters, digits
_ALPHABET = b'\r\n \t:;,\x00\x0b\x0c\x7f\x80\xff"(=aAzZ059-_'
_LINES = [
    b"Content-Length: 5",
    b"Content-Length: 0",
    b"Content-Length: 05",
    b"Content-Length: 5, 5",
    b"Transfer-Encoding: chunked",
    b"Transfer-Encoding: chunked, identity",
    b"Transfer-Encoding: identity",
    b" Transfer-Encoding: chunked",
    b"Transfer-Encoding : chunked",
    b"Host: other",
    b"Expect: 100-continue",
    b"Connection: upgrade",
    b"Upgrade: websocket",
    b"Connection: close",
    b"X: a\x00b",
    b"X:\tv\t",
]


@st.composite
def mutated(draw: st.DrawFn) -> tuple[bytes, tuple[int, ...]]:
    raw = bytearray(draw(st.sampled_from(VALID + ACCEPTED_ALIKE)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["insert", "replace", "delete", "line", "case", "repeat"]))
        at = draw(st.integers(0, len(raw)))
        if kind == "insert":
            raw[at:at] = draw(
                st.binary(min_size=1, max_size=3).map(
                    lambda b: bytes(_ALPHABET[x % len(_ALPHABET)] for x in b)
                )
            )
        elif kind == "replace" and at < len(raw):
            raw[at] = _ALPHABET[draw(st.integers(0, len(_ALPHABET) - 1))]
        elif kind == "delete":
            del raw[at : at + draw(st.integers(1, 3))]
        elif kind == "line":
            end = raw.find(b"\r\n", at)
            if end >= 0:
                raw[end + 2 : end + 2] = draw(st.sampled_from(_LINES)) + b"\r\n"
        elif kind == "case":
            raw[at : at + 8] = bytes(raw[at : at + 8]).swapcase()
        else:  # a line again
            start = raw.rfind(b"\n", 0, at) + 1
            end = raw.find(b"\n", at)
            if end >= 0:
                raw[end + 1 : end + 1] = raw[start : end + 1]
    splits = draw(st.lists(st.integers(0, len(raw)), max_size=3))
    return bytes(raw), tuple(splits)


@settings(max_examples=3000, deadline=None)
@given(mutated())
def test_mutated_requests_are_refused_or_read_as_h11_reads_them(
    case: tuple[bytes, tuple[int, ...]],
) -> None:
    raw, splits = case
    check(raw, splits)
