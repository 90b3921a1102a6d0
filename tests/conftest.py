"""Shared pytest configuration: every test runs under trio (pytest-trio, trio_mode = true)."""

from __future__ import annotations

import os
from collections.abc import Generator
from typing import Any

import pytest
from _pytest.outcomes import Skipped
from hypothesis import settings

from tests.support import binary

# With CI set (as CI services set it), every hypothesis test draws the same examples in every
# run, so a run's result depends on the commit alone; other runs draw new examples each time and
# keep what failed in .hypothesis/ to try first next time.
settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    settings.load_profile("ci")


def _skip_reason(exc: BaseException | None) -> str | None:
    """The message of the Skipped that pytest-trio re-raised without it: pytest-trio 0.8 unwraps
    a test's lone Skipped from trio's exception group by calling ``pytest.skip()`` afresh, so the
    original (with the test's reason) is the new one's ``__context__``."""
    while exc is not None:
        if isinstance(exc, BaseExceptionGroup):
            leaves = [e for e in exc.exceptions if isinstance(e, Skipped)]
            exc = leaves[0] if leaves else None
            continue
        if isinstance(exc, Skipped) and exc.msg:
            return exc.msg
        exc = exc.__context__
    return None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[Any]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Report the reason of a trio test's ``pytest.skip(reason)`` (see `_skip_reason`)."""
    report = yield
    skipped = call.excinfo.value if call.excinfo else None
    if report.skipped and isinstance(skipped, Skipped) and not skipped.msg:
        reason = _skip_reason(skipped.__context__)
        if reason and isinstance(report.longrepr, tuple):
            path, line, _ = item.location
            report.longrepr = (path, (line or 0) + 1, f"Skipped: {reason}")
    return report


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start building the single binary now if a collected test uses it, so that the build (about
    a minute of one core) runs beside the tests before tests/binary instead of before them."""
    if session.config.option.collectonly:
        return
    if any("binary" in getattr(item, "fixturenames", ()) for item in session.items):
        binary.start_build()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """End a background build of the binary: a test process of a parallel run (pytest-xdist)
    lets it finish, since another may be waiting for it, unless the run was interrupted."""
    parallel = "PYTEST_XDIST_WORKER" in os.environ
    binary.stop_build(finish=parallel and exitstatus != pytest.ExitCode.INTERRUPTED)
