"""Small ASGI helpers for the relay's HTTP side: JSON/error responses, bounded body reads, headers.

No framework: the relay has five routes and wants exact control over when bytes go out (a streamed
NDJSON body is sent chunk by chunk with `more_body`, and credit is granted only after each send).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

import trio

from asgiapp.server import RECEIVE_UNTIL
from protocol import ErrorCode, error_record, http_status

__all__ = [
    "HttpError",
    "Receive",
    "ReceiveUntil",
    "Send",
    "header",
    "read_body",
    "receive_until",
    "send_error",
    "send_json",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
#: ``await until(deadline, on_wait)``: ``await receive()``, or None once trio time ``deadline``
#: passed first or the cancel scope handed to ``on_wait`` was cancelled (`receive_until`)
ReceiveUntil = Callable[
    [float, Callable[[trio.CancelScope], object] | None], Awaitable[Message | None]
]

JSON_TYPE = b"application/json"
#: Bytes of an oversized request body read and thrown away so the client can see the 413.
DISCARD_LIMIT = 16 * 1024 * 1024
NDJSON_TYPE = b"application/x-ndjson"


class HttpError(Exception):
    """A refusal answered with `{"error": {...}}` and the status of its code (or `status`)."""

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        status: int | None = None,
        hint: str | None = None,
        retry_after: str | None = None,
        query_id: str | None = None,
        reason: str | None = None,
        headers: list[tuple[bytes, bytes]] | None = None,
        limit: str | None = None,
        session: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(f"{code}: {message}")
        #: What the refusal counters count it as (default: the error code).
        self.reason = reason or code
        #: Extra response headers (e.g. Allow on a 405).
        self.headers = list(headers or ())
        self.code = code
        self.message = message
        self.status = status if status is not None else http_status(code)
        self.hint = hint
        self.retry_after = retry_after
        self.query_id = query_id
        #: Which limit a limits.too_many_queries refusal hit: "identity", "tunnel", "connector".
        self.limit = limit
        #: A session operation's session state (SPEC.md 11.5), when the session is known.
        self.session = dict(session) if session else None

    def body(self) -> bytes:
        return error_record(
            self.code,
            self.message,
            hint=self.hint,
            query_id=self.query_id,
            limit=self.limit,
            session=self.session,
        )


def header(scope: Mapping[str, Any], name: bytes) -> str | None:
    """The first value of a request header (name lower-case), decoded as latin-1."""
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value).decode("latin-1")
    return None


async def send_json(
    send: Send,
    status: int,
    body: bytes,
    *,
    content_type: bytes = JSON_TYPE,
    extra_headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    """A complete response in one body message (one write: no Nagle/delayed-ACK stall)."""
    headers = [
        (b"content-type", content_type),
        (b"content-length", str(len(body)).encode("ascii")),
        (b"cache-control", b"no-store"),
    ]
    headers.extend(extra_headers or ())
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def receive_until(receive: Receive, scope: Scope | None = None) -> ReceiveUntil:
    """The server's `asgiapp.server.RECEIVE_UNTIL` extension of the HTTP ``scope`` (its one
    cancel scope for the wait, none when the message is there); without it, the same made of
    `receive` in a cancel scope with the deadline."""
    extensions = (scope.get("extensions") if scope is not None else None) or {}
    until: ReceiveUntil | None = extensions.get(RECEIVE_UNTIL)
    if until is not None:
        return until

    async def in_scope(
        deadline: float, on_wait: Callable[[trio.CancelScope], object] | None
    ) -> Message | None:
        with trio.move_on_at(deadline) as waited:
            if on_wait is not None:
                on_wait(waited)
            return await receive()
        return None

    return in_scope


async def send_error(send: Send, error: HttpError) -> None:
    extra = list(error.headers)
    if error.retry_after is not None:
        extra.append((b"retry-after", error.retry_after.encode("ascii")))
    if error.status == 401:
        extra.append((b"www-authenticate", b'Bearer realm="edgetds"'))
    await send_json(send, error.status, error.body(), extra_headers=extra)


async def read_body(scope: Mapping[str, Any], receive: Receive, *, limit: int) -> bytes:
    """Read the whole request body, refusing more than `limit` bytes.

    An oversized body is read on and discarded (up to `DISCARD_LIMIT`) before the refusal is
    answered: the server reads a body only as the app asks for it (and drops at most 1 MiB the
    app left unread), and a client that is still writing would never see the 413.

    Raises:
        HttpError: request.too_large (413), or request.invalid if the client went away mid-body.
    """
    declared = header(scope, b"content-length")
    message_text = f"request body is over this relay's limit of {limit} bytes"
    if declared is not None and declared.isdigit() and int(declared) > limit:
        message_text = f"request body is {int(declared)} bytes; this relay accepts at most {limit}"
        limit = -1
    body = bytearray()
    seen = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise HttpError(
                ErrorCode.REQUEST_INVALID, "client went away before the body was complete"
            )
        chunk = message.get("body", b"")
        seen += len(chunk)
        if seen <= limit:
            if not message.get("more_body", False):
                # the common case, a body in one message: no copy
                return bytes(chunk) if not body else bytes(body + chunk)
            body += chunk
        elif seen > DISCARD_LIMIT or not message.get("more_body", False):
            raise HttpError(ErrorCode.REQUEST_TOO_LARGE, message_text)
