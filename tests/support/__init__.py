"""Test helpers shared across areas: relay starters (relays.py), protocol peers, stacks."""
