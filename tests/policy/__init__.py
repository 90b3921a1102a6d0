"""Tests: tests/policy/."""
