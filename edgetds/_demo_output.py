"""What `edgetds demo` prints: headings, requests, result tables, errors and verdicts.

Plain ASCII on stdout, flushed line by line (a newcomer reads it live; a test reads it from a
pipe). Tokens are never printed here: requests show the SQL and the parameters only.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

__all__ = ["Output", "format_table", "self_command", "show_path"]

_NUMERIC = {
    "bit",
    "tinyint",
    "smallint",
    "int",
    "bigint",
    "decimal",
    "numeric",
    "money",
    "smallmoney",
    "real",
    "float",
}
WIDTH = 100
MAX_CELL = 40


def _cell(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "1" if value else "0"
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= MAX_CELL else text[: MAX_CELL - 3] + "..."


def format_table(columns: Sequence[Mapping[str, Any]], rows: Sequence[Sequence[Any]]) -> list[str]:
    """Rows under their column names, numbers right-aligned; one string per line."""
    names = [str(c.get("name") or f"col{i + 1}") for i, c in enumerate(columns)]
    right = [str(c.get("type", "")).lower() in _NUMERIC for c in columns]
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [len(n) for n in names]
    for row in cells:
        for i, text in enumerate(row[: len(widths)]):
            widths[i] = max(widths[i], len(text))

    def line(values: Sequence[str]) -> str:
        parts = [
            v.rjust(widths[i]) if right[i] else v.ljust(widths[i]) for i, v in enumerate(values)
        ]
        return "  ".join(parts).rstrip()

    out = [line(names), "  ".join("-" * w for w in widths)]
    out += [line(row) for row in cells]
    return out


class Output:
    """The demo's voice. Every method prints whole lines and flushes."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout

    def say(self, text: str = "", *, indent: int = 0) -> None:
        pad = " " * indent
        for line in text.splitlines() or [""]:
            self.stream.write((pad + line).rstrip() + "\n")
        self.stream.flush()

    def partial(self, text: str) -> None:
        """Start a line that a later `say` finishes (``starting relay ... ok``)."""
        self.stream.write(text)
        self.stream.flush()

    def title(self, text: str) -> None:
        self.say()
        self.say(text)
        self.say("=" * min(len(text), WIDTH))

    def heading(self, text: str) -> None:
        self.say()
        self.say(f"--- {text} " + "-" * max(3, WIDTH - len(text) - 5))

    def request(self, who: str, path: str, sql: str, params: Mapping[str, Any]) -> None:
        self.say(f"{who} -> POST {path}", indent=2)
        body = textwrap.dedent(sql).strip().splitlines()
        self.say("sql:    " + body[0], indent=4)
        for extra in body[1:]:
            self.say("        " + extra, indent=4)
        if params:
            self.say("params: " + json.dumps(params), indent=4)

    def wrapped(self, text: str, *, indent: int = 2, hang: int = 3) -> None:
        """One logical line, wrapped at WIDTH, continuation lines indented by ``hang`` more."""
        lines = textwrap.wrap(
            text,
            width=WIDTH,
            initial_indent=" " * indent,
            subsequent_indent=" " * (indent + hang),
            break_on_hyphens=False,
            break_long_words=False,
        )
        for line in lines:
            self.say(line)

    def table(self, columns: Sequence[Mapping[str, Any]], rows: Sequence[Sequence[Any]]) -> None:
        for line in format_table(columns, rows):
            self.say(line, indent=4)

    def verdict(self, ok: bool, text: str) -> None:
        self.wrapped(("ok: " if ok else "UNEXPECTED: ") + text, hang=4)


def self_command() -> str:
    """How the user can run this same edgetds again (``edgetds``, ``.venv/bin/edgetds``, ...)."""
    argv0 = sys.argv[0] if sys.argv else ""
    if os.path.basename(argv0) == "edgetds":
        on_path = shutil.which("edgetds")
        if on_path and os.path.realpath(on_path) == os.path.realpath(argv0):
            return "edgetds"
        return show_path(os.path.abspath(argv0))
    if getattr(sys, "frozen", False):
        return show_path(sys.executable)
    return f"{show_path(sys.executable)} -m edgetds"


def show_path(path: str | Path) -> str:
    """A path relative to the current directory when it is inside it (shorter to read)."""
    path = Path(path)
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)
