"""systemd's readiness protocol (sd_notify) without a dependency: one datagram to $NOTIFY_SOCKET.

With ``Type=notify`` (examples/systemd/edgetds-connector.service) systemd considers the unit
started only when the process sends ``READY=1``; the connector sends it after its first relay
connection is registered (connector/ops.py), and ``STOPPING=1`` when it starts draining.
Outside systemd ($NOTIFY_SOCKET unset) every call is a no-op.
"""

from __future__ import annotations

import os
import socket

__all__ = ["notify"]


def notify(message: str) -> bool:
    """Send `message` (e.g. ``"READY=1"``) to systemd. Returns True if it was sent."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address or address[0] not in "/@":
        return False
    # "@name" is a socket in Linux's abstract namespace: a leading NUL byte
    target = "\0" + address[1:] if address[0] == "@" else address
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(message.encode(), target)
    except OSError:
        return False
    return True
