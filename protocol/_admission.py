"""Fair admission of queries to a shared set of slots, across identities (sans-I/O).

The two relays (per tunnel) and the connector (connector-wide) drive one `FairAdmission` each; the
caller owns time, capacity and waking (SPEC.md 11.4). An identity is the issuer + subject of the
verified end-user token; `key` is any string made from both.

Rules:

1. `offer(key, ticket, limit=n)`: an identity that already has `n` queries admitted or waiting is
   refused at once with ``"identity"``; a full wait room (`max_waiting` waiting in all) refuses at
   once with ``"tunnel"``. Otherwise the ticket waits in its identity's queue (FIFO per identity).
2. `grant(free)`: while slots are free the caller takes waiting tickets one at a time, each from
   the waiting identity with the FEWEST admitted queries; among equals the one granted least
   recently (round robin), then the one whose head ticket has waited longest. So a newcomer is
   served at the next free slot however many queries another identity has queued.
3. `withdraw(key, ticket)`: a waiter gave up (its admission wait ran out: 429 ``"tunnel"``; or
   its client went away). `release(key)`: an admitted query ended; the caller grants again.

Nothing here blocks, sleeps or reads a clock; `tests/protocol/test_admission.py` and the
Worker's `relay/worker/test/admission.test.js` run the same scenarios (`vectors/admission.json`).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

__all__ = ["AdmissionStatistics", "FairAdmission", "Refusal"]

T = TypeVar("T")

#: Why `offer` refused: the identity's own cap, or a full tunnel (wait room).
Refusal = Literal["identity", "tunnel"]


@dataclass(frozen=True)
class AdmissionStatistics:
    """Counts only (no identities): what `statistics()` reports."""

    #: queries admitted and not yet released
    admitted: int
    #: queries waiting for a slot
    waiting: int
    #: identities with at least one query waiting
    waiting_identities: int


class FairAdmission(Generic[T]):
    """Per-identity caps plus a wait room served fewest-admitted-identity first (see the module
    docstring). Tickets are the caller's objects (compared by identity, never inspected)."""

    def __init__(self, *, max_waiting: int) -> None:
        if max_waiting < 0:
            raise ValueError("max_waiting must be >= 0")
        self.max_waiting = max_waiting
        self._admitted: dict[str, int] = {}
        self._queues: dict[str, deque[tuple[int, T]]] = {}
        #: grant sequence number of each identity's last grant (the round robin among equals)
        self._last_grant: dict[str, int] = {}
        self._waiting = 0
        #: the sum of ``_admitted``'s counts
        self._admitted_total = 0
        self._seq = 0

    def admitted(self, key: str) -> int:
        """Queries of `key` admitted and not yet released."""
        return self._admitted.get(key, 0)

    def waiting(self, key: str | None = None) -> int:
        """Queries waiting (of `key`, or in all)."""
        if key is None:
            return self._waiting
        return len(self._queues.get(key, ()))

    def admitted_total(self) -> int:
        """Queries admitted and not yet released, of every identity."""
        return self._admitted_total

    def statistics(self) -> AdmissionStatistics:
        return AdmissionStatistics(
            admitted=self._admitted_total,
            waiting=self._waiting,
            waiting_identities=len(self._queues),
        )

    def offer(self, key: str, ticket: T, *, limit: int) -> Refusal | None:
        """Queue `ticket` for `key` (None), or refuse it at once ("identity" / "tunnel")."""
        if self.admitted(key) + self.waiting(key) >= limit:
            return "identity"
        if self._waiting >= self.max_waiting:
            return "tunnel"
        self._seq += 1
        self._queues.setdefault(key, deque()).append((self._seq, ticket))
        self._waiting += 1
        return None

    def grant(self, free: int) -> list[tuple[str, T]]:
        """Admit up to `free` waiting tickets, fairest first; returns (key, ticket) in order."""
        granted: list[tuple[str, T]] = []
        while len(granted) < free and self._queues:
            key = min(self._queues, key=self._rank)
            queue = self._queues[key]
            _, ticket = queue.popleft()
            if not queue:
                del self._queues[key]
            self._waiting -= 1
            self._admitted[key] = self.admitted(key) + 1
            self._admitted_total += 1
            self._seq += 1
            self._last_grant[key] = self._seq
            granted.append((key, ticket))
        return granted

    def _rank(self, key: str) -> tuple[int, int, int]:
        return (self.admitted(key), self._last_grant.get(key, 0), self._queues[key][0][0])

    def withdraw(self, key: str, ticket: T) -> bool:
        """Take a waiting `ticket` out of the queue; False if it is not waiting (granted)."""
        queue = self._queues.get(key)
        if queue is None:
            return False
        for entry in queue:
            if entry[1] is ticket:
                queue.remove(entry)
                break
        else:
            return False
        self._waiting -= 1
        if not queue:
            del self._queues[key]
            self._forget(key)
        return True

    def release(self, key: str) -> None:
        """An admitted query of `key` ended (its slot is free: grant again)."""
        count = self.admitted(key)
        if count <= 0:
            raise ValueError("release() without an admitted query for this identity")
        self._admitted_total -= 1
        if count == 1:
            del self._admitted[key]
            self._forget(key)
        else:
            self._admitted[key] = count - 1

    def _forget(self, key: str) -> None:
        # An identity with nothing admitted or waiting leaves no trace (bounded memory).
        if key not in self._admitted and key not in self._queues:
            self._last_grant.pop(key, None)
