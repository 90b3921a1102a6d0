"""Shared pytest configuration: every test runs under trio (pytest-trio, trio_mode = true)."""
