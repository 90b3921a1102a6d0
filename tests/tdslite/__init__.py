"""Tests: tests/tdslite/."""
