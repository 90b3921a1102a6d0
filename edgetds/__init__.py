"""edgetds: query a SQL Server behind a firewall from the edge, every query tied to its user."""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
