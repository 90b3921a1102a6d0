"""The self-hosted Python relay: connector WebSockets and the client HTTP API on one port.

Run it with ``edgetds relay serve --config relay.toml``, or in-process::

    from relay import load_config, open_relay
    async with open_relay(load_config("relay.toml")) as running:
        running.http_url, running.app.registry, ...

See relay/README.md. Names are imported lazily so that ``edgetds --help`` (which imports
``relay.cli``) does not load the HTTP server and the crypto stack.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import lazy_loader

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

__getattr__, __dir__, _ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "app": ["RelayApp"],
        "config": ["ConfigError", "Limits", "RelayConfig", "TunnelConfig", "load_config"],
        "server": ["RunningRelay", "open_relay", "serve_relay"],
    },
)
