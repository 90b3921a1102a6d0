"""Browsers: CORS on a tunnel's client endpoints (SPEC.md 11.7); relay/worker/src/cors.js is the
Worker's twin.

A tunnel lists the web origins that may call it from a browser (``[tunnels.NAME] cors_origins``).
Every path under ``/v1/tunnels/{tunnel}/`` except ``connect`` and ``audit/checkpoint`` is a client
endpoint (``query``, ``status``, ``sessions...``, ``transaction`` and whatever comes next), so a
new endpoint gets CORS without more work. For a listed ``Origin`` every answer carries
``Access-Control-Allow-Origin: <origin>``, ``Vary: Origin`` and the exposed headers; a preflight
(``OPTIONS`` with ``Access-Control-Request-Method``) is answered 204 here, with no token and no
connector. An origin that is not listed gets no ``Access-Control-*`` header and its preflight is
refused 403. Never ``*``, never an unlisted origin echoed, never ``Allow-Credentials`` (the token
travels in ``Authorization``, not in cookies).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import Any

from relay.http import Message, Send, header

__all__ = [
    "client_endpoint",
    "is_preflight",
    "origin_problem",
    "preflight_headers",
    "with_cors",
]

#: Paths under /v1/tunnels/{tunnel}/ that are not a browser's business.
NOT_CLIENT_ENDPOINTS = frozenset({"connect", "enroll", "audit/checkpoint"})
EXPOSE_HEADERS = b"x-edgetds-query-id, retry-after"
ALLOW_METHODS = b"GET, POST, DELETE"
ALLOW_HEADERS = b"authorization, content-type, x-edgetds-query-id"
MAX_AGE = b"600"
_DEFAULT_PORTS = {"http": 80, "https": 443}
_EXAMPLE = '(e.g. "https://app.example.com" or "http://localhost:3000")'
#: host[:port]: a DNS name (letters, digits, "_", "-", dot-separated labels) or a bracketed IPv6
#: address, then an optional port
_HOST_PORT = re.compile(
    r"(?P<host>[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*|\[[0-9A-Fa-f:.]+\])(?::(?P<port>[0-9]*))?"
)
#: a last label that makes the browser read the host as an IPv4 address
_NUMERIC_LABEL = re.compile(r"[0-9]+|0[xX][0-9A-Fa-f]*")
_IPV4 = re.compile(
    r"(?:(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\.){3}"
    r"(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
)


def origin_problem(entry: Any) -> str | None:
    """Why ``entry`` is not an origin as browsers send it (``scheme://host[:port]``), or None.

    Browsers compare origins as exact strings, so only the form a browser sends is accepted:
    http or https, lower-case host, no default port, no path (not even ``/``), no wildcard. The
    host is a DNS name, a dotted-decimal IPv4 address or a bracketed IPv6 address (compressed),
    the hosts whose serialization the browser leaves as written; relay/worker/src/cors.js makes
    the same checks in the same order, with the same messages.
    """
    if not isinstance(entry, str):
        return f"must be a string: an origin {_EXAMPLE}"
    if "*" in entry:
        return f"is a wildcard; list every origin exactly as scheme://host[:port] {_EXAMPLE}"
    scheme, sep, rest = entry.partition("://")
    if not sep or scheme.lower() not in _DEFAULT_PORTS or not rest:
        return f"is not an origin: write scheme://host[:port] with scheme http or https {_EXAMPLE}"
    if any(c in rest for c in "/?#@"):
        return (
            "has a path (a trailing / too), query or user part; an origin is only "
            f"scheme://host[:port] {_EXAMPLE}"
        )
    if not rest.isascii():
        return "has a host that is not ASCII; write the host in its ASCII (punycode) form"
    match = _HOST_PORT.fullmatch(rest)
    if match is None:
        return f"is not an origin: write scheme://host[:port] {_EXAMPLE}"
    host, port = match["host"], match["port"]
    if host.startswith("["):
        try:
            host = f"[{ipaddress.IPv6Address(host[1:-1]).compressed}]"
        except ValueError:
            return f"is not an origin: {host} is not an IPv6 address"
    elif _NUMERIC_LABEL.fullmatch(host.rsplit(".", 1)[-1]) and not _IPV4.fullmatch(host):
        return "is not an origin: write an IPv4 address as four decimal numbers (a.b.c.d)"
    if port and int(port) > 65535:
        return f"is not an origin: port {port} is above 65535"
    canonical = f"{scheme.lower()}://{host.lower()}"
    if port and int(port) != _DEFAULT_PORTS[scheme.lower()]:
        canonical += f":{int(port)}"
    if canonical != entry:
        return f'is not written as browsers send it; write "{canonical}"'
    return None


def client_endpoint(path: str) -> str | None:
    """The tunnel name if ``path`` is one of its client endpoints (CORS applies), else None."""
    parts = path.split("/", 4)  # "", "v1", "tunnels", NAME, REST
    if len(parts) != 5 or parts[:3] != ["", "v1", "tunnels"] or not parts[3] or not parts[4]:
        return None
    return None if parts[4] in NOT_CLIENT_ENDPOINTS else parts[3]


def is_preflight(scope: Mapping[str, Any]) -> bool:
    """An OPTIONS request with Origin and Access-Control-Request-Method: a browser asking before
    it sends the real request."""
    return (
        scope["method"] == "OPTIONS"
        and header(scope, b"origin") is not None
        and header(scope, b"access-control-request-method") is not None
    )


def _allow(origin: str) -> list[tuple[bytes, bytes]]:
    return [(b"access-control-allow-origin", origin.encode("latin-1")), (b"vary", b"Origin")]


def preflight_headers(origin: str) -> list[tuple[bytes, bytes]]:
    """The headers of a 204 preflight answer for a listed ``origin``."""
    return [
        *_allow(origin),
        (b"access-control-allow-methods", ALLOW_METHODS),
        (b"access-control-allow-headers", ALLOW_HEADERS),
        (b"access-control-max-age", MAX_AGE),
        (b"cache-control", b"no-store"),
    ]


def with_cors(send: Send, origin: str) -> Send:
    """``send`` that adds the CORS headers of a listed ``origin`` to the response's start
    (errors and streamed bodies alike)."""
    extra = [*_allow(origin), (b"access-control-expose-headers", EXPOSE_HEADERS)]

    async def send_with_cors(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", ()), *extra]}
        await send(message)

    return send_with_cors
