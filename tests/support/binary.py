"""The single binary, dist/edgetds: where it is, what it packages, and building it as `make binary`
does (PyInstaller, ~1 min; longer on a loaded machine) unless it is newer than every source file
it packages.

A test run that will use the binary starts its build as soon as the tests are collected
(`start_build`, from tests/conftest.py), so the build runs beside the tests that come before
tests/binary; `build_binary` waits for that build (or builds, if none was started).

The suite runs in several processes (pytest-xdist), and each of them collects every test, so
one build is shared between them through a lock file, ``build/edgetds-binary.lock``: the build
process holds it (an flock on a file descriptor it inherits) until it exits, and a process that
needs the binary while another builds it waits for the lock, then finds the binary up to date.
The build writes the binary beside it and renames it into dist/, so a build killed halfway never
leaves a cut file that would pass for up to date."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import IO

__all__ = ["BINARY", "BUILD_TIMEOUT_S", "ROOT", "build_binary", "start_build", "stop_build"]

ROOT = Path(__file__).resolve().parents[2]
BINARY = ROOT / "dist" / "edgetds"
LOCK = ROOT / "build" / "edgetds-binary.lock"
WORKPATH = ROOT / "build" / "pyinstaller"
SOURCES = (
    "edgetds",
    "connector",
    "relay",
    "identity",
    "asgiapp",
    "tdslite",
    "protocol",
    "packaging",
)
BUILD_TIMEOUT_S = 900

#: Run in the build process: `make binary`'s PyInstaller command with its output in a staging
#: folder, then the binary renamed into dist/ (one rename: whole or not there).
_BUILD = """
import os, sys
from PyInstaller.__main__ import run
staging, dist, work, spec = sys.argv[1:]
run(["--noconfirm", "--log-level", "WARN", "--distpath", staging, "--workpath", work, spec])
os.makedirs(dist, exist_ok=True)
os.replace(os.path.join(staging, "edgetds"), os.path.join(dist, "edgetds"))
"""


def _newest_source() -> float:
    newest = (ROOT / "pyproject.toml").stat().st_mtime
    for package in SOURCES:
        for path in (ROOT / package).rglob("*"):
            if path.suffix in (".py", ".spec", ".json") and "__pycache__" not in path.parts:
                newest = max(newest, path.stat().st_mtime)
    return newest


def _up_to_date() -> bool:
    return BINARY.exists() and BINARY.stat().st_mtime > _newest_source()


def _try_lock() -> int | None:
    """A descriptor holding the build lock, or None while another process holds it."""
    fd = _open_lock()
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _wait_lock() -> int:
    """A descriptor holding the build lock, once its holder (a build process) has exited."""
    fd = _open_lock()
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _open_lock() -> int:
    LOCK.parent.mkdir(parents=True, exist_ok=True)
    return os.open(LOCK, os.O_RDWR | os.O_CREAT, 0o644)


class _Build:
    """One PyInstaller run in the background, its output in a temporary file. It takes over
    ``lock``: the build process holds the lock until it exits."""

    def __init__(self, lock: int) -> None:
        command = [
            sys.executable,
            "-c",
            _BUILD,
            str(WORKPATH / "staging"),
            str(BINARY.parent),
            str(WORKPATH),
            str(ROOT / "packaging" / "edgetds.spec"),
        ]
        self.output: IO[str] = tempfile.TemporaryFile("w+")
        try:
            self.process = subprocess.Popen(
                command,
                cwd=ROOT,
                stdout=self.output,
                stderr=subprocess.STDOUT,
                text=True,
                pass_fds=(lock,),
                start_new_session=True,  # its own group: stop() ends PyInstaller's helpers too
            )
        finally:
            os.close(lock)

    def wait(self) -> None:
        try:
            returncode = self.process.wait(timeout=BUILD_TIMEOUT_S)
        finally:
            self.stop()
        self.output.seek(0)
        log = self.output.read()
        self.output.close()
        assert returncode == 0, f"PyInstaller failed:\n{log[-6000:]}"

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            # PyInstaller's helper processes inherit the lock: it is free once the last is gone
            os.close(_wait_lock())


_build: _Build | None = None


def start_build() -> None:
    """Start building dist/edgetds in the background, unless it is up to date or a build (of
    this process or another test process) already started."""
    global _build
    if _build is not None:
        return
    lock = _try_lock()
    if lock is None:
        return  # another test process is building it
    if _up_to_date():
        os.close(lock)
        return
    _build = _Build(lock)


def stop_build(*, finish: bool = False) -> None:
    """At the end of the run: kill a background build nobody waited for, or with ``finish``
    (another test process may be waiting for it) let it finish first."""
    global _build
    if _build is None:
        return
    build, _build = _build, None
    if finish:
        try:
            build.process.wait(timeout=BUILD_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pass
    build.stop()
    build.output.close()


def build_binary() -> Path:
    """dist/edgetds as `make binary` builds it (the same PyInstaller options), reused while it is
    newer than every source file it packages; waits for the build `start_build` began, here or
    in another test process."""
    global _build
    start_build()
    if _build is None:
        lock = _wait_lock()  # held by a build of another process until it ends
        if _up_to_date():
            os.close(lock)
        else:
            _build = _Build(lock)
    if _build is not None:
        build, _build = _build, None
        build.wait()
    assert BINARY.exists()
    return BINARY
