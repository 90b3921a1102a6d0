"""READ COMMITTED blocking on top of SQLite: readers and writers wait for an uncommitted writer.

SQLite (WAL) lets a reader see the last committed data while another connection has an
uncommitted write, and lets only one connection write at a time. SQL Server at READ COMMITTED
(its default, without READ_COMMITTED_SNAPSHOT) instead makes a reader wait for the writer's
locks. tdslite follows SQL Server at **table** granularity: when a session's open transaction has
inserted, updated or deleted rows of a table, another session's SELECT (or DML) reading that table
waits until that transaction commits or rolls back; a statement that writes waits while another
session has any uncommitted write (SQLite has a single writer). The wait honours SET
LOCK_TIMEOUT (-1 forever, the default; 0 no wait; n milliseconds) with error 1222, and an
ATTENTION (cancel) ends it with 3617. Not waiting: the session's own writes, SET TRANSACTION
ISOLATION LEVEL READ UNCOMMITTED or SNAPSHOT, and the NOLOCK / READUNCOMMITTED table hints (they
read the last committed data, as SQLite cannot show uncommitted rows of another connection).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable

from ._errors import SqlError

#: How often a waiting statement looks for a cancel (ATTENTION).
_POLL_SECONDS = 0.05


def lock_timeout() -> SqlError:
    return SqlError(1222, "Lock request time out period exceeded.", severity=16)


class TableLocks:
    """Which session's open transaction has written which tables (one per Engine)."""

    def __init__(self) -> None:
        self._writers: dict[str, object] = {}  # table (lower-case) -> session
        self._changed = threading.Condition()
        #: statements waiting now (for tests and diagnostics)
        self.waiting = 0

    def hold(self, owner: object, tables: Iterable[str]) -> None:
        """``owner``'s open transaction wrote ``tables``: hold them until `release`."""
        with self._changed:
            for table in tables:
                self._writers[table.lower()] = owner

    def release(self, owner: object) -> None:
        """``owner``'s transaction ended: waiting sessions may go on."""
        with self._changed:
            held = [t for t, o in self._writers.items() if o is owner]
            for table in held:
                del self._writers[table]
            if held:
                self._changed.notify_all()

    def _blocked(self, owner: object, tables: Iterable[str] | None) -> bool:
        if tables is None:  # a write: blocked by any other session's uncommitted write
            return any(o is not owner for o in self._writers.values())
        return any(self._writers.get(t.lower(), owner) is not owner for t in tables)

    def wait(
        self,
        owner: object,
        tables: Iterable[str] | None,
        *,
        timeout_ms: int,
        cancelled: Callable[[], bool],
        on_cancel: Callable[[], SqlError],
    ) -> None:
        """Wait until no other session holds ``tables`` (None: until no other session holds
        anything).

        Raises:
            SqlError: 1222 when LOCK_TIMEOUT ran out; ``on_cancel()`` when ``cancelled()``.
        """
        wanted = None if tables is None else list(tables)
        deadline = None if timeout_ms < 0 else time.monotonic() + timeout_ms / 1000
        with self._changed:
            if not self._blocked(owner, wanted):
                return
            self.waiting += 1
            try:
                while self._blocked(owner, wanted):
                    if cancelled():
                        raise on_cancel()
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        raise lock_timeout()
                    step = _POLL_SECONDS if left is None else min(_POLL_SECONDS, left)
                    self._changed.wait(step)
            finally:
                self.waiting -= 1
