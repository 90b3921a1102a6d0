"""`bench.connector_count`'s counters: context switches summed over a process's threads, its
user and system CPU, and the system calls in strace's summary."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from bench.connector_count import strace_calls
from bench.stack import context_switches, user_system_s

#: what ``strace -c -f -o FILE -p PID`` wrote for a connector (an errors column left empty on
#: some lines)
_SUMMARY = """\
% time     seconds  usecs/call     calls    errors syscall
------ ----------- ----------- --------- --------- ----------------
 98.31   14.730765         301     48867      4843 futex
  0.71    0.106656          35      3000           poll
  0.48    0.072408          24      3002           sendto
  0.37    0.054944          15      3596       257 recvfrom
  0.07    0.010782           8      1257           epoll_ctl
------ ----------- ----------- --------- --------- ----------------
100.00   14.984493         245     59722      5100 total
"""


def test_the_strace_summary_gives_all_calls_and_the_futex_calls() -> None:
    assert strace_calls(_SUMMARY) == (59722, 48867)
    without_futex = "\n".join(line for line in _SUMMARY.splitlines() if "futex" not in line)
    assert strace_calls(without_futex) == (59722, 0)


def test_a_wait_in_another_thread_is_counted_as_a_voluntary_switch() -> None:
    before = context_switches(os.getpid())
    go = threading.Event()
    thread = threading.Thread(target=go.wait, args=(10,))
    thread.start()
    try:
        state = Path(f"/proc/{os.getpid()}/task/{thread.native_id}/stat")
        deadline = time.monotonic() + 10
        # sleeping in its wait: it gave the CPU up (a voluntary switch)
        while state.read_text().rpartition(")")[2].split()[0] != "S":
            assert time.monotonic() < deadline
        # counted while the thread lives (the sum is over /proc/PID/task)
        during = context_switches(os.getpid())
    finally:
        go.set()
        thread.join(10)
    assert during[0] > before[0]
    assert during[1] >= before[1]


def test_cpu_spent_in_this_process_is_user_time() -> None:
    user, system = user_system_s(os.getpid())
    spent = 0
    for n in range(3_000_000):  # about 0.1 s of CPU in this thread
        spent += n
    after = user_system_s(os.getpid())
    assert after[0] > user
    assert after[1] >= system
