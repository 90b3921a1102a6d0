"""`WorkerThread`: a thread of one's own for blocking calls from Trio, cheaper per call than
`trio.to_thread.run_sync` (no thread naming, context copy or limiter, and the caller is woken
straight from Trio's I/O wait)."""

from __future__ import annotations

import queue
import socket
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import trio

T = TypeVar("T")


#: a call for a worker thread: the function and where its outcome goes ((True, value) or
#: (False, exception))
_Job = tuple[Callable[[], Any], list[tuple[bool, Any]]]


class WorkerThread:
    """One worker thread: runs its calls in order, one at a time (a pooled connection's
    python-tds calls, an audit log's group writes).

    The caller waits for a call's end on a socket pair of this thread's own: the worker writes a
    byte, and the Trio run's I/O wait wakes the waiting task itself. Trio's ``run_sync_soon``
    (what `trio.to_thread.run_sync` answers through) wakes a system task instead, which then
    reschedules the caller: one round of the run loop (an epoll call) more per call.
    """

    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._wake_in, self._wake_out = socket.socketpair()
        self._wake_in.setblocking(False)
        self.thread = threading.Thread(target=self._work, name=name, daemon=True)
        self.thread.start()

    def _work(self) -> None:
        try:
            while (job := self._jobs.get()) is not None:
                fn, result = job
                try:
                    result.append((True, fn()))
                except BaseException as exc:  # handed to the caller, raised there
                    result.append((False, exc))
                del fn, job, result  # keep nothing of the call alive while the thread waits
                self._wake_out.send(b"\0")
        finally:
            # no caller waits any more (stop() comes once the borrower left)
            self._wake_out.close()
            self._wake_in.close()

    async def call(self, fn: Callable[[], T], *, checkpoint: bool = True) -> T:
        """Run ``fn()`` in this thread; not cancellable: a call into python-tds is waited for,
        never abandoned, as `trio.to_thread.run_sync` does by default (a cancel takes effect at
        the caller's next checkpoint; interrupt the call with send_attention / shutdown).

        ``checkpoint=False``: a caller already cancelled is not refused (Cancelled) before the
        call either: ``fn`` runs all the same (an audit log's group write)."""
        if checkpoint:
            await trio.lowlevel.checkpoint_if_cancelled()
        result: list[tuple[bool, Any]] = []
        self._jobs.put((fn, result))
        try:
            await self._woken(result)
        except trio.Cancelled:
            # wait for the call all the same; the cancel stays pending (its scope is still
            # cancelled) and is raised at the caller's next checkpoint. A shielding CancelScope
            # around every wait would do the same at about 5 us per call.
            with trio.CancelScope(shield=True):
                await self._woken(result)
        [(ok, value)] = result
        if ok:
            return value  # type: ignore[no-any-return]
        raise value

    async def _woken(self, result: list[tuple[bool, Any]]) -> None:
        """Wait until the worker put the outcome of the call in ``result``."""
        while not result:
            await trio.lowlevel.wait_readable(self._wake_in)
            try:
                self._wake_in.recv(64)
            except BlockingIOError:  # pragma: no cover - woken without a byte
                pass

    def stop(self) -> None:
        """End the thread after the calls already queued (call it once nobody waits for a call)."""
        self._jobs.put(None)
