"""What a running query and the tunnel stream it answers on exchange, apart from both.

The tunnel (connector/tunnel.py, transport) and the statement runner (connector/execute.py,
python-tds) meet here, so that neither imports the other:

- `Sink`: where result bytes go (the tunnel stream); it raises `SinkClosed` once the stream is gone.
- `CancelToken`: set by the tunnel (CANCEL from the relay, connection lost), watched by the runner.
- `ResultTotals`: what a finished result came to (rows, bytes, ...), for DONE and the audit line.
- `QueryFailed`: a query that ended with a typed error; its record is the terminal ERROR line.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import trio

from protocol import ErrorCode, error_record

__all__ = ["CancelToken", "QueryFailed", "ResultTotals", "Sink", "SinkClosed"]


class SinkClosed(Exception):
    """The stream the results go to is gone (client cancelled, transport lost)."""


class Sink(Protocol):
    """Where result bytes go (a tunnel stream): both wait for send window as needed and raise
    `SinkClosed` when the stream can take no more. ``flush=False`` (the result is complete: the
    terminal line follows at once) lets the sink hold the bytes to write them with that line."""

    async def send_columns(self, data: bytes, *, flush: bool = True) -> None: ...

    async def send_rows(self, data: bytes, *, flush: bool = True) -> None: ...

    def hold(self, columns: bytes | None, rows: bytes) -> bool:
        """A result's last chunk (the terminal line follows at once), taken without waiting:
        what ``send_columns(columns, flush=False)`` (when not None) then ``send_rows(rows,
        flush=False)`` (when not empty) do when neither needs to wait. False when that is not
        so: nothing was taken, and the caller sends them."""
        ...


@dataclass
class CancelToken:
    """Set by the tunnel when the relay sends CANCEL or the connection is lost."""

    reason: str = ""
    event: trio.Event = field(default_factory=trio.Event)
    #: called once when it is cancelled (the query watchdog's wake-up, connector/_watchdog.py)
    on_cancel: Callable[[], None] | None = field(default=None, repr=False, compare=False)

    def cancel(self, reason: str = "cancelled") -> None:
        if not self.event.is_set():
            self.reason = reason
            self.event.set()
            if self.on_cancel is not None:
                self.on_cancel()

    @property
    def cancelled(self) -> bool:
        return self.event.is_set()


@dataclass
class ResultTotals:
    """What a query's result came to: the DONE record's figures."""

    rows: int = 0
    result_sets: int = 0
    bytes: int = 0
    rows_affected: int = -1
    #: a session operation's state after it (``{"id", "state", ...}``, SPEC.md 7.4)
    session: Mapping[str, Any] | None = None


class QueryFailed(Exception):
    """The query ended with a typed error (code from the protocol's registry).

    ``message`` goes to the client: the failure class and what to do, never a host, port, login,
    file path or a server text about them. ``detail`` (the cause: login, host, SQL Server's or
    the network's answer; never parameter values or tokens) goes only to the connector's log,
    under the query id the client's record names.
    """

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        sql: Mapping[str, int] | None = None,
        outcome: ResultTotals | None = None,
        detail: str | None = None,
        limit: str | None = None,
        session: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.sql = dict(sql) if sql else None
        self.outcome = outcome or ResultTotals()
        self.detail = detail
        #: which limit a limits.too_many_queries refusal hit ("identity" or "connector")
        self.limit = limit
        #: a session operation's state after it (SPEC.md 7.4), for the record
        self.session = dict(session) if session else None

    def record(self, query_id: str) -> bytes:
        """The ERROR payload: the ``{"error": {...}}`` line the client gets."""
        message = self.message
        if self.detail:
            message += f" (the cause is in the connector's log under query_id {query_id})"
        return error_record(
            self.code,
            message,
            query_id=query_id,
            sql=self.sql,
            limit=self.limit,
            session=self.session,
        )
