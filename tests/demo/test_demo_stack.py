"""PartGroup, in process: a stop signal that lands while a part is being forked is not lost."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import pytest

from edgetds._demo_stack import STOP_SIGNALS, Layout, PartGroup

#: When set, the at-fork hook below sends SIGINT to this process's main thread from inside the
#: fork, which is where a real Ctrl-C was lost (Python runs at-fork hooks in the parent right
#: after fork()). To the main thread, not the process: the demo forks its parts from its only
#: thread, where a Ctrl-C can land nowhere else, but a process-directed signal here may be taken
#: by any thread of the test run that does not block it (threads left by earlier tests), and
#: Python then raises KeyboardInterrupt in the main thread at once, whatever its mask.
_interrupt_next_fork: list[bool] = []


def _send_sigint_in_parent_after_fork() -> None:
    if _interrupt_next_fork:
        _interrupt_next_fork.clear()
        signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)


os.register_at_fork(after_in_parent=_send_sigint_in_parent_after_fork)


def test_a_ctrl_c_during_the_fork_stops_the_demo_and_the_new_part_is_in_the_group(
    tmp_path: Path,
) -> None:
    layout = Layout(tmp_path)
    layout.logs_dir.mkdir(parents=True)
    group = PartGroup(layout)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        _interrupt_next_fork.append(True)
        with pytest.raises(KeyboardInterrupt):
            group.start(
                "idp",
                "the dev IdP",
                ["dev-idp", "serve", "--port", "0", "--key-dir", str(tmp_path / "idp")],
            )
        # the interrupt came after the part was recorded, so the stop that follows stops it too
        assert [part.name for part in group.parts] == ["idp"]
        assert layout.pids_file.read_text().split() == ["idp", str(group.parts[0].process.pid)]
        assert group.stop_all(grace_s=10) == []
        assert group.parts[0].process.returncode is not None
    finally:
        signal.signal(signal.SIGINT, previous)
        _interrupt_next_fork.clear()
        for part in group.parts:
            if part.process.poll() is None:
                part.process.kill()
                part.process.wait()
    assert not signal.pthread_sigmask(signal.SIG_BLOCK, []) & STOP_SIGNALS


def test_parts_start_with_the_stop_signals_unblocked(tmp_path: Path) -> None:
    # the demo blocks them around the fork; a child that inherited the block would ignore SIGTERM
    layout = Layout(tmp_path)
    layout.logs_dir.mkdir(parents=True)
    group = PartGroup(layout)
    try:
        part = group.start(
            "idp",
            "the dev IdP",
            ["dev-idp", "serve", "--port", "0", "--key-dir", str(tmp_path / "idp")],
        )
        part.wait_for_line("dev IdP issuer: ", timeout_s=60)
        status = Path(f"/proc/{part.process.pid}/status").read_text()
        blocked = int(
            next(line for line in status.splitlines() if line.startswith("SigBlk:")).split()[1], 16
        )
        assert blocked & (1 << (signal.SIGINT - 1)) == 0
        assert blocked & (1 << (signal.SIGTERM - 1)) == 0
        assert blocked & (1 << (signal.SIGHUP - 1)) == 0
    finally:
        assert group.stop_all(grace_s=10) == []
