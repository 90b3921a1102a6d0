"""Waiting for state that offers no event to wait on.

Tests wait for events the code exposes where it exposes them. Some state has none for a test to
wait on: another process's (a relay over HTTP, a connector's log), a worker thread's (which cannot
set a trio.Event), or a sans-I/O object's counters. `eventually` is the one place that polls it;
the caller sets the deadline (`trio.fail_after`).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable

import trio

__all__ = ["eventually"]


async def eventually(
    predicate: Callable[[], bool | Awaitable[bool]], *, interval: float = 0.05
) -> None:
    """Return once ``predicate()`` (sync or async) holds, checking every ``interval`` seconds."""
    while True:
        held = predicate()
        if inspect.isawaitable(held):
            held = await held
        if held:
            return
        await trio.sleep(interval)
