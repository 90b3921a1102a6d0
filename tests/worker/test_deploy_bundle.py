"""The deploy artifacts: ``wrangler deploy --dry-run`` bundles the relay Worker and
examples/worker-app from the very wrangler.toml files users deploy, with the pinned wrangler on the
venv's Node (tests/support/wrangler.py). Any wrangler error or warning fails the test (a warning is
a config key wrangler ignores, a binding it cannot resolve, a compatibility date it refuses...), and
the compressed bundle must stay under the Workers size limit.

Limit: Cloudflare's Workers limits page gives a Worker's size after compression as 3 MB on the
Free plan and 10 MB on the Paid plan; the check holds the stricter (Free) one, in bytes.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from tests.support.worker_relay import ROOT
from tests.support.wrangler import NODE, WRANGLER, dry_run

#: Workers Free plan: a Worker's size after compression (gzip), the smaller of the two plans.
WORKER_SIZE_LIMIT_GZIP = 3_000_000

WORKERS = {"relay": ROOT / "relay" / "worker", "worker-app": ROOT / "examples" / "worker-app"}

if not NODE.exists() or not WRANGLER.exists():  # pragma: no cover
    pytest.fail("node/wrangler missing: run `make deps` (venv Node, then npm ci)", pytrace=False)


@pytest.mark.parametrize("name", sorted(WORKERS))
def test_wrangler_dry_run_bundles_without_warnings_under_the_size_limit(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    result = dry_run(WORKERS[name], out)
    assert result.returncode == 0, result.output
    assert result.problems == [], result.output
    assert result.gzip_kib is not None, result.output  # wrangler reported the upload size
    bundle = (out / "index.js").read_bytes()
    compressed = len(gzip.compress(bundle, compresslevel=9))
    with capsys.disabled():
        print(
            f"\n{name}: wrangler upload {result.upload_kib} KiB / gzip {result.gzip_kib} KiB;"
            f" index.js {len(bundle)} B, gzip {compressed} B"
            f" (limit {WORKER_SIZE_LIMIT_GZIP} B after compression)"
        )
    assert result.gzip_kib * 1024 < WORKER_SIZE_LIMIT_GZIP
    assert compressed < WORKER_SIZE_LIMIT_GZIP


def test_a_wrangler_warning_fails_the_check(tmp_path: Path) -> None:
    """The check above sees warnings: a key wrangler does not know is reported, not ignored."""
    app = WORKERS["worker-app"]
    config = tmp_path / "wrangler.toml"
    top_level = f'main = "{app / "src" / "index.js"}"\nnot_a_wrangler_key = 1'
    config.write_text(
        (app / "wrangler.toml").read_text().replace('main = "src/index.js"', top_level)
    )
    result = dry_run(app, tmp_path / "out", config=config)
    assert result.returncode == 0  # wrangler itself goes on: only the check catches it
    assert any("[WARNING]" in line for line in result.problems), result.output
    assert 'Unexpected fields found in top-level field: "not_a_wrangler_key"' in result.output
