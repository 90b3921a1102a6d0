"""Tests: tests/protocol/."""
