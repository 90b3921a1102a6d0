"""How a failure is named to a person: the cause, as `connector diag` reports it and as
`connector run` logs it ("Connection refused", the TLS reason, the relay's HTTP status and error
code), never a bare exception class name.
"""

from __future__ import annotations

import json

import trio

__all__ = ["describe_http_refusal", "describe_os_error", "describe_tls_error"]


def describe_os_error(exc: OSError) -> str:
    """The errno text; trio's "all attempts to connect failed" keeps the per-address ones."""
    cause = exc.__cause__
    if exc.strerror is None and isinstance(cause, BaseExceptionGroup):
        reasons = sorted({getattr(e, "strerror", None) or str(e) for e in cause.exceptions})
        return "; ".join(reasons)
    return exc.strerror or str(exc) or type(exc).__name__


def describe_tls_error(exc: BaseException) -> str:
    """The TLS failure's reason (e.g. "certificate verify failed: self-signed certificate");
    ``exc`` is an `ssl.SSLError` or trio's `BrokenResourceError` around one."""
    cause = exc.__cause__ if isinstance(exc, trio.BrokenResourceError) else exc
    reason = getattr(cause, "verify_message", None) or getattr(cause, "reason", None)
    return str(reason or cause or type(exc).__name__)


def describe_http_refusal(status: int, body: bytes) -> str:
    """``HTTP 401 auth.connector_unknown: message`` from the relay's ``{"error": ...}`` body;
    any other body is shown as text (at most 300 characters)."""
    try:
        error = json.loads(body)["error"]
        return f"HTTP {status} {error['code']}: {error['message']}"
    except (ValueError, KeyError, TypeError):
        text = body[:300].decode("utf-8", "replace").strip()
        return f"HTTP {status} {text}".strip()
