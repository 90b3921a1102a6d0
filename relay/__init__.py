"""The self-hosted Python relay: connector WebSockets and the client HTTP API on one port.

Run it with ``edgetds relay serve --config relay.toml``, or in-process::

    from relay import load_config, open_relay
    async with open_relay(load_config("relay.toml")) as running:
        running.http_url, running.app.registry, ...

See relay/README.md. Names are imported lazily so that ``edgetds --help`` (which imports
``relay.cli``) does not load hypercorn and the crypto stack.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from relay.app import RelayApp
    from relay.config import ConfigError, Limits, RelayConfig, TunnelConfig, load_config
    from relay.server import RunningRelay, open_relay, serve_relay

__all__ = [
    "ConfigError",
    "Limits",
    "RelayApp",
    "RelayConfig",
    "RunningRelay",
    "TunnelConfig",
    "load_config",
    "open_relay",
    "serve_relay",
]

_HOMES = {
    "RelayApp": "relay.app",
    "ConfigError": "relay.config",
    "Limits": "relay.config",
    "RelayConfig": "relay.config",
    "TunnelConfig": "relay.config",
    "load_config": "relay.config",
    "RunningRelay": "relay.server",
    "open_relay": "relay.server",
    "serve_relay": "relay.server",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'relay' has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
