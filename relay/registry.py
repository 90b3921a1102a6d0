"""The tunnel registry: which connector connections serve which tunnel, and which one gets a query.

Several connectors, and several connections per connector (HA), may serve one tunnel. A query goes
to an *accepting* connection (handshake done, not draining, below its max streams) with the fewest
queries in flight; ties are broken round-robin so equal connections share the load evenly.

A reconnect with the same connector id is just one more connection: it serves at once, and older
connections keep serving their in-flight queries until they close (nothing waits for them).

Admission (SPEC.md 11.4) comes before the pick: `TunnelState.slot()` admits a query through the
tunnel's `protocol.FairAdmission`. An identity at its `max_queries_per_identity` is refused at once;
when every stream of every connection is taken, the query waits (bounded) and each slot that frees
goes to the waiting identity with the fewest queries in flight. A granted slot is *reserved* until
its QUERY is sent, so a slot is never promised twice.

Routing knows no HTTP: a query that cannot be routed raises `RouteRefused` with its error code,
and the HTTP side (relay/app.py) answers it with the status of that code.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import trio

from protocol import ErrorCode, FairAdmission, ReplayCache
from relay.config import TunnelConfig
from relay.session import ConnectorSession

__all__ = ["AdmissionSlot", "Registry", "RouteRefused", "TunnelState"]

#: Most queries waiting for a slot of one tunnel; beyond it a full tunnel refuses at once.
MAX_WAITING = 10_000


class RouteRefused(Exception):
    """A query this relay cannot route now: ``code`` (the error code), a message that says what
    to do, and optionally a hint, a Retry-After delay (seconds, as text) and, for
    limits.too_many_queries, which ``limit`` it hit ("identity" or "tunnel")."""

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        hint: str | None = None,
        retry_after: str | None = None,
        limit: str | None = None,
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.hint = hint
        self.retry_after = retry_after
        self.limit = limit


@dataclass(eq=False)
class AdmissionSlot:
    """One query's place in a tunnel's admission: waiting, then granted (a reserved slot until
    `placed()`), then released when the query ends."""

    key: str
    granted: bool = False
    reserved: bool = False
    #: trio time spent waiting for the slot (counted against the query's timeout)
    waited_s: float = 0.0
    #: set when the slot is granted; made only for a query that has to wait for one
    event: trio.Event | None = None


class _Admission:
    """What `TunnelState.slot` returns: an async context manager of one admitted slot (a plain
    class: no async generator and its hooks per query)."""

    __slots__ = ("_client_gone", "_key", "_slot", "_tunnel", "_wait_s")

    def __init__(
        self,
        tunnel: TunnelState,
        key: str,
        wait_s: float,
        client_gone: Callable[[], Awaitable[None]] | None,
    ) -> None:
        self._tunnel = tunnel
        self._key = key
        self._wait_s = wait_s
        self._client_gone = client_gone
        self._slot: AdmissionSlot | None = None

    async def __aenter__(self) -> AdmissionSlot:
        self._slot = await self._tunnel._admit(self._key, self._wait_s, self._client_gone)
        return self._slot

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._slot is not None
        self._tunnel._give_back(self._slot)


class TunnelState:
    """One configured tunnel and its live connector connections."""

    def __init__(self, config: TunnelConfig, *, query_id_ttl_s: float) -> None:
        self.config = config
        self.name = config.name
        self.sessions: list[ConnectorSession] = []
        self._turn = 0
        #: Client-supplied query ids recently sent to a connector (query.duplicate on reuse).
        self.query_ids = ReplayCache(query_id_ttl_s, max_entries=1_000_000)
        #: Set when a reload removed this tunnel (its connections are drained).
        self.removed = False
        self.admission: FairAdmission[AdmissionSlot] = FairAdmission(max_waiting=MAX_WAITING)
        #: granted slots whose QUERY is not sent yet
        self._reserved = 0
        #: set at the next change; made only when someone waits for one (`wait_changed`)
        self._changed: trio.Event | None = None

    async def wait_changed(self) -> None:
        """Return at the next change of this tunnel's connections or admission: a connection
        registers, ends or starts draining, a slot frees, a query starts or stops waiting.
        Re-read `status()` (or `admission`) after it returns."""
        if self._changed is None:
            self._changed = trio.Event()
        await self._changed.wait()

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    def add(self, session: ConnectorSession) -> None:
        self.sessions.append(session)
        # a reload may have unregistered its key, or removed this tunnel, during its handshake
        self._drain_unwelcome([session], close_after_s=0)
        session.on_capacity = self.pump
        self.pump()

    # -- admission ----------------------------------------------------------------------------

    def free_slots(self) -> int:
        """Streams the connections take now, less the slots granted but not yet used."""
        return sum(s.free_streams for s in self.sessions) - self._reserved

    def pump(self) -> None:
        """Hand every free slot to a waiting query, fairest first."""
        self._notify()
        # (called at every admission, placement and stream end: count free streams only when a
        # query waits for one)
        free = self.free_slots() if self.admission.waiting() else 0
        if free > 0:
            for _key, slot in self.admission.grant(free):
                slot.granted = slot.reserved = True
                self._reserved += 1
                if slot.event is not None:
                    slot.event.set()

    def slot(
        self,
        key: str,
        *,
        wait_s: float,
        client_gone: Callable[[], Awaitable[None]] | None = None,
    ) -> _Admission:
        """``async with tunnel.slot(...) as slot``: admit one query of identity `key`, waiting at
        most `wait_s` for a slot of a full tunnel; the slot is released (and handed on) when the
        block exits. `client_gone` returns when the client hangs up: a query whose client left
        stops waiting.

        Raises (on entering):
            RouteRefused: tunnel.no_connector / connector.draining (nothing to wait for),
                limits.too_many_queries with ``limit`` "identity" or "tunnel" (and Retry-After),
                or query.cancelled (the client left while it waited).
        """
        return _Admission(self, key, wait_s, client_gone)

    async def _admit(
        self, key: str, wait_s: float, client_gone: Callable[[], Awaitable[None]] | None
    ) -> AdmissionSlot:
        """`slot`'s entry: the admitted slot, which the caller must `_give_back`."""
        self._connectable()
        slot = AdmissionSlot(key)
        limit = self.config.max_queries_per_identity
        refusal = self.admission.offer(key, slot, limit=limit)
        if refusal == "identity":
            raise RouteRefused(
                ErrorCode.LIMITS_TOO_MANY_QUERIES,
                f"this identity already has {limit} queries in flight or waiting on tunnel "
                f"{self.name!r} (max_queries_per_identity); wait for one to finish, then retry",
                retry_after="1",
                limit="identity",
            )
        if refusal == "tunnel":
            raise self._full(f"{MAX_WAITING} queries are already waiting for a slot")
        self.pump()
        started = trio.current_time()
        gone = False

        async def watch(scope: trio.CancelScope) -> None:
            nonlocal gone
            if client_gone is not None:
                await client_gone()
                gone = True
                scope.cancel()

        try:
            if not slot.granted:  # a full tunnel: wait (the common case needs no task)
                granted = slot.event = trio.Event()
                with trio.move_on_after(wait_s):
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(watch, nursery.cancel_scope)
                        await granted.wait()
                        nursery.cancel_scope.cancel()
        except BaseException:  # cancelled while waiting (perhaps just granted): give it back
            self._give_back(slot)
            raise
        slot.waited_s = trio.current_time() - started
        if gone:
            self._give_back(slot)
            raise RouteRefused(
                ErrorCode.QUERY_CANCELLED, "the client went away while the query waited"
            )
        if not slot.granted:
            self._give_back(slot)
            raise self._full(f"no slot freed within {round(wait_s * 1000)} ms")
        return slot

    def _give_back(self, slot: AdmissionSlot) -> None:
        if not slot.granted:
            self.admission.withdraw(slot.key, slot)
            self._notify()
            return
        self.placed(slot)
        self.admission.release(slot.key)
        self.pump()

    def placed(self, slot: AdmissionSlot) -> None:
        """The slot's QUERY was sent (or never will be): its reservation ends."""
        if slot.reserved:
            slot.reserved = False
            self._reserved -= 1

    def _full(self, why: str) -> RouteRefused:
        return RouteRefused(
            ErrorCode.LIMITS_TOO_MANY_QUERIES,
            f"tunnel {self.name!r} is at its concurrent query limit and {why}; retry after the "
            "Retry-After delay",
            retry_after="1",
            limit="tunnel",
        )

    def reconfigure(
        self, config: TunnelConfig, *, close_after_s: float, removed: bool = False
    ) -> list[ConnectorSession]:
        """Take new connector keys (or, ``removed``, end this tunnel); DRAIN and return the
        connections that no longer belong: they are closed after ``close_after_s`` (time for
        their in-flight queries)."""
        self.config, self.removed = config, removed
        return self._drain_unwelcome(self.sessions, close_after_s=close_after_s)

    def _drain_unwelcome(
        self, sessions: list[ConnectorSession], *, close_after_s: float
    ) -> list[ConnectorSession]:
        drained = []
        for session in sessions:
            if session.closed or session.draining:
                continue
            if self.removed:
                why = f"tunnel {self.name!r} was removed from this relay"
            elif not self.config.registers(session.connector_id, session.connector_key_hex):
                why = "connector key no longer registered at this relay"
            else:
                continue
            session.drain(why, close_after_s=close_after_s)
            drained.append(session)
        return drained

    def remove(self, session: ConnectorSession) -> None:
        if session in self.sessions:
            self.sessions.remove(session)
            self._notify()

    def _connectable(self) -> list[ConnectorSession]:
        """The live connections; RouteRefused if none can ever take a query now."""
        live = [s for s in self.sessions if not s.closed]
        if not live:
            raise RouteRefused(
                ErrorCode.TUNNEL_NO_CONNECTOR,
                f"no connector is connected to tunnel {self.name!r}",
                hint="start one: edgetds connector run --config connector.toml (check its log "
                "for authentication errors)",
            )
        for session in live:  # a loop: a generator that all() leaves is closed with an exception
            if not session.draining:
                return live
        raise self._draining(f"every connector of tunnel {self.name!r} is draining")

    @staticmethod
    def _draining(why: str) -> RouteRefused:
        return RouteRefused(
            ErrorCode.CONNECTOR_DRAINING,
            why,
            hint="retry in a few seconds; connectors reconnect after a drain",
            retry_after="1",
        )

    def max_statement_bytes(self) -> int | None:
        """The longest statement (UTF-8 bytes) a live connection accepts; None: none is live."""
        live = [s.conn.max_statement_bytes for s in self.sessions if not s.closed]
        return max(live, default=None)

    def pick(self) -> ConnectorSession:
        """The connection for the next query (admitted by `slot()` first).

        Raises:
            RouteRefused: tunnel.no_connector (none connected), connector.draining (all
                draining, or none has room and some drain: the slot was theirs), or
                limits.too_many_queries (all at their max streams).
        """
        live = self._connectable()
        candidates = [s for s in live if s.accepting]
        if not candidates:
            if any(s.draining for s in live):
                raise self._draining(
                    f"the connectors of tunnel {self.name!r} with room for a query are draining"
                )
            raise self._full("every connection is at its max streams")
        least = min(s.in_flight for s in candidates)
        tied = [s for s in candidates if s.in_flight == least]
        self._turn += 1
        return tied[self._turn % len(tied)]

    def status(self) -> dict[str, Any]:
        """`{"tunnel", "connectors", "connections"}` (FIXED) plus what the Worker relay reports
        too: `connector_ids`, `draining` (of `connections`) and `streams` in flight.

        `connections` counts every connection past READY that is not closed, draining or not.
        """
        live = [s for s in self.sessions if not s.closed]
        ids = sorted({s.connector_id for s in live})
        return {
            "tunnel": self.name,
            "connectors": len(ids),
            "connections": len(live),
            "connector_ids": ids,
            "draining": sum(1 for s in live if s.draining),
            "streams": sum(s.in_flight for s in live),
        }

    def detail(self) -> dict[str, Any]:
        admission = self.admission.statistics()
        return {
            **self.status(),
            "sessions": [s.describe() for s in self.sessions],
            "admission": {
                "max_queries_per_identity": self.config.max_queries_per_identity,
                "admitted": admission.admitted,
                "waiting": admission.waiting,
                "waiting_identities": admission.waiting_identities,
            },
        }


@dataclass
class Registry:
    """All tunnels of this relay, by name."""

    tunnels: dict[str, TunnelState]

    @classmethod
    def from_config(cls, tunnels: Mapping[str, TunnelConfig], *, query_id_ttl_s: float) -> Registry:
        return cls({n: TunnelState(t, query_id_ttl_s=query_id_ttl_s) for n, t in tunnels.items()})

    def reconfigure(
        self, tunnels: Mapping[str, TunnelConfig], *, query_id_ttl_s: float, close_after_s: float
    ) -> list[ConnectorSession]:
        """Apply a reloaded config: new tunnels appear, removed ones are gone (their connections
        drained, and closed after ``close_after_s``), kept ones take their new keys. Returns the
        connections that were drained."""
        drained: list[ConnectorSession] = []
        for name in set(self.tunnels) - set(tunnels):
            gone = self.tunnels.pop(name)
            drained += gone.reconfigure(gone.config, close_after_s=close_after_s, removed=True)
        for name, config in tunnels.items():
            if name in self.tunnels:
                drained += self.tunnels[name].reconfigure(config, close_after_s=close_after_s)
            else:
                self.tunnels[name] = TunnelState(config, query_id_ttl_s=query_id_ttl_s)
        return drained

    def get(self, name: str) -> TunnelState:
        """The tunnel called `name`, or RouteRefused tunnel.unknown."""
        tunnel = self.tunnels.get(name)
        if tunnel is None:
            raise RouteRefused(
                ErrorCode.TUNNEL_UNKNOWN, f"no tunnel named {name[:64]!r} on this relay"
            )
        return tunnel

    def sessions(self) -> Iterator[ConnectorSession]:
        for tunnel in self.tunnels.values():
            yield from tunnel.sessions
