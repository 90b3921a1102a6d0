"""What the report's charts draw, shared by the inline SVG (report.py) and the PNG files
(charts.py): colours, time slices of the latency-over-time chart, its clipped axis, and the
percentile axis of the distribution chart."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["COLORS", "TIME_BINS", "percentile_x", "timeline_bins", "timeline_frame"]

COLORS = {"tunnel": "#1f77b4", "direct": "#2ca02c"}


def percentile_x(pct: float) -> float:
    """The usual HDR percentile axis: x = log10(1 / (1 - percentile)), 0 .. 5 (99.999 %)."""
    return math.log10(1 / max(1 - pct / 100, 1e-5))


#: time slices of the latency-over-time chart (its size does not grow with the query count)
TIME_BINS = 120


def _percentile(sorted_values: Sequence[float], pct: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * pct / 100))]


def timeline_bins(run: Mapping[str, Any], t_max: float) -> list[dict[str, Any]]:
    """The run's sampled queries in ``TIME_BINS`` slices of ``[0, t_max]``: per slice its start
    time, the p50/p99/max latency of the successful queries and the count and median latency of
    the failed ones (slices without queries are left out)."""
    ok: list[list[float]] = [[] for _ in range(TIME_BINS)]
    failed: list[list[float]] = [[] for _ in range(TIME_BINS)]
    for t, ms, success in run["timeline"]:
        index = min(TIME_BINS - 1, int(t / t_max * TIME_BINS)) if t_max > 0 else 0
        (ok if success else failed)[index].append(ms)
    out = []
    for index in range(TIME_BINS):
        good, bad = sorted(ok[index]), sorted(failed[index])
        if not good and not bad:
            continue
        out.append(
            {
                "t": (index + 0.5) * t_max / TIME_BINS,
                "p50": _percentile(good, 50) if good else None,
                "p99": _percentile(good, 99) if good else None,
                "max": good[-1] if good else None,
                "errors": len(bad),
                "error_ms": _percentile(bad, 50) if bad else None,
            }
        )
    return out


def timeline_frame(runs: Mapping[str, Mapping[str, Any]]) -> tuple[float, float, float]:
    """(t_max, y_max, slowest): the y axis stops at 1.15 x the largest p99.9 so one outlier does
    not flatten the plot; ``slowest`` is the largest latency of any run (shown when clipped)."""
    t_max = max((p[0] for run in runs.values() for p in run["timeline"]), default=0.0) or 1.0
    y_max = max(run["latency_ms"]["p99_9"] for run in runs.values()) * 1.15 or 1.0
    slowest = max(run["latency_ms"]["max"] for run in runs.values())
    return t_max, y_max, slowest
