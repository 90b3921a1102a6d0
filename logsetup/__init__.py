"""The one log format of every long-running process of ours (`edgetds connector run`, `relay
serve`, `tdslite serve`, `dev-idp serve`): a leaf package that imports nothing of ours.

- `setup_logging`: JSON lines on stderr by default, human text when stderr is a terminal;
  hypercorn's own loggers go through the same handler.
- `add_log_options`: the `--log-level` / `--log-format` flags every serving command takes.
- `log_stopped`: the last line a process writes (`stopped`, with the reason).
- `QuerySummary`: per-query lines are debug; this writes the periodic info summary.
"""

from __future__ import annotations

from logsetup._format import (
    FORMATS,
    LEVELS,
    JsonFormatter,
    TextFormatter,
    add_log_options,
    log_stopped,
    record_fields,
    setup_logging,
)
from logsetup._summary import QuerySummary

__all__ = [
    "FORMATS",
    "LEVELS",
    "JsonFormatter",
    "QuerySummary",
    "TextFormatter",
    "add_log_options",
    "log_stopped",
    "record_fields",
    "setup_logging",
]
