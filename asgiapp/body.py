"""The body of an ASGI HTTP request, read whole."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

__all__ = ["read_body"]


async def read_body(receive: Callable[[], Awaitable[MutableMapping[str, Any]]]) -> bytes:
    """Every chunk of the request body, joined. No size limit: for apps whose clients are our
    own (the dev IdP, the bench's services); the relay's bounded reader is relay.http.read_body."""
    chunks = []
    while True:
        message = await receive()
        chunks.append(bytes(message.get("body", b"")))
        if not message.get("more_body"):
            return b"".join(chunks)
