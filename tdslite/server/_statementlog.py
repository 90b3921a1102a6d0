"""The statement log: one JSON object per statement the server was asked to run.

Each entry names the connection, the login, the effective database user, the statement text, the
parameters' names and types (NEVER their values) and the outcome: ``{"rows": n, "affected": n}``,
``{"error": number}`` or ``{"cancelled": true}``. Tests read `StatementLog.entries` (in process) or
the JSON-lines file (``--statement-log``), e.g. to prove a refused query never reached the database.
An entry is written when its statement ends; `StatementLog.running` holds the statement each
connection is running now (in process only), for a test that must act while one runs.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, TextIO


class StatementLog:
    """Thread-safe sink of statement entries: kept in memory and, optionally, appended to a file.

    Args:
        path: a JSON-lines file to append to (flushed after each line), or None.
        keep: how many entries to keep in `entries` (oldest dropped first).
        on_entry: called with each new entry (from a worker thread: keep it quick and
            thread-safe, e.g. ``trio.from_thread.run_sync`` or a queue put).
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        keep: int = 10_000,
        on_entry: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        #: the last `keep` entries (a deque: dropping the oldest costs nothing)
        self._entries: deque[dict[str, Any]] = deque(maxlen=keep)
        #: connection id -> the statement it is running now (until its entry is recorded)
        self.running: dict[int, str] = {}
        self._on_entry = on_entry
        self._lock = threading.Lock()
        self._file: TextIO | None = open(path, "a", encoding="utf-8") if path else None  # noqa: SIM115

    def record(
        self,
        *,
        connection: int,
        login: str,
        user: str,
        statement: str,
        params: Sequence[tuple[str, str]] = (),
        outcome: dict[str, Any],
        kind: str = "batch",
    ) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "time": time.time(),
            "connection": connection,
            "login": login,
            "user": user,
            "kind": kind,
            "statement": statement,
            "params": [{"name": n, "type": t} for n, t in params] if params else [],
            "outcome": outcome,
        }
        with self._lock:
            self.running.pop(connection, None)
            self._entries.append(entry)
            if self._file is not None:
                self._file.write(json.dumps(entry, ensure_ascii=False, default=str) + "\n")
                self._file.flush()
        if self._on_entry is not None:
            self._on_entry(entry)
        return entry

    @property
    def entries(self) -> list[dict[str, Any]]:
        """The entries kept (the last ``keep``), oldest first: a copy."""
        with self._lock:
            return list(self._entries)

    def started(self, connection: int, statement: str) -> None:
        """`connection` starts running `statement` (its entry is recorded when it ends)."""
        with self._lock:
            self.running[connection] = statement

    def is_running(self, needle: str) -> bool:
        """A statement containing `needle` is running now."""
        with self._lock:
            return any(needle in statement for statement in self.running.values())

    @property
    def in_memory_only(self) -> bool:
        """No file and no hook: `record` neither does I/O nor calls out (the event loop may)."""
        return self._file is None and self._on_entry is None

    def statements(self) -> list[str]:
        """Statement texts recorded so far, oldest first."""
        with self._lock:
            return [e["statement"] for e in self._entries]

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
