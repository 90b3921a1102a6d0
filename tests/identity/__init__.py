"""Tests: tests/identity/."""
