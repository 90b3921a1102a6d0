"""PNG charts beside report.html: ``timeline.png`` and ``distribution.png``, for slides and tickets
that take images rather than HTML. They show what the report's inline SVG shows (same time slices,
same clipped axis and the same caption when it clips).

matplotlib is an optional dependency (``pip install 'edgetds[charts]'``; the dev install has it,
the single-file binary leaves it out): without it `write_png_charts` returns None and the report
says how to get the charts.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edgetds.loadtest.plotdata import COLORS, percentile_x, timeline_bins, timeline_frame

__all__ = ["write_png_charts"]

PERCENTILE_TICKS = [(0, "0%"), (1, "90%"), (2, "99%"), (3, "99.9%"), (4, "99.99%"), (5, "max")]


def write_png_charts(out: Path, doc: Mapping[str, Any]) -> list[Path] | None:
    """Write the PNG charts of a results document into ``out``; None when matplotlib is missing."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return None
    runs = doc["runs"]
    written = []
    if any(run["timeline"] for run in runs.values()):
        fig = Figure(figsize=(9, 3.8), dpi=100, layout="constrained")
        _timeline(fig, runs)
        written.append(out / "timeline.png")
        fig.savefig(written[-1], format="png")
    if any(run["distribution"] for run in runs.values()):
        fig = Figure(figsize=(9, 3.8), dpi=100, layout="constrained")
        _distribution(fig, runs)
        written.append(out / "distribution.png")
        fig.savefig(written[-1], format="png")
    return written


def _timeline(fig: Any, runs: Mapping[str, Mapping[str, Any]]) -> None:
    t_max, y_max, slowest = timeline_frame(runs)
    ax = fig.add_subplot()
    clipped = 0
    for name, run in runs.items():
        color = COLORS.get(name, "#555")
        bins = timeline_bins(run, t_max)
        for key, style in (("p50", "-"), ("p99", "--")):
            drawn = [b for b in bins if b[key] is not None]
            if drawn:
                xs, ys = [b["t"] for b in drawn], [min(b[key], y_max) for b in drawn]
                ax.plot(xs, ys, style, color=color, label=f"{name} {key}", linewidth=1.5)
        over = [b["t"] for b in bins if b["max"] is not None and b["max"] > y_max]
        clipped += len(over)
        if over:
            ax.plot(over, [y_max] * len(over), "^", color=color, markersize=5, clip_on=False)
        failed = [b for b in bins if b["errors"]]
        if failed:
            xs, ys = [b["t"] for b in failed], [min(b["error_ms"], y_max) for b in failed]
            ax.plot(xs, ys, "x", color="#d62728", label=f"{name} failed")
    ax.set_xlim(0, t_max)
    ax.set_ylim(0, y_max)
    ax.set_xlabel("time since start (s)")
    ax.set_ylabel("latency (ms)")
    title = "latency over time"
    if clipped:
        title += f" (axis clipped at {y_max:.3g} ms; slowest {slowest:.3g} ms)"
    ax.set_title(title, fontsize=10)
    ax.grid(color="#eee")
    ax.legend(fontsize=8, loc="upper left")


def _distribution(fig: Any, runs: Mapping[str, Mapping[str, Any]]) -> None:
    ax = fig.add_subplot()
    for name, run in runs.items():
        if run["distribution"]:
            xs = [percentile_x(p) for p, _ in run["distribution"]]
            ys = [ms for _, ms in run["distribution"]]
            ax.plot(xs, ys, color=COLORS.get(name, "#555"), label=name, linewidth=2)
    ax.set_xticks([x for x, _ in PERCENTILE_TICKS], [label for _, label in PERCENTILE_TICKS])
    ax.set_xlim(0, 5)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("percentile")
    ax.set_ylabel("latency (ms)")
    ax.set_title("latency distribution", fontsize=10)
    ax.grid(color="#eee")
    ax.legend(fontsize=8, loc="upper left")
