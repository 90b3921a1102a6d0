"""Waiting for state that offers no event to wait on.

Tests wait for events the code exposes where it exposes them. Some state has none for a test to
wait on: another process's (a relay over HTTP, a connector's log), a worker thread's (which cannot
set a trio.Event), or a sans-I/O object's counters. `eventually` is the one place that polls it;
the caller sets the deadline (`trio.fail_after`). `eventually_blocking` is the same for tests
that run no event loop (they drive processes with subprocess), with the deadline as an argument.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Awaitable, Callable

import trio

__all__ = ["eventually", "eventually_blocking"]


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


def eventually_blocking(
    predicate: Callable[[], bool], *, timeout_s: float, interval: float = 0.1
) -> bool:
    """Return True once ``predicate()`` holds, False if it still does not after ``timeout_s``
    (the caller asserts, with what it knows about the state)."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
    return True
