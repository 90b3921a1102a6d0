"""`bench.relay_callgrind --concurrency N --syscalls`: N keep-alive clients at once against a real
`edgetds relay serve` of this tree and the bench's minimal connector peer, its system calls
counted by ``strace -c -f`` attached for the measured window."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bench.relay_callgrind import Window, measure

pytestmark = pytest.mark.skipif(
    shutil.which("strace") is None, reason="needs strace (make system-deps installs it)"
)

TREE = Path(__file__).resolve().parents[2]


async def test_concurrent_slots_are_counted_per_query(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    per_query = await measure(
        TREE, tmp_path, Window(count=40, warmup=8, concurrency=4, syscalls=True)
    )
    # every query is at least its request read and its answer written, and far from 1,000 calls
    assert 2 <= per_query < 1000
    top = capsys.readouterr().out
    assert "most frequent:" in top
    assert "sendto" in top or "write" in top
    assert (tmp_path / "strace.out").read_text().rstrip().endswith("total")
