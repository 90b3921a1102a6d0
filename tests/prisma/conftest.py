"""Fixtures of the Prisma tests: the e2e `stack` (tests/support/e2e_stack.py)."""

from __future__ import annotations

from tests.support.e2e_stack import base, stack

__all__ = ["base", "stack"]
