"""Tests: tests/audit/."""
