"""Tests: tests/cli/."""
