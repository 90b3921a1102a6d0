"""HTTP/1.1 requests read from a byte stream, sans-I/O: llhttp (httptools) parses, within checks
that keep every request it accepts one that h11 would accept alike.

`RequestReader` is fed the bytes a client sends (`receive_data`) and hands out one event at a
time (`next_event`): a `Request` (its head), body `bytes`, `END` (the message is complete), or
`NEED_DATA`. Requests are read one after the other: llhttp is given the bytes of the current
message only (a head up to its blank line, then at most the rest of its body), so what a client
pipelined stays in the buffer for its turn and each head is measured alone.

A request is refused (`ProtocolError`, with the status to answer) unless:

- its head fits in ``max_head_bytes`` (else 431);
- its head, as bytes, matches a strict subset of RFC 9112's grammar that h11 also accepts: a
  request line ``METHOD SP TARGET SP HTTP/1.0|HTTP/1.1`` with a token method and a target of
  visible ASCII, header lines of a token name, a colon, optional blanks, a value of visible ASCII
  or obs-text bytes with single runs of blanks inside, optional blanks; every line ends in CRLF
  (no bare LF, no obs-fold, no NUL or other control byte, no blank before the colon);
- llhttp accepts it with none of its lenient flags (it refuses duplicate Content-Length,
  Content-Length with Transfer-Encoding, a Transfer-Encoding that is not ``chunked``, methods it
  does not know, ...);
- a request has at most one Host header, an HTTP/1.1 request exactly one; a Content-Length is
  digits only; a Transfer-Encoding is exactly ``chunked`` (any case) and the only framing header;
- a request llhttp sees as an upgrade (``Connection: upgrade`` with ``Upgrade``, or CONNECT) has
  no body: its bytes after the head are the other protocol's (`trailing_data`), and no request
  is read after it (`next_event` returns None).

A body's errors (a bad chunk line, the client leaving mid-body) raise `ProtocolError` too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

import httptools

__all__ = ["END", "NEED_DATA", "ProtocolError", "Request", "RequestReader"]


class _Sentinel:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


#: the current message is complete
END: Final = _Sentinel("END")
#: more bytes are needed for the next event
NEED_DATA: Final = _Sentinel("NEED_DATA")


class ProtocolError(Exception):
    """The client broke HTTP/1.1; `status` is the answer (400, 431)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(slots=True)
class Request:
    """A request's head: header names lower-case, values without surrounding blanks."""

    method: bytes
    target: bytes
    http_version: bytes
    headers: list[tuple[bytes, bytes]]
    #: ``Expect: 100-continue`` on an HTTP/1.1 request (answered before the body is read)
    expect_continue: bool
    #: llhttp's upgrade (``Connection: upgrade`` + ``Upgrade``, or CONNECT): the bytes after the
    #: head are `RequestReader.trailing_data`, not HTTP
    upgrade: bool


_TOKEN = rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+"
_FIELD_VCHAR = rb"[\x21-\x7e\x80-\xff]"
#: a whole head as h11 would also read it (the subset described above)
_HEAD = re.compile(
    rb"%s [\x21-\x7e]+ HTTP/1\.[01]\r\n"
    rb"(?:%s:[ \t]*(?:%s+(?:[ \t]+%s+)*)?[ \t]*\r\n)*"
    rb"\r\n" % (_TOKEN, _TOKEN, _FIELD_VCHAR, _FIELD_VCHAR)
)
#: where a head ends: its first empty line (a bare-LF one too, so such a head is refused as soon
#: as it is complete, as h11 ends it there)
_BLANK_LINE = re.compile(rb"\n\r?\n")
#: a byte no head may hold (a control byte but CR, LF and tab): a head with one is refused as
#: soon as the byte arrives, not at its blank line, which may never come (a TLS handshake sent
#: to the plain port starts with 0x16 and then waits for an answer)
_NOT_IN_HEAD = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_DIGITS = re.compile(rb"[0-9]+")
#: a chunk-size line: hex digits first, at most 20 as h11 reads them (llhttp checks the rest:
#: extensions, CRLF)
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,20}(?![0-9A-Fa-f])")

# body framings
_LENGTH, _CHUNKED = 0, 1
# where a chunked body is
_SIZE_LINE, _DATA, _TRAILER = 0, 1, 2


class RequestReader:
    """The requests of one connection; see the module's docstring."""

    def __init__(self, max_head_bytes: int) -> None:
        self.max_head_bytes = max_head_bytes
        self._buffer = bytearray()
        self._closed = False
        self._parser = httptools.HttpRequestParser(self)
        #: None: reading a head; else reading the body of the request handed out
        self._framing: int | None = None
        #: bytes of the body left (Content-Length), or of the chunk with its CRLF (chunked)
        self._left = 0
        self._chunk_state = _SIZE_LINE
        #: where `_BLANK_LINE` was last searched for in vain (the buffer before it has none)
        self._searched = 0
        # what llhttp's callbacks gave for the message in progress
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._head_done = False
        self._complete = False
        self._upgrade_at: int | None = None
        #: chunk-size lines llhttp read, and chunks (their data and CRLF) it saw end
        self._chunk_lines = self._chunks_ended = 0
        #: the bytes last given to llhttp (after `next_event` returned a `Request`: its head)
        self.last_fed = b""
        #: an upgrade request was read: no more requests
        self._upgraded = False
        self._broken = False

    # -- input ------------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Bytes from the client; ``b""`` when it closed its side."""
        if data:
            self._buffer += data
        else:
            self._closed = True

    @property
    def buffered(self) -> int:
        """How many received bytes wait for a next event (a pipelined request's, say)."""
        return len(self._buffer)

    @property
    def trailing_data(self) -> tuple[bytes, bool]:
        """After an upgrade request: the bytes after its head, and whether the client closed."""
        return bytes(self._buffer), self._closed

    @property
    def in_body(self) -> bool:
        """A request was handed out and its body is not complete yet."""
        return self._framing is not None

    # -- llhttp's callbacks -----------------------------------------------------------------

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._head_done:
            return  # a chunked body's trailer fields: dropped (the request's headers are out)
        # llhttp keeps blanks after a value; h11 (and RFC 9110) does not
        self._headers.append((name.lower(), value.rstrip(b" \t")))

    def on_headers_complete(self) -> None:
        self._head_done = True

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        self._complete = True

    def on_chunk_header(self) -> None:
        self._chunk_lines += 1

    def on_chunk_complete(self) -> None:
        self._chunks_ended += 1

    def _feed(self, size: int) -> None:
        """Give llhttp the first `size` bytes of the buffer (and drop them from it)."""
        data = bytes(self._buffer[:size]) if size < len(self._buffer) else bytes(self._buffer)
        del self._buffer[:size]
        self.last_fed = data
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            self._upgrade_at = int(upgrade.args[0])
            if self._upgrade_at != len(data):
                self._broken = True
                raise ProtocolError("upgrade inside the bytes of a head") from None
        except httptools.HttpParserError as exc:
            self._broken = True
            raise ProtocolError(f"malformed request: {exc}") from None

    # -- events -----------------------------------------------------------------------------

    def next_event(self) -> Request | bytes | _Sentinel | None:
        """The next event, or None once the client closed between requests.

        Raises:
            ProtocolError: the request is malformed or refused (or was, on an earlier call).
        """
        if self._broken:
            raise ProtocolError("the connection's requests cannot be read further")
        if self._framing is None:
            return None if self._upgraded else self._next_head()
        return self._next_body()

    def _next_head(self) -> Request | _Sentinel | None:
        buffer = self._buffer
        if not buffer:
            return None if self._closed else NEED_DATA
        found = _BLANK_LINE.search(buffer, self._searched)
        if found is None:
            if _NOT_IN_HEAD.search(buffer, self._searched) is not None:
                self._broken = True
                raise ProtocolError("malformed request head")
            if len(buffer) > self.max_head_bytes:
                self._broken = True
                raise ProtocolError("request head too large", 431)
            if self._closed:
                self._broken = True
                raise ProtocolError("the client closed within a request head")
            self._searched = max(0, len(buffer) - 2)
            return NEED_DATA
        end = found.end()
        self._searched = 0
        if end > self.max_head_bytes:
            self._broken = True
            raise ProtocolError("request head too large", 431)
        if _HEAD.fullmatch(buffer, 0, end) is None:
            self._broken = True
            raise ProtocolError("malformed request head")
        self._url = b""
        self._headers = []
        self._head_done = self._complete = False
        self._feed(end)
        if not self._head_done:  # cannot be after a whole head llhttp accepted
            self._broken = True
            raise ProtocolError("malformed request head")
        return self._request()

    def _request(self) -> Request:
        """The head llhttp read, checked; sets the body's framing."""
        headers = self._headers
        parser = self._parser
        version = parser.get_http_version().encode("ascii")
        hosts = length = encoding = 0
        content_length = 0
        expect_continue = False
        for i, (name, value) in enumerate(headers):
            if name == b"host":
                hosts += 1
            elif name == b"content-length":
                length += 1
                if _DIGITS.fullmatch(value) is None:
                    self._broken = True
                    raise ProtocolError("invalid Content-Length")
                content_length = int(value)
            elif name == b"transfer-encoding":
                encoding += 1
                if value != b"chunked":
                    if value.lower() != b"chunked":
                        self._broken = True
                        raise ProtocolError("only Transfer-Encoding: chunked is supported")
                    headers[i] = (name, b"chunked")  # as h11 has it
            elif name == b"expect" and version == b"1.1":
                expect_continue = expect_continue or b"100-continue" in (
                    part.strip() for part in value.lower().split(b",")
                )
        if hosts > 1 or (version == b"1.1" and hosts == 0) or length + encoding > 1:
            self._broken = True
            raise ProtocolError("missing, repeated or conflicting Host or framing headers")
        upgrade = self._upgrade_at is not None
        if upgrade:
            # llhttp skipped any body: one is refused; the bytes after the head are not HTTP
            if encoding or content_length:
                self._broken = True
                raise ProtocolError("an upgrade request with a body")
            self._upgraded = True
            self._framing, self._left = _LENGTH, 0
        elif encoding:
            self._framing, self._chunk_state = _CHUNKED, _SIZE_LINE
        else:
            self._framing, self._left = _LENGTH, content_length
        self._body = []
        return Request(parser.get_method(), self._url, version, headers, expect_continue, upgrade)

    def _next_body(self) -> bytes | _Sentinel:
        while not self._complete:
            if not self._buffer:
                if self._closed:
                    self._broken = True
                    raise ProtocolError("the client closed within a request body")
                break
            if self._framing == _LENGTH:
                size = min(self._left, len(self._buffer))
                self._left -= size
                self._feed(size)
                if self._complete != (self._left == 0):
                    self._broken = True
                    raise ProtocolError("request body framing")
            elif not self._feed_chunked():
                break
        if self._body:
            body = b"".join(self._body) if len(self._body) > 1 else self._body[0]
            self._body = []
            return body
        if self._complete:
            self._framing = None
            self._complete = False
            return END
        return NEED_DATA

    def _feed_chunked(self) -> bool:
        """Feed llhttp one step of a chunked body, never past its end; False if the step needs
        more bytes."""
        buffer = self._buffer
        state = self._chunk_state
        if state == _DATA:
            size = min(self._left, len(buffer))
            self._left -= size
            self._feed(size)
            if self._left == 0:
                if self._chunks_ended != self._chunk_lines:  # llhttp's chunk did not end here
                    self._broken = True
                    raise ProtocolError("request body framing")
                self._chunk_state = _SIZE_LINE
        elif state == _SIZE_LINE:
            end = buffer.find(b"\n")
            if end < 0:
                if len(buffer) > self.max_head_bytes:
                    self._broken = True
                    raise ProtocolError("chunk header too long", 431)
                return self._wait()
            digits = _CHUNK_SIZE.match(buffer)
            if digits is None:
                self._broken = True
                raise ProtocolError("invalid chunk size")
            chunk = int(digits.group(), 16)
            lines = self._chunk_lines
            self._feed(end + 1)  # llhttp checks the line (a bad one raises)
            if self._chunk_lines != lines + 1:  # llhttp did not read it as one line
                self._broken = True
                raise ProtocolError("request body framing")
            if chunk:
                self._chunk_state, self._left = _DATA, chunk + 2  # the data and its CRLF
            else:
                self._chunk_state = _TRAILER
        else:  # the trailer section: header lines, then an empty line
            end = 2 if buffer[:2] == b"\r\n" else buffer.find(b"\r\n\r\n") + 4
            if end < 4 and buffer[:2] != b"\r\n":
                if len(buffer) > self.max_head_bytes:
                    self._broken = True
                    raise ProtocolError("chunked trailer too long", 431)
                return self._wait()
            self._feed(end)
            if not self._complete:
                self._broken = True
                raise ProtocolError("request body framing")
            return True
        if self._complete:  # llhttp ended the body where this reading did not
            self._broken = True
            raise ProtocolError("request body framing")
        return True

    def _wait(self) -> bool:
        """A chunk line or trailer is incomplete: refused if no more bytes can come."""
        if self._closed:
            self._broken = True
            raise ProtocolError("the client closed within a request body")
        return False
