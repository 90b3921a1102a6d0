"""Fixtures for the attack tests: the chaos stack (dev IdP, tdslite, connectors as processes),
both relays as real processes, and a log file of this process's own log lines (rogue peers,
clients) so the final log-hygiene test (tests/chaos/test_zz_log_hygiene.py) greps them too."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from logsetup import JsonFormatter
from tests.support.chaos import HYGIENE
from tests.support.chaos_stack import RELAY_KINDS, chaos


@pytest.fixture(autouse=True)
def relay_log(tmp_path: Path) -> Iterator[Path]:
    """Every log line of this process (the in-process relay, hypercorn) at INFO, to a file, in
    the format the processes write (logsetup's JSON lines: the fields included)."""
    path = tmp_path / "in-process.log"
    handler = logging.FileHandler(path)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    HYGIENE.file(path)
    try:
        yield path
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        handler.close()


@pytest.fixture(params=RELAY_KINDS)
def relay_kind(request: pytest.FixtureRequest) -> Any:
    return request.param


__all__ = ["chaos", "relay_kind", "relay_log"]
