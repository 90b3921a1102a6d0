"""The periodic info summary that stands in for per-query info lines.

Per-query lines are debug; a process that serves queries feeds `QuerySummary.record` and runs
`QuerySummary.run`, which logs one line per interval::

    {"event": "queries.summary", "interval_s": 60, "queries": 2517, "errors": 3,
     "errors_by_code": {"query.timeout": 3}, "p50_ms": 4.1, "p99_ms": 38.0, ...}

and nothing for an interval without queries. Latencies are the elapsed times the caller already
measured; at most `max_samples` are kept per interval (a uniform sample beyond that), so memory
stays bounded under any load.
"""

from __future__ import annotations

import logging
import math
import random
from collections import Counter
from typing import Any

__all__ = ["QuerySummary"]


def _percentile(ordered: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an ascending list (not empty)."""
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


class QuerySummary:
    """Queries, errors by code and p50/p99 latency since the last summary line."""

    def __init__(
        self,
        logger: logging.Logger,
        *,
        event: str = "queries.summary",
        max_samples: int = 100_000,
    ) -> None:
        self._log = logger
        self._event = event
        self._max_samples = max_samples
        self._queries = 0
        self._errors: Counter[str] = Counter()
        self._samples: list[float] = []
        self._random = random.Random(0)

    def record(self, elapsed_ms: float, *, error: str | None = None) -> None:
        """One query ended (``error``: its error code, None when it succeeded)."""
        self._queries += 1
        if error is not None:
            self._errors[error] += 1
        if len(self._samples) < self._max_samples:
            self._samples.append(elapsed_ms)
        else:  # reservoir sampling: every query equally likely to be among the samples
            slot = self._random.randrange(self._queries)
            if slot < self._max_samples:
                self._samples[slot] = elapsed_ms

    def flush(self, interval_s: float) -> dict[str, Any] | None:
        """Log the summary of the queries since the last flush and start over; None (and no
        line) when there were none."""
        if not self._queries:
            return None
        ordered = sorted(self._samples)
        fields: dict[str, Any] = {
            "event": self._event,
            "interval_s": interval_s,
            "queries": self._queries,
            "errors": sum(self._errors.values()),
            "errors_by_code": dict(sorted(self._errors.items())),
            "p50_ms": round(_percentile(ordered, 0.50), 1),
            "p99_ms": round(_percentile(ordered, 0.99), 1),
        }
        self._queries = 0
        self._errors.clear()
        self._samples = []
        self._log.info(self._event, extra={"fields": fields})
        return fields

    async def run(self, interval_s: float) -> None:
        """Log a summary every ``interval_s`` seconds, forever (0 or less: never)."""
        import trio  # here: the CLIs import this package for their flags, and start fast

        if interval_s <= 0:
            return
        while True:
            await trio.sleep(interval_s)
            self.flush(interval_s)
