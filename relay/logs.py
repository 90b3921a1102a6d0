"""Structured logs for the relay: one `event key=value ...` line per thing that happened.

Callers pass only safe fields (ids, codes, counts, durations, addresses). Tokens, SQL text and
parameter values are never handed to this module; values are truncated and quoted so a hostile
header cannot forge extra fields or lines.
"""

from __future__ import annotations

import logging
import re

__all__ = ["log", "log_event"]

log = logging.getLogger("edgetds.relay")

_PLAIN = re.compile(r"[A-Za-z0-9_.:/@+-]{1,200}")


def _value(value: object) -> str:
    text = str(value)
    if _PLAIN.fullmatch(text):
        return text
    text = text[:200].replace("\\", "\\\\").replace('"', '\\"')
    return '"' + "".join(ch if ch.isprintable() else "?" for ch in text) + '"'


def log_event(event: str, *, level: int = logging.INFO, **fields: object) -> None:
    """Log `event` with `fields` as `key=value` pairs (None values are left out)."""
    if not log.isEnabledFor(level):
        return
    parts = [event] + [f"{k}={_value(v)}" for k, v in fields.items() if v is not None]
    log.log(level, " ".join(parts))
