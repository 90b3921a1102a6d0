"""`bench.cputime.process_cpu_seconds`: another process's CPU time, all its threads (the ended
ones too), in nanoseconds rather than /proc's 10 ms clock ticks."""

from __future__ import annotations

import subprocess
import sys

from bench.cputime import process_cpu_seconds, user_system_s

#: burns about 0.3 s of CPU in a thread that then ends, prints its own CPU time, waits for stdin
_CHILD = """
import sys, threading, time
def burn():
    start = time.thread_time()
    while time.thread_time() - start < 0.3:
        pass
worker = threading.Thread(target=burn)
worker.start()
worker.join()
print(time.process_time(), flush=True)
sys.stdin.read()
"""


def test_the_cpu_of_another_process_with_an_ended_thread_to_the_nanosecond() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        own = float(child.stdout.readline())  # the child is idle from here on
        seen = process_cpu_seconds(child.pid)
        ticks = sum(user_system_s(child.pid))
    finally:
        child.communicate("", timeout=30)
    assert own >= 0.3  # the ended thread's CPU is in the process's count
    assert own <= seen < own + 0.05
    assert abs(seen - ticks) <= 0.03  # the same count as /proc's, to its tick
    assert abs(seen * 100 - round(seen * 100)) > 1e-6  # not a whole number of 10 ms ticks
