"""Helpers for tests that run an `edgetds ... serve` command (or a README's shell commands) as a
real process."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO

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


class OutputLines:
    """A process's output stream, read line by line by a task of the caller's nursery, so a test
    waits for a line (an event), never for time.

        lines = OutputLines()
        nursery.start_soon(lines.read_from, process.stderr)
        await lines.wait_for(lambda line: "ready" in line)
    """

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.ended = False
        self._changed = trio.Event()

    async def read_from(self, stream: trio.abc.ReceiveStream) -> None:
        pending = b""
        try:
            while chunk := await stream.receive_some():
                *complete, pending = (pending + chunk).split(b"\n")
                self.lines += [line.decode(errors="replace") for line in complete]
                self._notify()
        finally:
            if pending:
                self.lines.append(pending.decode(errors="replace"))
            self.ended = True
            self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for(self, accept: Callable[[str], bool], count: int = 1) -> list[str]:
        """The lines ``accept`` takes, once there are ``count`` of them.

        Raises:
            AssertionError: the stream ended first.
        """
        while True:
            taken = [line for line in self.lines if accept(line)]
            if len(taken) >= count:
                return taken
            if self.ended:
                raise AssertionError("the output ended first:\n" + "\n".join(self.lines[-30:]))
            await self._changed.wait()

    async def wait_ended(self) -> list[str]:
        """Every line, once the stream ended."""
        while not self.ended:
            await self._changed.wait()
        return self.lines


async def stop_processes(
    processes: Sequence[trio.Process], logs: Sequence[IO[bytes]] = (), *, grace_s: float = 20
) -> None:
    """SIGTERM every process, give them ``grace_s`` together to exit, SIGKILL what is left, and
    close their log files."""
    for process in processes:
        process.terminate()
    with trio.move_on_after(grace_s):
        for process in processes:
            await process.wait()
    for process in processes:
        if process.returncode is None:
            process.kill()
    for log in logs:
        log.close()
