"""One log line per record, the same shape in every process.

JSON (the default; one object per line)::

    {"ts": "2026-12-06T08:29:25.123Z", "level": "info", "logger": "edgetds.relay",
     "event": "connector.ready", "msg": "connector.ready", "tunnel": "demo", ...}

``ts`` is RFC 3339 in UTC; ``event`` is there when the code names the event; every structured
field is a top-level member (a record's ``extra=`` attributes, and the ``fields`` mapping a caller
passes when its names could clash with `logging.LogRecord`'s own). Text (when stderr is a
terminal, or ``--log-format text``) shows the same record for a person::

    2026-12-06 08:29:25.123Z info  edgetds.relay: connector.ready tunnel=demo ...

Callers never pass tokens, secrets, SQL text or parameter values as fields; values are made
printable and quoted in text, so a hostile value cannot forge a field or a line.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import time
from collections.abc import Mapping
from typing import IO, Any

__all__ = [
    "FORMATS",
    "LEVELS",
    "JsonFormatter",
    "TextFormatter",
    "add_log_options",
    "log_stopped",
    "record_fields",
    "setup_logging",
]

FORMATS = ("json", "text")
LEVELS = ("debug", "info", "warning", "error")

#: Third-party loggers kept at warning: at debug they write request headers (bearer tokens).
_QUIET = ("websockets", "httpx", "httpcore", "hpack", "pytds", "wsproto", "trio-websocket")
#: Third-party loggers that must go through our handler, never their own text handler.
_ROUTED = ("hypercorn.error", "hypercorn.access", "py.warnings")

_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}
_CORE = ("ts", "level", "logger", "event", "msg", "exc")


def record_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The record's structured fields: its ``extra=`` attributes and its ``fields`` mapping
    (None values left out)."""
    out: dict[str, Any] = {}
    for key, value in record.__dict__.items():
        if key in _STANDARD or key.startswith("_") or key == "fields":
            continue
        out[key] = value
    extra = record.__dict__.get("fields")
    if isinstance(extra, Mapping):
        out.update(extra)
    return {k: v for k, v in out.items() if v is not None}


def _timestamp(record: logging.LogRecord) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + (
        f".{int(record.msecs):03d}Z"
    )


def _jsonable(value: object) -> object:
    if isinstance(value, BaseException):
        return str(value) or type(value).__name__
    return str(value)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, event (when named), msg, then the fields."""

    def format(self, record: logging.LogRecord) -> str:
        fields = record_fields(record)
        out: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        if "event" in fields:
            out["event"] = fields["event"]
        out["msg"] = record.getMessage()
        for key, value in fields.items():
            if key != "event":
                out[f"field_{key}" if key in _CORE else key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=_jsonable, ensure_ascii=False)


_PLAIN = re.compile(r"[A-Za-z0-9_.:/@+-]{1,200}")


def text_value(value: object) -> str:
    """``value`` as one token of a text line: plain when safe, else quoted and made printable."""
    if isinstance(value, (list, tuple, dict)):
        text = json.dumps(value, default=_jsonable, ensure_ascii=False)
    else:
        text = str(_jsonable(value)) if isinstance(value, BaseException) else str(value)
    if _PLAIN.fullmatch(text):
        return text
    text = text[:500].replace("\\", "\\\\").replace('"', '\\"')
    return '"' + "".join(ch if ch.isprintable() else "?" for ch in text) + '"'


class TextFormatter(logging.Formatter):
    """``TS LEVEL LOGGER: MSG key=value ...`` for a person at a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        fields = record_fields(record)
        msg = record.getMessage()
        if fields.get("event") == msg:
            del fields["event"]
        ts = _timestamp(record).replace("T", " ")
        parts = [f"{ts} {record.levelname.lower():<7} {record.name}: {msg}"]
        parts += [f"{key}={text_value(value)}" for key, value in fields.items()]
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def _is_terminal(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def setup_logging(
    level: str = "info", log_format: str | None = None, *, stream: IO[str] | None = None
) -> str:
    """Send every record of this process to ``stream`` (default stderr) in one format.

    Args:
        level: debug, info, warning or error.
        log_format: "json" or "text"; None picks text for a terminal, JSON otherwise.
        stream: where the lines go.

    Returns:
        The format chosen.
    """
    out = stream if stream is not None else sys.stderr
    chosen = log_format or ("text" if _is_terminal(out) else "json")
    handler = logging.StreamHandler(out)
    handler.setFormatter(TextFormatter() if chosen == "text" else JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in _QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
    for name in _ROUTED:
        routed = logging.getLogger(name)
        routed.handlers.clear()
        routed.propagate = True
    logging.captureWarnings(True)
    return chosen


def add_log_options(
    parser: argparse.ArgumentParser, *, level_default: str | None = "info", summary: bool = False
) -> None:
    """``--log-level`` and ``--log-format`` (and ``--log-summary-s`` with ``summary``)."""
    level_help = (
        f"debug, info, warning or error (default {level_default})"
        if level_default
        else "debug, info, warning or error (default: the config's log_level)"
    )
    parser.add_argument(
        "--log-level", default=level_default, choices=LEVELS, metavar="LEVEL", help=level_help
    )
    parser.add_argument(
        "--log-format",
        choices=FORMATS,
        help="log lines on stderr: json (one object per line; the default) or text (the "
        "default when stderr is a terminal)",
    )
    if summary:
        parser.add_argument(
            "--log-summary-s",
            type=float,
            default=60.0,
            metavar="SECONDS",
            help="one info line per interval with the queries, errors by code, p50/p99 "
            "(nothing when idle; per-query lines are debug; 0: off; default %(default)g)",
        )


def log_stopped(logger: str, reason: str, **fields: object) -> None:
    """The last line of a process: ``stopped``, with why."""
    logging.getLogger(logger).info(
        "stopped", extra={"fields": {"event": "stopped", "reason": reason, **fields}}
    )
