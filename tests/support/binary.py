"""The single binary, dist/edgetds: where it is, what it packages, and building it as `make binary`
does (PyInstaller, ~1 min; longer on a loaded machine) unless it is newer than every source file
it packages.

A test run that will use the binary starts its build as soon as the tests are collected
(`start_build`, from tests/conftest.py), so the build runs beside the tests that come before
tests/binary; `build_binary` waits for that build (or builds, if none was started)."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path
from typing import IO

__all__ = ["BINARY", "BUILD_TIMEOUT_S", "ROOT", "build_binary", "start_build", "stop_build"]

ROOT = Path(__file__).resolve().parents[2]
BINARY = ROOT / "dist" / "edgetds"
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


def _newest_source() -> float:
    newest = (ROOT / "pyproject.toml").stat().st_mtime
    for package in SOURCES:
        for path in (ROOT / package).rglob("*"):
            if path.suffix in (".py", ".spec", ".json") and "__pycache__" not in path.parts:
                newest = max(newest, path.stat().st_mtime)
    return newest


class _Build:
    """One PyInstaller run in the background, its output in a temporary file."""

    def __init__(self) -> None:
        command = [
            sys.executable,
            "-m",
            "PyInstaller",
            "--noconfirm",
            "--log-level",
            "WARN",
            "--distpath",
            str(ROOT / "dist"),
            "--workpath",
            str(ROOT / "build" / "pyinstaller"),
            str(ROOT / "packaging" / "edgetds.spec"),
        ]
        self.output: IO[str] = tempfile.TemporaryFile("w+")
        self.process = subprocess.Popen(
            command, cwd=ROOT, stdout=self.output, stderr=subprocess.STDOUT, text=True
        )

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
            self.process.kill()
            self.process.wait()
            # it may have been writing the binary: a cut file newer than the sources would be
            # taken as up to date by the next run
            BINARY.unlink(missing_ok=True)


_build: _Build | None = None


def start_build() -> None:
    """Start building dist/edgetds in the background, unless it is up to date or a build of this
    run already started."""
    global _build
    if _build is None and not (BINARY.exists() and BINARY.stat().st_mtime > _newest_source()):
        _build = _Build()


def stop_build() -> None:
    """Kill a background build nobody waited for (the run ended first)."""
    if _build is not None:
        _build.stop()


def build_binary() -> Path:
    """dist/edgetds as `make binary` builds it (the same PyInstaller command), reused while it is
    newer than every source file it packages; waits for the build `start_build` began."""
    global _build
    start_build()
    if _build is not None:
        build, _build = _build, None
        build.wait()
    assert BINARY.exists()
    return BINARY
