"""Run the Worker's JavaScript unit tests (node:test, relay/worker/test/) as part of pytest."""

from __future__ import annotations

import re
import subprocess

from tests.support.node import NODE
from tests.support.worker_relay import ROOT


def test_node_unit_tests_pass() -> None:
    # The Node that wrangler runs on (the venv's); it takes test files, not a directory.
    files = sorted(
        str(path.relative_to(ROOT)) for path in (ROOT / "relay/worker/test").glob("*.test.js")
    )
    assert len(files) >= 15, files
    result = subprocess.run(
        [str(NODE), "--test", "--test-reporter=tap", *files],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    summary = dict(re.findall(r"^# (pass|fail|cancelled) (\d+)$", result.stdout, re.MULTILINE))
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert int(summary["pass"]) >= 100, summary  # every topic file ran
    assert summary["fail"] == "0"
