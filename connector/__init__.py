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

from typing import TYPE_CHECKING

import lazy_loader

if TYPE_CHECKING:
    from connector.config import ConfigError, ConnectorConfig, load_config
    from connector.runtime import Connector, open_connector

__all__ = ["ConfigError", "Connector", "ConnectorConfig", "load_config", "open_connector"]

__getattr__, __dir__, _ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "config": ["ConfigError", "ConnectorConfig", "load_config"],
        "runtime": ["Connector", "open_connector"],
    },
)
