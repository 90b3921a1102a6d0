"""What the tunnel and the query service report to metrics, and the sink that records nothing.

`connector.ops.Ops` is the Prometheus implementation the runtime installs; until then (and in
tests that do not observe metrics) a link and the service report to `NO_METRICS`, so the call
sites never check for a missing sink.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["NO_METRICS", "Metrics", "NoMetrics"]


class Metrics(Protocol):
    """The events the connector's I/O layers report (every method cheap, never raising)."""

    def connection_up(self, relay_url: str) -> None: ...

    def connection_down(self, relay_url: str, reason: str) -> None: ...

    def query_started(self) -> None: ...

    def query_finished(
        self, *, role: str | None, outcome: str, duration_s: float, rows: int, nbytes: int
    ) -> None: ...

    def frame_sent(self, nbytes: int, frames: int = 1) -> None: ...

    def frame_received(self, nbytes: int, frames: int = 1) -> None: ...

    def backpressure_stall(self) -> None: ...

    def session_opened(self) -> None: ...

    def session_ended(self, reason: str) -> None: ...


class NoMetrics:
    """A `Metrics` that records nothing."""

    def connection_up(self, relay_url: str) -> None:
        pass

    def connection_down(self, relay_url: str, reason: str) -> None:
        pass

    def query_started(self) -> None:
        pass

    def query_finished(
        self, *, role: str | None, outcome: str, duration_s: float, rows: int, nbytes: int
    ) -> None:
        pass

    def frame_sent(self, nbytes: int, frames: int = 1) -> None:
        pass

    def frame_received(self, nbytes: int, frames: int = 1) -> None:
        pass

    def backpressure_stall(self) -> None:
        pass

    def session_opened(self) -> None:
        pass

    def session_ended(self, reason: str) -> None:
        pass


#: The shared do-nothing sink.
NO_METRICS: Metrics = NoMetrics()
