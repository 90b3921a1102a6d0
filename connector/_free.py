"""`Free`: a trio Lock or Semaphore whose acquire takes it without a Trio schedule point when it
is free.

Each schedule point is a round of the run loop and an epoll call. The tunnel link's reader
flushes after every message it read, a query writes its answer under the link's write lock, and
every query borrows a pooled connection's slot: taking a free one without a round saves one each
time. A taken one is waited for as trio does (first come, first served); a cancel reaches the
caller at its next schedule point.
"""

from __future__ import annotations

import trio

__all__ = ["Free"]


class Free:
    """``async with Free(trio.Lock())`` / ``Free(trio.Semaphore(n))``: as the wrapped primitive,
    with no schedule point when it is free."""

    __slots__ = ("_primitive",)

    def __init__(self, primitive: trio.Lock | trio.Semaphore) -> None:
        self._primitive = primitive

    def locked(self) -> bool:
        """Whether an acquire would wait."""
        primitive = self._primitive
        return primitive.locked() if isinstance(primitive, trio.Lock) else primitive.value == 0

    async def acquire(self) -> None:
        try:
            self._primitive.acquire_nowait()
        except trio.WouldBlock:
            await self._primitive.acquire()

    def release(self) -> None:
        self._primitive.release()

    # (acquire's and release's bodies again, one call less each: ``async with`` is how the
    # link's write lock and websockets' send lock are taken, each once per query answered)
    async def __aenter__(self) -> None:
        try:
            self._primitive.acquire_nowait()
        except trio.WouldBlock:
            await self._primitive.acquire()

    async def __aexit__(self, *exc_info: object) -> None:
        self._primitive.release()
