"""Bulk load requests: the INSERT BULK batch and the BulkLoad message that follows it.

Blocking code (runs in the worker thread, see `_requests`). The INSERT BULK is checked at once
(table, columns, INSERT permission) and answered with a DONE; the BulkLoad message is then
decoded (`_bulk`) and its rows inserted by the engine as one unit, answered with DONE(COUNT).
"""

from __future__ import annotations

from tdslite.engine import SqlError
from tdslite.engine._bulk import BulkTarget, bulk_insert, check_columns, prepare_bulk

from . import _tokens as tk
from ._buffer import Reader
from ._bulk import read_colmetadata, read_rows
from ._colmetadata import column_types
from ._params import read_param
from ._requests import Request, SessionState, env_changes, log_statement, write_error
from ._tokens import Done
from ._wiretype import UnsupportedParameter


def _status(state: SessionState, base: int) -> int:
    return base | (Done.INXACT if state.session.in_transaction else 0)


def insert_bulk(state: SessionState, request: Request, sql: str) -> BulkTarget | None:
    """INSERT BULK: the target of the rows to come, or None after an error reply."""
    reply = request.reply
    try:
        target = prepare_bulk(state.session, sql)
    except SqlError as exc:
        write_error(reply, exc)
        log_statement(state, sql, {"error": exc.number}, "batch")
        return None
    reply.write(tk.done(_status(state, Done.FINAL), 0))
    log_statement(state, sql, {"rows": 0, "affected": 0}, "batch")
    return target


def bulk_load(
    state: SessionState, request: Request, target: BulkTarget | None, payload: bytes
) -> None:
    """The BulkLoad message: insert its rows into ``target`` (all or none)."""
    reply = request.reply
    name = "bulk load" if target is None else f"bulk load into {target.table.name}"
    try:
        if target is None:
            raise SqlError(
                4815,
                "Bulk load data arrived without a preceding INSERT BULK statement (tdslite "
                "accepts bulk load only right after INSERT BULK).",
            )
        r = Reader(payload)
        columns = read_colmetadata(r)
        check_columns(target, [c.name for c in columns])
        types = column_types(r, columns, read_param)
        count = bulk_insert(state.session, target, types, read_rows(r, columns))
    except UnsupportedParameter as exc:
        err = SqlError(4816, str(exc))
        env_changes(state, reply)
        write_error(reply, err)
        log_statement(state, name, {"error": err.number}, "bulk")
        return
    except SqlError as exc:
        if request.cancelled:
            state.session.statement_failed(SqlError(3617, "cancelled by the client (attention)"))
        else:
            state.session.statement_failed(exc)
        env_changes(state, reply)
        write_error(reply, exc)
        log_statement(state, name, {"error": exc.number}, "bulk")
        return
    env_changes(state, reply)
    reply.write(tk.done(_status(state, Done.FINAL | Done.COUNT), count))
    log_statement(state, name, {"rows": 0, "affected": count}, "bulk")
