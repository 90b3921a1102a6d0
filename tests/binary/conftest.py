"""The single binary, dist/edgetds, for every test of tests/binary/: built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.binary import build_binary


@pytest.fixture(scope="session")
def binary() -> Path:
    """dist/edgetds as `make binary` builds it, reused while it is newer than every source file it
    packages."""
    return build_binary()
