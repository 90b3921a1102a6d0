"""Running one client request against the engine Session, in a worker thread, into a Reply.

Everything here is blocking and runs under ``trio.to_thread.run_sync``: the connection task keeps
reading the socket meanwhile, so an ATTENTION can set `Request.cancelled` and call
``Session.cancel()``. Results become tokens as they come: COLMETADATA, ROW/NBCROW, DONE (batch) or
DONEINPROC (inside an RPC) with MORE/COUNT/INXACT, ENVCHANGE when the transaction or database
changed, ERROR + DONE(ERROR) for a SqlError. The statement log gets one entry per statement text.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tdslite.engine import Info, Param, ResultSet, Session, SqlError, StatementFailed

from . import _tokens as tk
from ._columns import row_encoder
from ._reply import Reply
from ._statementlog import StatementLog
from ._tokens import Done, EnvChange

log = logging.getLogger("tdslite.server")

#: Error number for a failure inside tdslite itself (reported, never a crash).
INTERNAL_ERROR = 50000


@dataclass
class Request:
    """One client request in flight; `cancelled` is set by the connection task on ATTENTION."""

    reply: Reply
    cancelled: bool = False
    done: Any = None  #: trio.Event set when the reply is sent


@dataclass
class SessionState:
    """The connection's view of its session: the transaction and database last told the client."""

    session: Session
    connection_id: int
    login: str
    statement_log: StatementLog | None
    descriptor: int = 0
    database: str = ""
    next_descriptor: Callable[[], int] = field(default=lambda: 1)


def env_changes(state: SessionState, reply: Reply) -> None:
    """Emit ENVCHANGE for each transaction begun (8) or ended by commit (9) or rollback (10), in
    order, and for a database switched, since last time (as SQL Server: only the outermost BEGIN
    and the end of the whole transaction are reported, not nesting levels or savepoints)."""
    session = state.session
    if session.database != state.database:
        reply.write(tk.database_changed(session.database, state.database))
        state.database = session.database
    for event in session.take_transaction_events():
        if event == "begin":
            state.descriptor = state.next_descriptor()
            new = state.descriptor.to_bytes(8, "little")
            reply.write(tk.envchange_bytes(EnvChange.BEGIN_TRAN, new, b""))
        elif state.descriptor:
            old = state.descriptor.to_bytes(8, "little")
            state.descriptor = 0
            kind = EnvChange.ROLLBACK_TRAN if event == "rollback" else EnvChange.COMMIT_TRAN
            reply.write(tk.envchange_bytes(kind, b"", old))


def _status(state: SessionState, base: int) -> int:
    return base | (Done.INXACT if state.session.in_transaction else 0)


def _error_token(exc: SqlError, *, info: bool = False) -> bytes:
    token = tk.message(
        exc.number,
        exc.message,
        state=exc.state,
        severity=exc.severity,
        line=exc.line,
        info=info,
        proc=exc.procedure or "",
    )
    if exc.terminated:  # a DML statement ended by the error: SQL Server says so (INFO 3621)
        token += tk.message(3621, "The statement has been terminated.", state=0, severity=0,
                            line=exc.line, info=True)  # fmt: skip
    return token


def internal_error(exc: BaseException) -> SqlError:
    return SqlError(INTERNAL_ERROR, f"tdslite internal error ({type(exc).__name__}): {exc}")


def run_statements(
    state: SessionState,
    request: Request,
    sql: str,
    params: Sequence[Param] = (),
    *,
    in_proc: bool,
    kind: str = "batch",
) -> bool:
    """Run ``sql`` and write its tokens (without the final DONE/DONEPROC of an RPC).

    Returns False when the request failed (an ERROR token was written).
    For a batch (``in_proc=False``) the last DONE is written too, without MORE.
    """
    reply = request.reply
    token = tk.TOKEN_DONEINPROC if in_proc else tk.TOKEN_DONE
    pending: tuple[int, int, int] | None = None  # (status, count, curcmd) of the last statement
    rows_total = affected = 0
    outcome: dict[str, Any]
    ok = True

    def flush_pending(more: bool) -> None:
        nonlocal pending
        if pending is not None:
            status, count, curcmd = pending
            status |= Done.MORE if more else 0
            reply.write(tk.done(_status(state, status), count, token=token, curcmd=curcmd))
            pending = None

    failed: list[int] = []  # statement-level errors after which the batch went on

    def statement_failed(exc: SqlError) -> None:
        nonlocal pending
        flush_pending(True)
        env_changes(state, reply)
        reply.write(_error_token(exc))
        pending = (Done.ERROR, 0, 0)
        failed.append(exc.number)

    results = None
    if state.statement_log is not None:
        state.statement_log.started(state.connection_id, sql)
    try:
        results = state.session.execute(sql, params)
        for result in results:
            flush_pending(True)
            env_changes(state, reply)
            # SET NOCOUNT ON: the DONE still comes, without DONE_COUNT (as SQL Server does)
            counted = 0 if getattr(state.session, "nocount", False) else Done.COUNT
            if isinstance(result, StatementFailed):
                statement_failed(result.error)
            elif isinstance(result, Info):  # PRINT, RAISERROR severity <= 10: no DONE
                reply.write(_error_token(result.error, info=True))
                if result.nowait:
                    reply.flush()
            elif isinstance(result, ResultSet):
                try:
                    n = _stream_rows(result, reply, request)
                except SqlError as exc:
                    # an error while rows were produced (e.g. divide by zero in row 1,000)
                    goes_on = state.session.statement_failed(exc)  # may roll back
                    if request.cancelled or not goes_on:
                        raise
                    statement_failed(exc)
                    continue
                rows_total += n
                pending = (counted, n, tk.CURCMD_SELECT)
            elif result.select:  # SELECT @v = ...: a SELECT's DONE, without rows
                rows_total += result.count
                pending = (counted, result.count, tk.CURCMD_SELECT)
            else:
                affected += result.count
                pending = (counted, result.count, 0)
            if request.cancelled:
                break
        outcome = {"rows": rows_total, "affected": affected}
        if failed:
            ok = False
            outcome["error"] = failed[0]
    except SqlError as exc:
        if request.cancelled:
            outcome = {"cancelled": True}
        else:
            ok = False
            flush_pending(True)
            env_changes(state, reply)
            reply.write(_error_token(exc))
            # in an RPC the DONEPROC(ERROR) that follows carries the error bit: a DONEINPROC(ERROR)
            # here would make python-tds raise before the end of the reply (and its callproc never
            # reads the rest)
            pending = None if in_proc else (Done.ERROR, 0, 0)
            outcome = {"error": exc.number}
    except Exception as exc:  # an engine bug must not kill the connection
        log.exception("statement failed inside tdslite")
        ok = False
        flush_pending(True)
        err = internal_error(exc)
        reply.write(_error_token(err))
        pending = None if in_proc else (Done.ERROR, 0, 0)
        outcome = {"error": err.number}
    finally:
        close = getattr(results, "close", None)
        if close is not None:
            close()
    if request.cancelled:
        outcome = {"cancelled": True}
        pending = None
        # an ATTENTION ends the batch; with XACT_ABORT ON it also rolls the transaction back
        state.session.statement_failed(SqlError(3617, "cancelled by the client (attention)"))
    env_changes(state, reply)
    if in_proc:
        flush_pending(True)
    elif pending is None and not request.cancelled:
        reply.write(tk.done(_status(state, Done.FINAL), 0))
    else:
        flush_pending(False)
    log_statement(state, sql, outcome, kind, params=[(p.name, p.type.text) for p in params])
    return ok


def log_statement(
    state: SessionState,
    statement: str,
    outcome: dict[str, Any],
    kind: str,
    *,
    params: Sequence[tuple[str, str]] = (),
) -> None:
    """One statement-log entry (parameter names and types only, never values)."""
    if state.statement_log is not None:
        state.statement_log.record(
            connection=state.connection_id,
            login=state.login,
            user=state.session.effective_user,
            statement=statement,
            params=params,
            outcome=outcome,
            kind=kind,
        )


def _stream_rows(result: ResultSet, reply: Reply, request: Request) -> int:
    encoder = row_encoder(result.columns, reply.tds_version)
    reply.write(encoder.colmetadata())
    n = 0
    rows = result.rows
    try:
        for row in rows:
            reply.write(encoder.row(row))
            n += 1
            if request.cancelled:
                break
    finally:
        close = getattr(rows, "close", None)
        if close is not None:
            close()
    return n


def write_error(reply: Reply, exc: SqlError, *, token: int | None = tk.TOKEN_DONE) -> None:
    """An ERROR token then (unless ``token`` is None) a DONE-family token with the ERROR bit."""
    reply.write(_error_token(exc))
    if token is not None:
        reply.write(tk.done(Done.ERROR, 0, token=token))
