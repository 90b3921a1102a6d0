"""One watchdog task per Trio run for every running query: its cancel token and its deadline.

A query being executed (connector/execute.py) registers a `Watch`; when its `CancelToken` is
cancelled or its deadline passes, the watchdog stops it: it cancels a delivery stalled on a slow
client's credit, and interrupts a worker blocked in python-tds (an ATTENTION packet; after
`INTERRUPT_GRACE_S` the socket is cut). The query unregisters when its database work is over
(`Watch.done`); nothing of the watchdog touches its connection after that.

Why one task and not one per query: a task, its nursery and its cancel scopes per query cost
about 60 us of the connector's CPU per query; registering costs a set insert and, when its deadline
is the nearest, a cancel-scope deadline update. The watchdog is a Trio system task started on first
use in each run (`trio.lowlevel.RunVar`); what it does for one query runs in a task of its own,
started only when that query is stopped.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import trio

from connector.pool import PooledConnection
from connector.results import CancelToken

__all__ = ["INTERRUPT_GRACE_S", "Watch", "watching"]

log = logging.getLogger("edgetds.connector.execute")

#: how long a worker blocked in python-tds gets after ATTENTION before its socket is cut
INTERRUPT_GRACE_S = 2.0


@dataclass(eq=False)
class Watch:
    """One query under watch."""

    pc: PooledConnection
    cancel: CancelToken
    deadline: float
    #: set once no database work is left: the watchdog stops interrupting
    done: trio.Event = field(default_factory=trio.Event)
    #: the delivery in progress (cancelled when the query is stopped)
    delivery: list[trio.CancelScope] = field(default_factory=list)


class _Watchdog:
    def __init__(self) -> None:
        self._watches: set[Watch] = set()
        self._wake = trio.Event()
        self._sleep = trio.CancelScope()

    def add(self, watch: Watch) -> None:
        self._watches.add(watch)
        watch.cancel.on_cancel = self._poke
        if watch.cancel.cancelled:
            self._poke()
        elif watch.deadline < self._sleep.deadline:
            self._sleep.deadline = watch.deadline

    def remove(self, watch: Watch) -> None:
        self._watches.discard(watch)
        watch.cancel.on_cancel = None

    def _poke(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            while True:
                with self._sleep:
                    await self._wake.wait()
                self._wake = trio.Event()
                now = trio.current_time()
                nearest = math.inf
                for watch in list(self._watches):
                    if watch.cancel.cancelled or watch.deadline <= now:
                        self.remove(watch)
                        nursery.start_soon(_stop, watch)
                    else:
                        nearest = min(nearest, watch.deadline)
                self._sleep = trio.CancelScope(deadline=nearest)


async def _stop(watch: Watch) -> None:
    """Stop one query: its cancel token says why, a stalled delivery ends, a worker blocked in
    python-tds is interrupted (and cut off after the grace period)."""
    try:
        watch.cancel.cancel("timeout")  # no-op if it was cancelled first
        for scope in watch.delivery:
            scope.cancel()
        while not watch.done.is_set():
            if watch.pc.busy:
                sent = watch.pc.send_attention()
                log.info("interrupting a running statement", extra={"attention_sent": sent})
                with trio.move_on_after(INTERRUPT_GRACE_S):
                    await watch.done.wait()
                if not watch.done.is_set():
                    watch.pc.shutdown()
                return
            await trio.sleep(0.02)
    except Exception:  # never let one query's stop take the watchdog (and the run) down
        log.exception("stopping a query failed")


_WATCHDOG: trio.lowlevel.RunVar[_Watchdog] = trio.lowlevel.RunVar("edgetds_watchdog")


def watching(watch: Watch) -> _Watchdog:
    """Register ``watch`` with this run's watchdog (started on first use); the caller must
    `_Watchdog.remove` it, after setting ``watch.done``, once its database work is over."""
    try:
        dog = _WATCHDOG.get()
    except LookupError:
        dog = _Watchdog()
        _WATCHDOG.set(dog)
        trio.lowlevel.spawn_system_task(dog.run, name="edgetds query watchdog")
    dog.add(watch)
    return dog
