"""Helpers for tests that run an `edgetds ... serve` command as a real process."""

from __future__ import annotations

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
