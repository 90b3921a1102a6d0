"""The edgetds test suite (shared fixtures and helpers live in tests/support/)."""
