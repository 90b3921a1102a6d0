"""The edgetds connector: dials out to a relay, verifies every query's user token itself, maps
the identity to a least-privilege SQL Server login (policy), runs the query with python-tds and
streams the rows back.

Start one in process::

    from connector import load_config, open_connector

    async with open_connector(load_config("connector.toml")) as connector:
        await connector.wait_ready()

or from the shell: ``edgetds connector run --config connector.toml``. The names below are loaded
lazily so that importing one submodule (e.g. connector.config) stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["ConfigError", "Connector", "ConnectorConfig", "load_config", "open_connector"]

_LAZY = {
    "ConfigError": "connector.config",
    "ConnectorConfig": "connector.config",
    "load_config": "connector.config",
    "Connector": "connector.runtime",
    "open_connector": "connector.runtime",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'connector' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
