"""Write a load test's results: ``results.json`` and a self-contained ``report.html``.

results.json::

    {"version": 1, "scenario": "...", "runs": {"tunnel": {...}, "direct": {...}},
     "comparison": {"tunnel_over_direct": {"p50": 1.8, ..., "throughput": 0.93}} | null}

Each run holds count/ok/errors/errors_by_code, rows, bytes, throughput_qps, rows_per_s,
latency_ms {p50, p90, p99, p99_9, max, min, mean}, by_query, the distribution and a sampled
timeline. The HTML report draws the latency over time (in `TIME_BINS` time slices, so its size
does not grow with the number of queries) and the latency distribution as inline SVG (no
JavaScript, no external CSS or fonts), so it can be mailed or attached to a ticket as is; with
matplotlib installed the same charts are also written beside it as PNG files (charts.py).
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from edgetds.loadtest.charts import write_png_charts
from edgetds.loadtest.plotdata import COLORS, percentile_x, timeline_bins, timeline_frame
from edgetds.loadtest.stats import RunResult

__all__ = ["compare", "write_report"]

RATIO_KEYS = ("p50", "p90", "p99", "p99_9", "max")


def compare(tunnel: RunResult, direct: RunResult) -> dict[str, float | None]:
    """Tunnel over direct: latency ratios (>1 = slower) and throughput ratio (<1 = fewer q/s)."""

    def ratio(a: float, b: float) -> float | None:
        return round(a / b, 3) if b > 0 else None

    out = {k: ratio(tunnel.latency_ms[k], direct.latency_ms[k]) for k in RATIO_KEYS}
    out["throughput"] = ratio(tunnel.throughput_qps, direct.throughput_qps)
    out["rows_per_s"] = ratio(tunnel.rows_per_s, direct.rows_per_s)
    out["added_p50_ms"] = round(tunnel.latency_ms["p50"] - direct.latency_ms["p50"], 3)
    out["added_p99_ms"] = round(tunnel.latency_ms["p99"] - direct.latency_ms["p99"], 3)
    return out


def results_document(scenario: str, runs: Mapping[str, RunResult]) -> dict[str, Any]:
    comparison = None
    if "tunnel" in runs and "direct" in runs:
        comparison = {"tunnel_over_direct": compare(runs["tunnel"], runs["direct"])}
    return {
        "version": 1,
        "scenario": scenario,
        "runs": {name: run.as_json() for name, run in runs.items()},
        "comparison": comparison,
    }


def write_report(out_dir: str | Path, scenario: str, runs: Mapping[str, RunResult]) -> list[Path]:
    """Write results.json, report.html and (with matplotlib) timeline.png and distribution.png
    into ``out_dir`` (created); returns the files written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    doc = results_document(scenario, runs)
    (out / "results.json").write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    charts = write_png_charts(out, doc)
    (out / "report.html").write_text(render_html(doc, charts=charts), encoding="utf-8")
    return [out / "results.json", out / "report.html", *(charts or [])]


# ----------------------------------------------------------------------------------------- SVG

W, H, LEFT, RIGHT, TOP, BOTTOM = 720, 300, 60, 20, 20, 45


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        hi = lo + 1
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw), default=raw)
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step) + 1)]


def _fmt(v: float) -> str:
    return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"


def _axes(
    x_ticks: Sequence[tuple[float, str]],
    y_ticks: Sequence[float],
    sx: Any,
    sy: Any,
    labels: tuple[str, str],
) -> list[str]:
    parts = [
        f'<rect x="{LEFT}" y="{TOP}" width="{W - LEFT - RIGHT}" height="{H - TOP - BOTTOM}" '
        'fill="none" stroke="#999"/>'
    ]
    for y in y_ticks:
        py = sy(y)
        parts.append(
            f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{py:.1f}" y2="{py:.1f}" stroke="#eee"/>'
            f'<text x="{LEFT - 6}" y="{py + 4:.1f}" text-anchor="end">{_fmt(y)}</text>'
        )
    for x, label in x_ticks:
        px = sx(x)
        parts.append(
            f'<line x1="{px:.1f}" x2="{px:.1f}" y1="{TOP}" y2="{H - BOTTOM}" stroke="#eee"/>'
            f'<text x="{px:.1f}" y="{H - BOTTOM + 16}" text-anchor="middle">'
            f"{html.escape(label)}</text>"
        )
    parts.append(
        f'<text x="{(LEFT + W - RIGHT) / 2}" y="{H - 6}" text-anchor="middle">{labels[0]}</text>'
        f'<text transform="translate(14,{(TOP + H - BOTTOM) / 2}) rotate(-90)" '
        f'text-anchor="middle">{labels[1]}</text>'
    )
    return parts


def _svg(parts: list[str], title: str) -> str:
    body = "\n".join(parts)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="{W}" height="{H}" '
        f'font-family="sans-serif" font-size="11" role="img" aria-label="{html.escape(title)}">'
        f"<title>{html.escape(title)}</title>\n{body}\n</svg>"
    )


def _scale(lo: float, hi: float, a: float, b: float) -> Any:
    span = (hi - lo) or 1.0
    return lambda v: a + (v - lo) / span * (b - a)


def timeline_svg(runs: Mapping[str, Mapping[str, Any]]) -> str:
    """Latency over time in time slices: p50 (solid) and p99 (dashed) of the successful queries,
    failed queries as red crosses, and a triangle at the top of every slice whose slowest query
    is above the axis (with a caption naming the slowest latency)."""
    if not any(run["timeline"] for run in runs.values()):
        return "<p>No queries were recorded.</p>"
    t_max, y_max, slowest = timeline_frame(runs)
    sx, sy = _scale(0, t_max, LEFT, W - RIGHT), _scale(0, y_max, H - BOTTOM, TOP)
    x_ticks = [(t, _fmt(t)) for t in _nice_ticks(0, t_max)]
    parts = _axes(x_ticks, _nice_ticks(0, y_max), sx, sy, ("time since start (s)", "latency (ms)"))
    clipped = 0
    for name, run in runs.items():
        color = COLORS.get(name, "#555")
        bins = timeline_bins(run, t_max)
        for key, dash in (("p50", ""), ("p99", ' stroke-dasharray="4,3"')):
            points = " ".join(
                f"{sx(b['t']):.1f},{sy(min(b[key], y_max)):.1f}" for b in bins if b[key] is not None
            )
            if points:
                parts.append(
                    f'<polyline points="{points}" fill="none" stroke="{color}" '
                    f'stroke-width="1.5"{dash}/>'
                )
        for b in bins:
            px = sx(b["t"])
            if b["max"] is not None and b["max"] > y_max:
                clipped += 1
                parts.append(
                    f'<path d="M{px - 3:.1f},{TOP + 6}l3,-6l3,6z" fill="{color}">'
                    f"<title>slowest {_fmt(b['max'])} ms</title></path>"
                )
            if b["errors"]:
                py = sy(min(b["error_ms"], y_max))
                parts.append(
                    f'<path d="M{px - 3:.1f},{py - 3:.1f}l6,6m0,-6l-6,6" stroke="#d62728">'
                    f"<title>{b['errors']} failed</title></path>"
                )
    parts += _legend(runs)
    svg = _svg(parts, "latency over time")
    caption = (
        "Lines: p50 (solid) and p99 (dashed) of successful queries per time slice; red crosses: "
        "failed queries."
    )
    if clipped:
        caption += (
            f" The axis stops at {_fmt(y_max)} ms: {clipped} slice(s) had slower queries "
            f"(triangles; slowest {_fmt(slowest)} ms)."
        )
    return f"{svg}\n<p>{html.escape(caption)}</p>"


def _legend(runs: Mapping[str, Any]) -> list[str]:
    parts = []
    for i, name in enumerate(runs):
        x = LEFT + 10 + i * 110
        parts.append(
            f'<rect x="{x}" y="{TOP + 6}" width="10" height="10" '
            f'fill="{COLORS.get(name, "#555")}"/>'
            f'<text x="{x + 14}" y="{TOP + 15}">{html.escape(name)}</text>'
        )
    return parts


def distribution_svg(runs: Mapping[str, Mapping[str, Any]]) -> str:
    """Latency by percentile on the usual HDR axis (x = 1 / (1 - percentile), log scale)."""

    series = {name: run["distribution"] for name, run in runs.items() if run["distribution"]}
    if not series:
        return "<p>No queries were recorded.</p>"
    y_max = max(ms for pts in series.values() for _, ms in pts) * 1.1 or 1.0
    sx, sy = _scale(0, 5, LEFT, W - RIGHT), _scale(0, y_max, H - BOTTOM, TOP)
    labels = [(0, "0%"), (1, "90%"), (2, "99%"), (3, "99.9%"), (4, "99.99%"), (5, "max")]
    parts = _axes(labels, _nice_ticks(0, y_max), sx, sy, ("percentile", "latency (ms)"))
    for name, pts in series.items():
        path = " ".join(f"{sx(percentile_x(p)):.1f},{sy(ms):.1f}" for p, ms in pts)
        color = COLORS.get(name, "#555")
        parts.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"/>')
    parts += _legend(series)
    return _svg(parts, "latency distribution")


# ---------------------------------------------------------------------------------------- HTML

CSS = """
body { font-family: sans-serif; margin: 2em; color: #222; max-width: 60em; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.bad { color: #b00; font-weight: bold; }
"""


def _row(cells: Sequence[Any], header: bool = False) -> str:
    tag = "th" if header else "td"
    return "<tr>" + "".join(f"<{tag}>{html.escape(str(c))}</{tag}>" for c in cells) + "</tr>"


def _summary_table(runs: Mapping[str, Mapping[str, Any]]) -> str:
    names = list(runs)
    rows = [_row(["", *names], header=True)]
    fields: list[tuple[str, Callable[[Mapping[str, Any]], Any]]] = [
        ("queries", lambda r: r["count"]),
        ("ok", lambda r: r["ok"]),
        ("errors", lambda r: r["errors"]),
        ("throughput (queries/s)", lambda r: r["throughput_qps"]),
        ("rows", lambda r: r["rows"]),
        ("rows/s", lambda r: r["rows_per_s"]),
        ("bytes received", lambda r: r["bytes"] if r["target"] == "tunnel" else "n/a"),
        ("duration (s)", lambda r: r["duration_s"]),
        ("concurrency", lambda r: r.get("concurrency", "")),
        ("target rate (queries/s)", lambda r: r.get("rate") or "closed loop"),
    ]
    for label, get in fields:
        rows.append(_row([label, *(get(runs[n]) for n in names)]))
    for key in ("p50", "p90", "p99", "p99_9", "max", "mean"):
        rows.append(_row([f"latency {key} (ms)", *(runs[n]["latency_ms"][key] for n in names)]))
    return "<table>" + "".join(rows) + "</table>"


def _errors_table(runs: Mapping[str, Mapping[str, Any]]) -> str:
    codes = sorted({c for r in runs.values() for c in r["errors_by_code"]})
    if not codes:
        return "<p>No errors.</p>"
    rows = [_row(["error code", *runs, "sample message"], header=True)]
    for code in codes:
        sample = next(
            (r["error_samples"][code] for r in runs.values() if code in r.get("error_samples", {})),
            "",
        )
        rows.append(
            _row([code, *(r["errors_by_code"].get(code, 0) for r in runs.values()), sample])
        )
    return '<table class="bad">' + "".join(rows) + "</table>"


def _queries_table(run: Mapping[str, Any]) -> str:
    rows = [_row(["query", "count", "errors", "p50 ms", "p99 ms", "max ms"], header=True)]
    for name, q in run["by_query"].items():
        rows.append(_row([name, q["count"], q["errors"], q["p50"], q["p99"], q["max"]]))
    return "<table>" + "".join(rows) + "</table>"


def render_html(doc: Mapping[str, Any], *, charts: list[Path] | None = None) -> str:
    """The report page; ``charts`` are the PNG files written beside it (None: matplotlib is not
    installed, and the page says how to get them)."""
    runs = doc["runs"]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>edgetds load test: {html.escape(doc['scenario'])}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>edgetds load test: {html.escape(doc['scenario'])}</h1>",
        "<h2>Summary</h2>",
        _summary_table(runs),
    ]
    comparison = doc.get("comparison")
    if comparison:
        ratios = comparison["tunnel_over_direct"]
        parts += [
            "<h2>Tunnel over direct</h2>",
            "<p>Latency ratios above 1 and a throughput ratio below 1 are the tunnel's cost "
            "(relay + connector + HTTP) over python-tds straight to the database, same scenario, "
            "same concurrency, measured in this run.</p>",
            "<table>"
            + _row(["ratio", "value"], header=True)
            + "".join(_row([k, "n/a" if v is None else v]) for k, v in ratios.items())
            + "</table>",
        ]
    parts += [
        "<h2>Errors by code</h2>",
        _errors_table(runs),
        "<h2>Latency over time</h2>",
        timeline_svg(runs),
        "<h2>Latency distribution</h2>",
        distribution_svg(runs),
    ]
    if charts is None:
        parts.append(
            "<p>PNG copies of these charts need matplotlib: "
            "<code>pip install 'edgetds[charts]'</code>.</p>"
        )
    elif charts:
        names = ", ".join(html.escape(path.name) for path in charts)
        parts.append(f"<p>The same charts as PNG files beside this page: {names}.</p>")
    for name, run in runs.items():
        parts += [f"<h2>Queries ({html.escape(name)})</h2>", _queries_table(run)]
    parts.append("</body></html>\n")
    return "\n".join(parts)
