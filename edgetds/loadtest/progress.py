"""Live progress of a load test: a rich panel on a terminal, a plain line every few seconds else.

The display reads `Recorder.snapshot()` from its own Trio task; it never slows the virtual users
down beyond that (rendering happens at most 4 times a second).
"""

from __future__ import annotations

import sys
from typing import TextIO

import trio

from edgetds.loadtest.stats import Recorder, Snapshot

__all__ = ["show_progress"]


def format_line(target: str, snap: Snapshot) -> str:
    return (
        f"[{target}] {snap.elapsed_s:6.1f}s  {snap.count} queries  {snap.qps:8.1f} q/s  "
        f"errors {snap.errors}  p50 {snap.p50_ms:.2f} ms  p99 {snap.p99_ms:.2f} ms  "
        f"rows {snap.rows}"
    )


def _table(target: str, snap: Snapshot):  # type: ignore[no-untyped-def]
    from rich.table import Table

    table = Table(title=f"edgetds loadtest: {target}", show_header=True)
    for col in ("elapsed", "queries", "q/s", "errors", "p50 ms", "p99 ms", "rows"):
        table.add_column(col, justify="right")
    table.add_row(
        f"{snap.elapsed_s:.1f}s",
        str(snap.count),
        f"{snap.qps:.1f}",
        f"[red]{snap.errors}[/red]" if snap.errors else "0",
        f"{snap.p50_ms:.2f}",
        f"{snap.p99_ms:.2f}",
        str(snap.rows),
    )
    return table


async def show_progress(
    recorder: Recorder,
    *,
    live: bool | None = None,
    interval_s: float = 5.0,
    stream: TextIO | None = None,
) -> None:
    """Show progress until cancelled. ``live=None``: rich when ``stream`` is a terminal."""
    stream = stream or sys.stdout
    if live is None:
        live = stream.isatty()
    if not live:
        while True:
            await trio.sleep(interval_s)
            print(format_line(recorder.target, recorder.snapshot()), file=stream, flush=True)
    from rich.console import Console
    from rich.live import Live

    console = Console(file=stream)
    with Live(console=console, auto_refresh=False, transient=False) as display:
        try:
            while True:
                display.update(_table(recorder.target, recorder.snapshot()), refresh=True)
                await trio.sleep(0.25)
        finally:
            display.update(_table(recorder.target, recorder.snapshot()), refresh=True)
