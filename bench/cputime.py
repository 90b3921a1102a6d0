"""The CPU time another process has used, for the benchmarks' CPU per query.

`process_cpu_seconds` reads the process's CPU-time clock: the scheduler's count in nanoseconds
of every thread of the process, the ended ones included (Linux; the clock glibc's
``clock_getcpuclockid`` names). /proc/PID/stat counts in clock ticks (10 ms here): a run of 500
small queries that costs a process 0.1 ms each is 5 ticks, so a ratio of two such figures moves
in steps of 20%. Where the clock cannot be read, the ticks are the fallback.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

__all__ = ["process_cpu_seconds", "user_system_s"]

#: the clock-id bits of a process's CPU-time clock read from the scheduler (Linux's CPUCLOCK_SCHED)
_SCHED = 2


def process_cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) process ``pid`` used so far, all its threads: from its
    CPU-time clock (nanoseconds), or from /proc/PID/stat (clock ticks) where that fails."""
    try:
        return time.clock_gettime((~pid << 3) | _SCHED)
    except OSError:
        return sum(user_system_s(pid))


def user_system_s(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of process ``pid`` (all its threads, /proc/PID/stat; in clock
    ticks, 10 ms here)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / ticks, int(fields[12]) / ticks
