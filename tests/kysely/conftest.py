"""The Kysely tests' fixture: `conf`, one stack per relay (tests/support/conformance.py)."""

from __future__ import annotations

from tests.support.conformance import conf

__all__ = ["conf"]
