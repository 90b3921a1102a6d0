"""Progress output (plain lines off a terminal, a rich table on one) and the report files."""

from __future__ import annotations

import io
import json
import struct
import sys
from pathlib import Path

import pytest
import trio

from edgetds.loadtest.progress import show_progress
from edgetds.loadtest.report import write_report
from edgetds.loadtest.stats import QueryOutcome, Recorder


def recorder_with(n: int, target: str = "tunnel") -> Recorder:
    rec = Recorder(target, seed=1, clock=lambda: 1.0)  # the run ends 1 s after it started
    for i in range(n):
        code = None if i % 4 else "sql.error"
        rec.record("q", rec.started + i * 0.001, rec.started + i * 0.001 + 0.002 + i * 1e-5,
                   QueryOutcome(code, rows=3, nbytes=30))  # fmt: skip
    rec.finish()
    return rec


async def test_plain_progress_lines_off_a_terminal(autojump_clock: trio.testing.MockClock) -> None:
    out = io.StringIO()  # not a TTY: live=None picks plain lines
    rec = recorder_with(8)
    with trio.move_on_after(0.35):
        await show_progress(rec, interval_s=0.1, stream=out)
    lines = out.getvalue().splitlines()
    assert len(lines) >= 2
    assert "[tunnel]" in lines[0]
    assert "8 queries" in lines[0]
    assert "errors 2" in lines[0]


async def test_rich_progress_renders_a_table(autojump_clock: trio.testing.MockClock) -> None:
    out = io.StringIO()
    with trio.move_on_after(0.3):
        await show_progress(recorder_with(5), live=True, stream=out)
    text = out.getvalue()
    assert "edgetds loadtest: tunnel" in text
    assert "p99 ms" in text


def test_report_files_with_comparison(tmp_path: Path) -> None:
    runs = {
        "tunnel": recorder_with(40).result(concurrency=2),
        "direct": recorder_with(40, "direct").result(concurrency=2),
    }
    write_report(tmp_path, "unit", runs)
    doc = json.loads((tmp_path / "results.json").read_text())
    tunnel = doc["runs"]["tunnel"]
    assert tunnel["count"] == 40
    assert tunnel["ok"] + tunnel["errors"] == 40
    assert tunnel["errors_by_code"] == {"sql.error": 10}
    assert tunnel["rows"] == 120
    assert tunnel["concurrency"] == 2
    assert doc["comparison"]["tunnel_over_direct"]["p50"] == 1.0
    page = (tmp_path / "report.html").read_text()
    assert page.count("<svg") == 2
    assert "sql.error" in page
    assert "<script" not in page


def test_report_size_does_not_grow_with_the_queries(tmp_path: Path) -> None:
    """17,000 queries (the timeline keeps them all) draw no more than a few hundred shapes."""
    rec = recorder_with(17_000)
    write_report(tmp_path, "many", {"tunnel": rec.result()})
    page = (tmp_path / "report.html").read_text()
    assert len(page) < 120_000, len(page)
    assert "<circle" not in page
    svg = page[page.index("<svg") : page.index("</svg>")]
    assert svg.count("<path") + svg.count("<polyline") <= 2 * 120 + 4


def test_an_outlier_above_the_axis_is_shown_not_hidden(tmp_path: Path) -> None:
    rec = Recorder("tunnel", seed=1, clock=lambda: 0.0)
    for i in range(2000):
        latency = 5.0 if i == 1000 else 0.002  # one query of 5 s among 2 ms ones
        rec.record(
            "q", rec.started + i * 0.001, rec.started + i * 0.001 + latency, QueryOutcome(None)
        )
    rec.finish()
    write_report(tmp_path, "outlier", {"tunnel": rec.result()})
    page = (tmp_path / "report.html").read_text()
    assert "1 slice(s) had slower queries" in page
    assert "slowest 5" in page  # 5,000 ms (HDR precision) named in the caption
    assert "<title>slowest" in page


def test_error_samples_reach_results_and_report(tmp_path: Path) -> None:
    rec = Recorder("tunnel", seed=1, clock=lambda: 0.0)
    for i, (code, message) in enumerate(
        [("auth.expired", "the token expired 600 s ago; get a new one"), ("auth.expired", "2nd")]
        + [("sql.error", "Invalid object name 'nope'.")]
    ):
        rec.record(
            "q", rec.started + i, rec.started + i + 0.01, QueryOutcome(code, message=message)
        )
    rec.finish()
    write_report(tmp_path, "errors", {"tunnel": rec.result()})
    doc = json.loads((tmp_path / "results.json").read_text())
    assert doc["runs"]["tunnel"]["error_samples"] == {
        "auth.expired": "the token expired 600 s ago; get a new one",  # the first one is kept
        "sql.error": "Invalid object name 'nope'.",
    }
    page = (tmp_path / "report.html").read_text()
    assert "the token expired 600 s ago; get a new one" in page
    assert "Invalid object name &#x27;nope&#x27;." in page  # escaped


def test_png_charts_beside_the_report(tmp_path: Path) -> None:
    written = write_report(tmp_path, "png", {"tunnel": recorder_with(500).result()})
    assert [p.name for p in written] == [
        "results.json",
        "report.html",
        "timeline.png",
        "distribution.png",
    ]
    for name in ("timeline.png", "distribution.png"):
        data = (tmp_path / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        width, height = struct.unpack(">II", data[16:24])  # IHDR
        assert (width, height) == (900, 380)
    assert "timeline.png, distribution.png" in (tmp_path / "report.html").read_text()


def test_without_matplotlib_the_report_says_how_to_get_pngs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # as if not installed
    written = write_report(tmp_path, "no png", {"tunnel": recorder_with(50).result()})
    assert [p.name for p in written] == ["results.json", "report.html"]
    assert "pip install 'edgetds[charts]'" in (tmp_path / "report.html").read_text()
