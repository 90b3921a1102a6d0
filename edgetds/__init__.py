"""edgetds: query a SQL Server behind a firewall from the edge, every query tied to its user."""

from __future__ import annotations

from protocol import __version__

__all__ = ["__version__"]
