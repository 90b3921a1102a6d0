"""What each client request means for the Session: SQL batches, RPC procedures, TM requests.

Blocking code (runs in the worker thread, see `_requests`). sp_prepare handles are kept here per
connection: a handle maps to (statement, parameter declaration).
"""

from __future__ import annotations

import functools
import itertools
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from tdslite.engine import Param, PreamblePlan, SqlError, SqlType, convert
from tdslite.engine._bulk import BulkTarget, is_insert_bulk

from . import _rpc
from . import _tokens as tk
from ._buffer import Reader
from ._bulkload import bulk_load, insert_bulk
from ._callcache import CallCache
from ._columns import returnvalue
from ._datatypes import decode_utf16
from ._packets import Message, PacketType, ProtocolError
from ._reply import TDS72, Reply
from ._requests import (
    Request,
    SessionState,
    env_changes,
    internal_error,
    log_statement,
    run_statements,
    write_error,
)
from ._tokens import Done
from ._wiretype import UnsupportedParameter, WireType

_log = logging.getLogger("tdslite.server")

#: The largest request `Dispatcher.runs_inline` considers (the preamble is a few hundred bytes).
_INLINE_MAX = 8192
#: The most calls of one request `Dispatcher.runs_inline` considers (the preamble and a SELECT).
_INLINE_CALLS = 2

#: A request's first call planned as the session's preamble (`Dispatcher.runs_inline`): its
#: statement, its bound parameters' names and types (for the statement log), the plan.
_Preamble = tuple[str, tuple[tuple[str, str], ...], PreamblePlan]

#: Transaction Manager request types (MS-TDS 2.2.6.9).
TM_BEGIN_XACT = 5
TM_COMMIT_XACT = 7
TM_ROLLBACK_XACT = 8
TM_SAVE_XACT = 9
#: TM_BEGIN_XACT's isolation level byte (0: keep the session's) -> SET TRANSACTION ISOLATION LEVEL.
TM_ISOLATION_LEVELS = {
    1: "READ UNCOMMITTED",
    2: "READ COMMITTED",
    3: "REPEATABLE READ",
    4: "SERIALIZABLE",
    5: "SNAPSHOT",
}


@dataclass
class Prepared:
    statement: str
    declared: tuple[tuple[str, str], ...]


@dataclass
class Dispatcher:
    state: SessionState
    prepared: dict[int, Prepared] = field(default_factory=dict)
    _status: int = 0  # RETURNSTATUS of the procedure call being answered
    #: the INSERT BULK whose rows the next message (a BulkLoad) carries
    pending_bulk: BulkTarget | None = None
    _handles: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    #: the RPC message `runs_inline` parsed last, for `rpc` to reuse (each request is parsed
    #: and bound once, whether or not it runs inline): the payload, its first call when the
    #: session planned it as its preamble, the other calls and the parameters it bound of
    #: those (as far as it went)
    _parsed: tuple[bytes, _Preamble | None, list[_rpc.RpcCall], list[list[Param]]] | None = None
    #: templates of the preamble calls this connection was sent (`_callcache`)
    _calls: CallCache = field(default_factory=CallCache)

    # --- SQL batch -------------------------------------------------------------------------------

    def batch(self, request: Request, payload: bytes) -> None:
        r = Reader(payload)
        headers = request.reply.tds_version >= TDS72  # ALL_HEADERS came with TDS 7.2
        if (
            headers
            and len(payload) >= 4
            and 4 <= int.from_bytes(payload[:4], "little") <= len(payload)
        ):
            r.skip_all_headers()
        sql = decode_utf16(r.take(r.remaining()), "replace")
        self.pending_bulk = None
        if is_insert_bulk(sql):
            self.pending_bulk = insert_bulk(self.state, request, sql)
            return
        run_statements(self.state, request, sql, in_proc=False)

    # --- Bulk load (after INSERT BULK) -----------------------------------------------------------

    def bulk(self, request: Request, payload: bytes) -> None:
        target, self.pending_bulk = self.pending_bulk, None
        bulk_load(self.state, request, target, payload)

    # --- Transaction Manager ---------------------------------------------------------------------

    def transaction(self, request: Request, payload: bytes) -> None:
        r = Reader(payload)
        if request.reply.tds_version >= TDS72:  # ALL_HEADERS came with TDS 7.2
            r.skip_all_headers()
        kind = r.u16()
        session = self.state.session
        reply = request.reply
        try:
            if kind == TM_BEGIN_XACT:
                # ISOLATION_LEVEL (BYTE) and BEGIN_XACT_NAME (B_VARCHAR): a level other than 0
                # is a session setting, as SET TRANSACTION ISOLATION LEVEL (it outlives the
                # transaction); the name is BEGIN TRANSACTION's.
                level = r.u8() if r.remaining() else 0
                named = r.take(r.u8()).decode("utf-16-le", "replace") if r.remaining() else ""
                if level and level not in TM_ISOLATION_LEVELS:
                    raise SqlError(
                        8522, f"transaction manager BEGIN with unknown isolation level {level}"
                    )
                if level:
                    session.isolation = TM_ISOLATION_LEVELS[level]
                if named:
                    session.begin(named)
                else:
                    session.begin()
            elif kind in (TM_COMMIT_XACT, TM_ROLLBACK_XACT, TM_SAVE_XACT):
                name = r.take(r.u8()).decode("utf-16-le", "replace") or None
                flags = r.u8() if r.remaining() and kind != TM_SAVE_XACT else 0
                if kind == TM_COMMIT_XACT:
                    session.commit()
                elif kind == TM_ROLLBACK_XACT:
                    session.rollback(name)
                elif name is None:
                    raise SqlError(
                        102, "Incorrect syntax near 'SAVE TRANSACTION': a name is needed."
                    )
                else:
                    session.save(name)
                if flags & 0x01:  # fBeginXact: start the next transaction straight away
                    session.begin()
            else:
                raise SqlError(
                    8522,
                    f"transaction manager request {kind} is not supported by tdslite "
                    "(only begin, commit, rollback and save)",
                )
        except SqlError as exc:
            env_changes(self.state, reply)
            write_error(reply, exc)
            return
        env_changes(self.state, reply)
        reply.write(tk.done(Done.INXACT if session.in_transaction else Done.FINAL, 0))

    # --- inline requests ---------------------------------------------------------------------

    def runs_inline(self, msg: Message, tds_version: int) -> bool:
        """Whether ``msg`` may be answered on the event loop instead of a worker thread: an RPC
        request of at most `_INLINE_CALLS` sp_executesql calls, each of which the session says
        neither waits nor takes long: the first may set session context keys
        (`Session.preamble_plan`: the per-query preamble of a pooling client,
        engine/_preamble.py), the others (and a first one that does not) may only select values
        (`Session.select_inline`: ``SELECT @n AS n``, ``SELECT 1``); with RESETCONNECTION the
        reset must be quick too (`Session.reset_inline`). Only with an in-memory statement log.
        The answer is the same either way (`Connection._dispatch` runs in both); a thread hop
        costs more than such a request's own work."""
        log = self.state.statement_log
        if msg.type != PacketType.RPC or msg.ignored or len(msg.payload) > _INLINE_MAX:
            return False
        if log is not None and not log.in_memory_only:
            return False
        session = self.state.session
        preamble = getattr(session, "preamble_plan", None)
        if preamble is None:
            return False
        self._parsed = None
        reset = msg.reset_connection
        payload = msg.payload
        skip_headers = tds_version >= TDS72
        try:
            first: _Preamble | None = None
            bound: list[list[Param]] = []
            # a first call a template reads comes with its values, unparsed (see `_callcache`)
            hit = None
            if self._calls.templates:
                hit = self._calls.lookup(payload, skip_headers=skip_headers)
            if hit is not None:
                template, values, calls = hit
                if len(calls) < _INLINE_CALLS:
                    plan = session.preamble_plan_values(template.shape, values, reset=reset)
                    if plan is not None:
                        first = (template.statement, template.log_params, plan)
                if first is None:  # the call as `_rpc.parse` reads it: as without a template
                    calls = [template.call(values), *calls]
            else:
                calls = _rpc.parse(payload, skip_headers=skip_headers)
            self._parsed = (payload, first, calls, bound)
            if len(calls) + (first is not None) > _INLINE_CALLS:
                return False
            for i, call in enumerate(calls):
                if call.name != "sp_executesql" or len(call.params) < 2:
                    return False
                p = call.params
                stmt, decl = _text_param(p, 0, "@stmt"), _text_param(p, 1, "@params")
                params = _bind(p[2:], _rpc.declared_params(decl))
                if i == 0 and first is None:
                    plan = preamble(stmt, params, reset=reset)
                    if plan is not None:
                        first = (stmt, tuple((q.name, q.type.text) for q in params), plan)
                        self._parsed = (payload, first, calls[1:], bound)
                        if hit is None:
                            self._calls.add(
                                payload, call, params, plan[0], skip_headers=skip_headers
                            )
                        continue
                    if reset and not session.reset_inline():
                        bound.append(params)
                        return False
                bound.append(params)
                if not session.select_inline(stmt, params):
                    return False
        except Exception:  # noqa: BLE001 - whatever is wrong, the worker thread reports it
            return False
        return True

    # --- RPC -------------------------------------------------------------------------------------

    def rpc(self, request: Request, payload: bytes) -> None:
        self.pending_bulk = None
        parsed, self._parsed = self._parsed, None
        first: _Preamble | None = None
        bound: list[list[Param]] = []
        try:
            if parsed is not None and parsed[0] is payload:
                _, first, calls, bound = parsed  # `runs_inline` parsed this very message
            else:
                calls = _rpc.parse(payload, skip_headers=request.reply.tds_version >= TDS72)
        except UnsupportedParameter as exc:
            write_error(request.reply, SqlError(8016, str(exc)), token=tk.TOKEN_DONEPROC)
            return
        # the first call, when `runs_inline` planned it, then the others (`calls`)
        offset = 0 if first is None else 1
        answers = len(calls) + offset
        returns: list[bytes]
        for i in range(answers):
            if first is not None and i == 0:
                ok, returns = self._preamble(request, *first), []
            else:
                j = i - offset
                ok, returns = self._call(request, calls[j], bound[j] if j < len(bound) else None)
            reply = request.reply
            if ok:
                reply.write(tk.RETURN_0 if self._status == 0 else tk.returnstatus(self._status))
            for token in returns:
                reply.write(token)
            status = Done.FINAL if ok else Done.ERROR
            if i < answers - 1:
                # as SQL Server: the next RPC of the batch runs even when this one failed (short
                # of a fatal error or an ATTENTION); DONE_RPCINBATCH marks where this one's answer
                # ends (MS-TDS 2.2.7.8)
                status |= Done.MORE | Done.RPCINBATCH
            if self.state.session.in_transaction:
                status |= Done.INXACT
            reply.write(tk.done(status, 0, token=tk.TOKEN_DONEPROC))
            if request.cancelled:
                return

    def _call(
        self, request: Request, call: _rpc.RpcCall, bound: list[Param] | None = None
    ) -> tuple[bool, list[bytes]]:
        """Run one procedure call; returns (succeeded, RETURNVALUE tokens to send back).
        ``bound``: an sp_executesql call's parameters as `runs_inline` bound them."""
        p = call.params
        self._status = 0
        try:
            if call.name == "sp_executesql":
                stmt = _text_param(p, 0, "@stmt")
                if bound is None:
                    decl = _text_param(p, 1, "@params") if len(p) > 1 else ""
                    bound = _bind(p[2:], _rpc.declared_params(decl))
                return self._run(request, stmt, bound), []
            if call.name == "sp_prepexec":
                decl = _text_param(p, 1, "@params") if len(p) > 1 else ""
                stmt = _text_param(p, 2, "@stmt")
                handle = self._prepare(stmt, decl)
                params = _bind(p[3:], self.prepared[handle].declared)
                return self._run(request, stmt, params), [_handle(p[0].name, handle)]
            if call.name == "sp_prepare":
                decl = _text_param(p, 1, "@params")
                stmt = _text_param(p, 2, "@stmt")
                handle = self._prepare(stmt, decl)
                return True, [_handle(p[0].name, handle)]
            if call.name == "sp_execute":
                prepared = self.prepared.get(_int_param(p, 0, "@handle"))
                if prepared is None:
                    raise SqlError(8179, "Could not find prepared statement with handle.")
                params = _bind(p[1:], prepared.declared)
                return self._run(request, prepared.statement, params), []
            if call.name == "sp_unprepare":
                self.prepared.pop(_int_param(p, 0, "@handle"), None)
                return True, []
            if call.name == "sp_reset_connection":
                self.reset(request.reply, how="sp_reset_connection")
                return True, []
            if call.name in _rpc.PROC_IDS.values():
                raise SqlError(
                    2812,
                    f"{call.name} (server cursors) is not supported by tdslite; "
                    "use sp_executesql or a plain batch",
                )
            return self._procedure(request, call)
        except SqlError as exc:
            write_error(request.reply, exc, token=None)  # rpc() ends it with DONEPROC(ERROR)
            return False, []

    def _preamble(
        self, request: Request, stmt: str, log_params: Sequence[tuple[str, str]], plan: PreamblePlan
    ) -> bool:
        """The preamble call `runs_inline` planned (its statement, its parameters' names and
        types, the plan), answered as `_call` and `run_statements` answer it: the keys set, no
        token (no transaction, as `Session.preamble_plan` made sure, and no database switched:
        nothing ENVCHANGE reports), one statement-log entry, success. Should the engine refuse
        it after all, the error is answered as `run_statements` answers a failed statement of an
        RPC (`rpc` ends the call with DONEPROC(ERROR)). Returns whether it succeeded."""
        state = self.state
        self._status = 0
        log = state.statement_log
        if log is not None:
            log.started(state.connection_id, stmt)
        ok = True
        outcome: dict[str, object] = {"rows": 0, "affected": 0}
        try:
            state.session.run_preamble(plan)
        except Exception as exc:  # an engine bug must not kill the connection either
            error = exc if isinstance(exc, SqlError) else internal_error(exc)
            if not isinstance(exc, SqlError):
                _log.exception("statement failed inside tdslite")
            write_error(request.reply, error, token=None)
            ok, outcome = False, {"error": error.number}
        log_statement(state, stmt, outcome, "rpc", params=log_params)
        return ok

    def _procedure(self, request: Request, call: _rpc.RpcCall) -> tuple[bool, list[bytes]]:
        """Any other procedure, by name: its return status and OUTPUT parameters."""
        # The engine records the call's outcome in `Session.objects` (an engine without
        # procedures, such as the tests' stand-in, has none: status 0, no outputs).
        objects = getattr(self.state.session, "objects", None)
        if objects is not None:
            objects.outcome = None
        ok = self._run(request, _exec_text(call), _bind(call.params, ()))
        outcome = None if objects is None else objects.outcome
        if outcome is None:
            return ok, []
        self._status, outputs = outcome
        returns = []
        for i, param in enumerate(call.params):
            name = param.name or f"@P{i + 1}"
            found = outputs.get(name[1:].lower()) if param.output else None
            if found is not None:
                returns.append(returnvalue(i, param.name, found[0], found[1]))
        return ok, returns

    def _run(self, request: Request, stmt: str, params: list[Param]) -> bool:
        return run_statements(self.state, request, stmt, params, in_proc=True, kind="rpc")

    def _prepare(self, stmt: str, decl: str) -> int:
        handle = next(self._handles)
        self.prepared[handle] = Prepared(stmt, _rpc.declared_params(decl))
        return handle

    def reset(self, reply: Reply, *, how: str = "RESETCONNECTION") -> None:
        """RESETCONNECTION / sp_reset_connection: engine state back to a fresh login.

        An open transaction is rolled back and the client told so (ENVCHANGE 10) before anything
        else: python-tds and tedious then drop the transaction descriptor they hold.
        """
        state = self.state
        state.session.reset()
        env_changes(state, reply)
        self.prepared.clear()
        log = state.statement_log
        if log is not None:
            log.record(
                connection=state.connection_id,
                login=state.login,
                user=state.session.effective_user,
                statement=how,
                outcome={"reset": True},
                kind="reset",
            )


def _handle(name: str, handle: int) -> bytes:
    return tk.returnvalue_int(0, name or "@handle", handle)


_PARAM_NAME = re.compile(r"@[^\W\d][\w@#$]*|@[@#$_][\w@#$]*")


def _exec_text(call: _rpc.RpcCall) -> str:
    """An RPC to a named procedure as the equivalent T-SQL ``EXEC name @a = @a, ...``
    (a parameter sent without a name is passed by position)."""
    args = []
    for i, param in enumerate(call.params):
        name = param.name or f"@P{i + 1}"
        if not _PARAM_NAME.fullmatch(name):
            raise ProtocolError(f"RPC parameter name {name!r} is not a T-SQL @name")
        passed = f"{name} = {name}" if param.name else name
        args.append(passed + (" OUTPUT" if param.output else ""))
    parts = [p or "dbo" for p in call.parts] or [call.name]
    # the name as written (a schema too), each part quoted: it is an object name, never SQL
    procedure = ".".join("[" + p.replace("]", "]]") + "]" for p in parts)
    return f"EXEC {procedure} " + ", ".join(args) if args else f"EXEC {procedure}"


def _text_param(params: Sequence[_rpc.RpcParam], index: int, name: str) -> str:
    if len(params) <= index or not isinstance(params[index].value, str):
        raise SqlError(214, f"Procedure expects parameter '{name}' of type 'ntext/nchar/nvarchar'.")
    return str(params[index].value)


def _int_param(params: Sequence[_rpc.RpcParam], index: int, name: str) -> int:
    value = params[index].value if len(params) > index else None
    if not isinstance(value, int) or isinstance(value, bool):
        raise SqlError(8144, f"Procedure expects parameter '{name}' of type int.")
    return value


@functools.lru_cache(maxsize=512)
def _sql_type(wire: WireType) -> SqlType:
    """The engine type of a wire type (both immutable: cached by the wire type's fields)."""
    return SqlType(wire.name, length=wire.length, precision=wire.precision, scale=wire.scale)


def _bind(params: Sequence[_rpc.RpcParam], declared: tuple[tuple[str, str], ...]) -> list[Param]:
    """Engine Params: the client's names, or else the declaration's names by position.

    As sp_executesql does, a value is converted to its DECLARED type when the client sent it as
    another (e.g. a datetime2(7) with all 7 digits sent as nvarchar, which python-tds cannot
    carry as datetime2): the statement sees the declared type, not the wire type.
    """
    types = _declared_types(declared)
    out = []
    for i, param in enumerate(params):
        name = param.name or (declared[i][0] if i < len(declared) else f"@P{i + 1}")
        if not name.startswith("@"):
            raise ProtocolError(f"RPC parameter name {name!r} does not start with @")
        value = param.value
        sql_type, target = _bind_types(param.type, types.get(name.lower(), ""))
        if target is not None:
            value, sql_type = convert(value, target, source=sql_type), target
        elif sql_type.name == "xml":  # an xml parameter is checked as SQL Server does (9400..)
            value = convert(value, sql_type, source=SqlType("nvarchar", length=-1))
        out.append(_new_tuple(Param, (name, sql_type, value, param.output)))
    return out


#: ``Param(*fields)`` without the Python-level ``__new__`` a NamedTuple has
_new_tuple = tuple.__new__


@functools.lru_cache(maxsize=256)
def _declared_types(declared: tuple[tuple[str, str], ...]) -> dict[str, str]:
    """Parameter name in lower case -> declared type text (cached: never change the dict)."""
    return {name.lower(): text for name, text in declared}


@functools.lru_cache(maxsize=512)
def _bind_types(wire: WireType, declared: str) -> tuple[SqlType, SqlType | None]:
    """(the engine type of a parameter sent as ``wire``, the type it is converted to: the one
    ``declared`` when tdslite knows it and it differs, else None). Cached (both immutable)."""
    sql_type = _sql_type(wire)
    target = _declared_type(declared)
    return sql_type, target if target is not None and target != sql_type else None


@functools.lru_cache(maxsize=256)
def _declared_type(text: str) -> SqlType | None:
    """The declared type, or None when absent or not one tdslite knows (the wire type is used).
    Cached by the exact text (SqlType is immutable)."""
    if not text:
        return None
    try:
        return SqlType.parse(text)
    except ValueError:
        return None
