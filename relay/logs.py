"""Structured logs for the relay: one record per thing that happened, named by its event.

`log_event("connector.ready", tunnel=..., session=...)` logs a record whose message is the event
and whose fields are top-level members of the JSON line (logsetup formats it). The line per
query is debug; `query_summary` counts every query for the periodic info summary. Callers pass only
safe fields (ids, codes, counts, durations, addresses). Tokens, SQL text and parameter values are
never handed to this module; text values are truncated so a hostile header cannot flood a line.
"""

from __future__ import annotations

import logging

from logsetup import QuerySummary

__all__ = ["log", "log_event", "query_summary"]

log = logging.getLogger("edgetds.relay")

#: Every answered query of this process (per-query lines are debug): `relay serve` logs its
#: summary every --log-summary-s seconds.
query_summary = QuerySummary(log)


def _value(value: object) -> object:
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, (list, tuple)):
        return [_value(v) for v in value]
    if isinstance(value, BaseException):
        value = str(value) or type(value).__name__
    return str(value)[:200]


def log_event(event: str, *, level: int = logging.INFO, **fields: object) -> None:
    """Log `event` with `fields` as structured fields (None values are left out)."""
    if not log.isEnabledFor(level):
        return
    values = {k: _value(v) for k, v in fields.items() if v is not None}
    log.log(level, event, extra={"fields": {"event": event, **values}})
