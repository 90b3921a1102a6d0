"""The single binary, dist/edgetds: where it is, what it packages, and building it as `make binary`
does (PyInstaller, ~1 min; longer on a loaded machine) unless it is newer than every source file
it packages."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

__all__ = ["BINARY", "BUILD_TIMEOUT_S", "ROOT", "build_binary"]

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


def build_binary() -> Path:
    """dist/edgetds as `make binary` builds it (the same PyInstaller command), reused while it is
    newer than every source file it packages."""
    if BINARY.exists() and BINARY.stat().st_mtime > _newest_source():
        return BINARY
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
    done = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, check=False
    )
    assert done.returncode == 0, f"PyInstaller failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
    assert BINARY.exists()
    return BINARY
