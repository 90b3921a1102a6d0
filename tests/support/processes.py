"""Helpers for tests that run an `edgetds ... serve` command (or a README's shell commands) as a
real process."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Mapping
from pathlib import Path

import trio


async def first_line(process: trio.Process) -> str:
    """The first line the process prints on stdout (every serve command prints its address
    first); read byte by byte so nothing after it is consumed."""
    assert process.stdout is not None, "start the process with stdout=subprocess.PIPE"
    line = b""
    while not line.endswith(b"\n"):
        chunk = await process.stdout.receive_some(1)
        if not chunk:
            raise AssertionError(f"the process ended its stdout before a line: {line!r}")
        line += chunk
    return line.decode().strip()


def alive(pid: int) -> bool:
    """Is process ``pid`` running? A zombie (ended, not yet reaped) is not."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


async def bash(
    script: str, *, env: Mapping[str, str], cwd: Path, stdin: bytes = b""
) -> subprocess.CompletedProcess[bytes]:
    """``script`` run by ``bash -euo pipefail`` (a failing command stops it), output captured;
    at most 120 s."""
    with trio.fail_after(120):
        return await trio.run_process(
            ["bash", "-euo", "pipefail", "-c", script],
            stdin=stdin,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            cwd=cwd,
            env=env,
        )


async def kill_group(process: trio.Process) -> None:
    """SIGKILL ``process`` and every process of its group (it was started with
    ``start_new_session=True``: npm -> node -> workerd, ...), and reap it."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:  # pragma: no cover - already gone
        pass
    with trio.CancelScope(shield=True):
        await process.wait()
