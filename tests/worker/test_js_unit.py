"""Run the Worker's JavaScript unit tests (node:test, relay/worker/test/) as part of pytest, by
the npm script README.md names (`npm run test:worker`), on the Node wrangler runs on (the venv's,
first on PATH as `source .venv/bin/activate` puts it)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.support.worker_relay import ROOT


def test_node_unit_tests_pass() -> None:
    files = list((ROOT / "relay/worker/test").glob("*.test.js"))
    assert len(files) >= 15, files
    bin_dir = Path(sys.executable).parent  # the venv's bin: its node, npm and npx
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    result = subprocess.run(
        [str(bin_dir / "npm"), "run", "-s", "test:worker"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    # the summary lines of node:test's reporter (spec: "ℹ pass 124"; tap: "# pass 124")
    summary = dict(re.findall(r"^(?:ℹ|#) (pass|fail|cancelled) (\d+)$", result.stdout, re.M))
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert int(summary["pass"]) >= 100, summary  # every topic file ran
    assert summary["fail"] == "0"
