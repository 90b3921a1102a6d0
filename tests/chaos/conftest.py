"""The chaos tests' fixture (`chaos`, tests/support/chaos_stack.py) and the figures each test
reports, printed in pytest's terminal summary."""

from __future__ import annotations

from typing import Any

from tests.support.chaos import SESSION_RESULTS, summary_line
from tests.support.chaos_stack import chaos

__all__ = ["chaos"]


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if SESSION_RESULTS:
        terminalreporter.section("chaos figures")
        for result in SESSION_RESULTS:
            terminalreporter.write_line(summary_line(result))
