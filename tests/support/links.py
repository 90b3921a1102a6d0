"""A tunnel link that dials nothing, for tests of its own state and writes."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from connector.config import TunnelConfig
from connector.results import CancelToken
from connector.tunnel import StreamSink, TunnelLink
from protocol import events

__all__ = ["idle_link"]


async def _never_called(
    link: TunnelLink, query: events.Query, sink: StreamSink, cancel: CancelToken
) -> None:
    raise AssertionError("no query is served here")


def idle_link(private_key: Ed25519PrivateKey | None = None) -> TunnelLink:
    """A `TunnelLink` of connector ``c1`` on tunnel ``t`` that is never run (no WebSocket)."""
    cfg = TunnelConfig(
        connector_id="c1",
        tunnel="t",
        relay_urls=("ws://127.0.0.1:9",),
        private_key_pem=b"",
        relay_public_keys=(),
    )
    return TunnelLink(
        cfg,
        "ws://127.0.0.1:9",
        private_key=private_key or Ed25519PrivateKey.generate(),
        relay_keys={},
        handler=_never_called,
    )
