"""Tests: tests/relay/."""
