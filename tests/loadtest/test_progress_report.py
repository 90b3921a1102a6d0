"""Progress output (plain lines off a terminal, a rich table on one) and the report files."""

from __future__ import annotations

import io
import json
from pathlib import Path

import trio

from edgetds.loadtest.progress import show_progress
from edgetds.loadtest.report import write_report
from edgetds.loadtest.stats import Outcome, Recorder


def recorder_with(n: int, target: str = "tunnel") -> Recorder:
    rec = Recorder(target, seed=1, clock=lambda: 1.0)  # the run ends 1 s after it started
    for i in range(n):
        code = None if i % 4 else "sql.error"
        rec.record("q", rec.started + i * 0.001, rec.started + i * 0.001 + 0.002 + i * 1e-5,
                   Outcome(code, rows=3, nbytes=30))  # fmt: skip
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
