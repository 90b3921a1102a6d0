"""Fixtures of the end-to-end tests: `base` and `stack`, built in tests/support/e2e_stack.py."""

from __future__ import annotations

from tests.support.e2e_stack import base, stack

__all__ = ["base", "stack"]
