"""Session: one per TDS connection; runs batches, holds session state, enforces permissions.

State: the login, the EXECUTE AS stack, session context, transaction count, @@ROWCOUNT,
SCOPE_IDENTITY, SET NOCOUNT / IDENTITY_INSERT.  ``execute`` parses the whole batch first (a syntax
error or unsupported construct anywhere runs nothing, as in SQL Server), then runs one statement
each time its iterator is advanced.  An error ends the batch, or only its statement (see
`Session.statement_failed`: SQL Server's rules with XACT_ABORT ON and OFF).
"""

from __future__ import annotations

import contextlib
import functools
import sqlite3
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any

from sqlglot import exp

from . import (
    _control,
    _errors,
    _flow,
    _objects,
    _preamble,
    _statements,
    _sysfuncs,
    _sysrows,
    _sysviews,
    _tvp,
)
from ._batch import STATEMENT_KEYWORDS, Statement, parse_statement, split_batch
from ._catalog import Catalog, TableInfo, forget_table
from ._errmap import map_sqlite_error
from ._errors import SqlError
from ._functions import FunctionErrors
from ._options import SessionOptions
from ._perms import Authorizer, Principal
from ._results import Info, ResultSet, RowCount, StatementFailed
from ._scope import Context
from ._state import EngineView, FlowState, Prepared, SessionObjects, Variable
from ._translate import UNKNOWN, Translator, is_unknown, to_sqlite
from ._types import STRING_TYPES, Column, Param, SqlType
from ._typing import guess_type
from ._users import User
from ._values import Storage, decode, decoder, encode

_SQLGLOT_KEYWORDS = frozenset(
    {"SELECT", "WITH", "(", "INSERT", "UPDATE", "DELETE", "CREATE", "DROP", "TRUNCATE", "DECLARE"}
)


#: Errors that end only their statement (undone alone); with XACT_ABORT OFF the batch goes on
#: and an open transaction stays open: constraint violations, truncation, divide by zero and
#: arithmetic overflow (ANSI_WARNINGS and ARITHABORT ON, the client default), permissions,
#: transaction statements without a transaction, object errors of DDL.
STATEMENT_ERRORS = frozenset(
    {515, 544, 547, 2601, 2627, 2628, 8134, 8115, 229, 262, 2714, 3701, 1088, 3902, 3903, 6401}
    | {628, 15517, 15406, 15664, 15665, 201, 8145, 119, 911, 1222, 3930, 2741, 1005}
    | {8144, 8162, 2760, 3705, 4506, 4511, 217, 3906}
)
#: Errors that end the batch and roll back the open transaction even with XACT_ABORT OFF:
#: conversion failures and a lock conflict (deadlock victim).
ROLLBACK_ERRORS = frozenset({241, 245, 8114, 8169, 1205})
#: Errors of a statement's compilation (syntax, unknown names, unsupported): they end the batch,
#: and XACT_ABORT does not roll back the transaction for them.
COMPILE_ERRORS = frozenset({102, 105, 111, 134, 137, 178, 195, 207, 208, 209, 1087, 40517})

_CONTROL_KEYWORDS = frozenset(
    {"USE", "BEGIN", "COMMIT", "ROLLBACK", "SAVE", "REVERT", "EXEC", "EXECUTE"}
)
#: The catalog of master: no user tables.
_NO_TABLES = Catalog()
#: SET TRANSACTION ISOLATION LEVEL -> sys.dm_exec_sessions.transaction_isolation_level.
_ISOLATION_CODES = {
    "READ UNCOMMITTED": 1,
    "READ COMMITTED": 2,
    "REPEATABLE READ": 3,
    "SERIALIZABLE": 4,
    "SNAPSHOT": 5,
}
#: How many started statements a session keeps in `Session.started`.
_STARTED_KEPT = 64
#: what a preamble batch's calls and its parameters' names and types make of it
#: (`_preamble_shape`): the calls; whether each parameter's string value is its own storage
#: form (a string type); each parameter's type; for each call its key, the index of the
#: parameter its value is, read_only, and whether a string value is stored as it is (a string
#: type other than (max))
PreambleShape = tuple[
    tuple[_preamble.Call, ...],
    tuple[bool, ...],
    tuple[SqlType, ...],
    tuple[tuple[str, int, bool, bool], ...],
]
#: a preamble batch's shape and each parameter's value in storage form (`Session.preamble_plan`)
PreamblePlan = tuple[PreambleShape, list[Storage]]
#: the SET options of a new session (`Session.reset` keeps options that still are these)
_NEW_OPTIONS = vars(SessionOptions())


@functools.lru_cache(maxsize=256)
def _split(sql: str) -> tuple[Statement, ...]:
    return tuple(split_batch(sql))


class Session:
    """One client connection's session (NOT thread-safe, except `cancel`).

    Attributes:
        user: the login.
        effective_user: the database user now in effect (after EXECUTE AS).
        database: the database name.
        spid: the session id (@@SPID).
        nocount: SET NOCOUNT is ON (the wire layer may then omit DONE_COUNT).
        started: the keywords (SELECT, DELETE, REVERT...) of the last statements this session
            started to run, oldest first: what a batch actually ran, as opposed to what it said.
    """

    def __init__(
        self, engine: EngineView, user: User, conn: sqlite3.Connection, *, spid: int, database: str
    ) -> None:
        from . import _functions

        self._engine = engine
        self.user = user
        self.database = database
        self.spid = spid
        self.nocount = False
        self._assigned_rows = 0  # rows read by the last SELECT @v = ...
        self.started: deque[str] = deque(maxlen=_STARTED_KEPT)
        self._conn = conn
        self._catalog = Catalog()
        self._stack: list[Principal] = [engine.principal(user.database_user)]
        self._context: dict[str, tuple[object, SqlType, bool]] = {}
        self._trancount = 0
        self._tran_name: str | None = None  # the outermost BEGIN TRAN's name
        self._savepoints: list[tuple[str, str]] = []  # (T-SQL name, SQLite savepoint name)
        self._savepoint_ids = 0
        self._tx_events: list[str] = []  # "begin" / "commit" / "rollback", not yet reported
        self.xact_abort = False
        self.set_options = SessionOptions()  # SET options other than NOCOUNT / XACT_ABORT
        self.flow = FlowState()  # CATCH errors, doomed transaction, @@ERROR
        self.host_name = ""  # HOST_NAME(): the client's workstation name from LOGIN7
        self._rowcount = 0
        self._identity: int | None = None
        self._identity_insert: set[str] = set()
        self.objects = SessionObjects()  # temporary objects, procedure calls
        self.return_status = 0  # of the last statement list run (RETURN n)
        self._open_rows: Iterator[Any] | None = None
        #: SET TRANSACTION ISOLATION LEVEL (SET LOCK_TIMEOUT is in `set_options`)
        self.isolation = "READ COMMITTED"
        #: table-valued parameters of the running request: name -> the table type's columns
        self._table_params: dict[str, list[Column]] = {}
        self._closed = False
        self._lock = threading.Lock()
        self._fn_errors = FunctionErrors()
        self._authorizer = Authorizer(self._stack[-1])
        _functions.register(conn, self._fn_errors, self._session_context_value)
        _sysfuncs.register(self)  # DB_NAME(id), SERVERPROPERTY
        #: Facts the wire layer knows (host_name, program_name, client_net_address, ...):
        #: what sys.dm_exec_sessions / sys.dm_exec_connections show of this session.
        self.client: dict[str, object] = {}
        self._sysview_rows: dict[str, str] = {}
        conn.create_function(
            "tds_sysview", 1, lambda name: self._sysview_rows.get(name, "[]"), deterministic=True
        )
        conn.create_function(
            "tds_meta", -1, lambda name, *args: _sysfuncs.evaluate(self.viewer(), name, args)
        )
        with self._authorizer.internal():  # SQLite sets json_each up by writing its schema
            conn.execute("SELECT 1 FROM json_each('[]')").fetchall()
        conn.set_authorizer(self._authorizer)
        # cancel() may arrive just before SQLite starts stepping, when interrupt() is a no-op:
        # the flag makes the statement stop at its next progress check instead.
        self._cancel_requested = False
        conn.set_progress_handler(self._progress, 1000)
        # Third guard: a login that can never write (read-only, and every user it may
        # impersonate is read-only) gets a connection SQLite itself keeps read-only.
        reachable = [
            self._stack[0],
            *(engine.principals.get(u.lower()) for u in user.can_impersonate),
        ]
        if all(p is not None and p.role == "read-only" for p in reachable):
            with self._authorizer.internal():
                conn.execute("PRAGMA query_only = ON")

    # -- public state -----------------------------------------------------------------------

    @property
    def effective_user(self) -> str:
        return self._stack[-1].name

    @property
    def in_transaction(self) -> bool:
        return self._trancount > 0

    @property
    def trancount(self) -> int:
        return self._trancount

    @property
    def lock_timeout_ms(self) -> int:
        """SET LOCK_TIMEOUT: milliseconds a statement waits for a lock, -1 forever."""
        return max(-1, self.set_options.lock_timeout)

    @property
    def options(self) -> int:
        """@@OPTIONS: the session's SET options as SQL Server's bit mask (see _options.py),
        with SET NOCOUNT (512) and SET XACT_ABORT (16384)."""
        bits = self.set_options.bits
        return bits | (512 if self.nocount else 0) | (16384 if self.xact_abort else 0)

    # -- batches -----------------------------------------------------------------------------

    def execute(
        self, sql: str, params: Sequence[Param] = ()
    ) -> Iterator[ResultSet | RowCount | StatementFailed | Info]:
        """Run a batch; yields one result per statement that produces one (and Info messages).

        The batch is parsed first: a syntax error (102/105) or an unsupported construct (40517)
        anywhere raises before anything runs.  Then each statement runs when the iterator reaches
        it; an error ends the batch (raised) or, when statement-level, only its statement
        (yielded as StatementFailed, see `statement_failed`).

        Raises:
            SqlError: from parsing here, or from running as the iterator is advanced.
        """
        if self._closed:
            raise SqlError(6005, "The session is closed.", severity=16)
        self._finish_rows()
        self._cancel_requested = False  # a new request: an earlier ATTENTION no longer applies
        wake = self.flow.wake
        if wake.is_set():  # (clearing takes the Event's lock: most requests need not)
            wake.clear()
        if not sql.isascii() and not _encodable(sql):
            raise _errors.syntax_error("an unpaired UTF-16 surrogate in the batch")
        calls = _preamble.match(sql)
        if calls is not None:
            fast = self._set_contexts(sql, calls, params)
            if fast is not None:
                return fast
        return self._general(sql, params)

    def _general(
        self, sql: str, params: Sequence[Param]
    ) -> Iterator[ResultSet | RowCount | StatementFailed | Info]:
        """`execute` for any batch: parse it all, bind the parameters, run each statement."""
        statements = _split(sql)
        if statements and _procedure_call(statements[0]):
            statements = _split("EXEC " + sql)  # a batch may start with a procedure's bare name
        try:
            prepared = [self._prepare(statement) for statement in statements]
            nodes = _flow.build(self, prepared)
        except (IndexError, KeyError, ValueError, TypeError, AttributeError) as exc:
            raise _internal(exc) from exc
        batch_params: dict[str, Variable] = {}
        self._table_params = {}
        for param in params:
            name = param.name.lstrip("@").lower()
            if name.startswith("__g_") or not name:
                raise _errors.SqlError(8145, f"{param.name} is not a valid parameter name.")
            if param.type.name == _tvp.TABLE.name:  # (a name test: no dataclass __eq__)
                columns, rows = _tvp.bind(self, param.name, param.value)
                self._table_params[name] = columns
                batch_params[name] = Variable(_tvp.TABLE, rows)
                continue
            value = param.value
            if isinstance(value, str) and not value.isascii() and not _encodable(value):
                raise _errors.SqlError(
                    8016,
                    f"The incoming RPC parameter {param.name} holds an unpaired UTF-16 surrogate; "
                    "tdslite cannot store it.",
                )
            batch_params[name] = Variable(param.type, encode(param.type, value))
        return self._batch(nodes, batch_params)

    def _set_contexts(
        self, sql: str, calls: tuple[_preamble.Call, ...], params: Sequence[Param]
    ) -> Iterator[ResultSet | RowCount | StatementFailed | Info] | None:
        """The fast path of `_preamble` (see there): the iterator that sets the keys, or None
        when the general path must run ``sql`` (it then raises the error the calls deserve)."""
        if self.flow.doomed:
            return None
        shape = _preamble_shape(calls, params)
        if shape is None:
            return None
        stored = self._preamble_values(shape, [p.value for p in params], self._context)
        if stored is None:
            return None
        return self._run_contexts(sql, params, (shape, stored))

    def _preamble_values(
        self,
        shape: PreambleShape,
        values: Sequence[object],
        context: dict[str, tuple[object, SqlType, bool]] | None,
    ) -> list[Storage] | None:
        """Each parameter's value in storage form (a string as itself) if the fast path answers
        as the general path would with the session context ``context`` (None: empty, as after
        a reset), else None. ``values``: the parameters' values, of the names and types
        ``shape`` was made from. No side effects."""
        if self.objects.table_variables or self._catalog.table_variables:
            return None
        stored: list[Storage] = []
        try:
            for value, as_is, sql_type in zip(values, shape[1], shape[2], strict=True):
                if type(value) is str:
                    if not value.isascii() and not _encodable(value):
                        return None
                    if as_is:  # (a string of a string type is its own storage form)
                        stored.append(value)
                        continue
                elif isinstance(value, str) and not value.isascii() and not _encodable(value):
                    return None
                stored.append(encode(sql_type, value))
            if (
                "sp_set_session_context" in self._engine.procedure_names
                and _objects.lookup(self, "sp_set_session_context", "PROCEDURE") is not None
            ):
                return None  # a procedure of that name: the general path runs it
        except (SqlError, sqlite3.Error, ValueError, TypeError):
            return None  # a value the general path refuses: it raises the error
        if context is not None:
            for key, _, _, _ in shape[3]:
                existing = context.get(key)
                if existing is not None and existing[2]:
                    return None
        return stored

    def preamble_plan(
        self, sql: str, params: Sequence[Param], *, reset: bool
    ) -> PreamblePlan | None:
        """When (a reset, when ``reset``, then) running ``sql`` takes `_preamble`'s fast path and
        neither waits nor takes long (no transaction to roll back, no #table, #procedure or table
        variable to drop, no open rows): what `run_preamble` does. The wire layer then runs such
        a request on its event loop instead of a worker thread (the answer is the same). No side
        effects."""
        calls = _preamble.match(sql)
        if calls is None:
            return None
        shape = _preamble_shape(calls, params)
        if shape is None:
            return None
        return self.preamble_plan_values(shape, [p.value for p in params], reset=reset)

    def preamble_plan_values(
        self, shape: PreambleShape, values: Sequence[object], *, reset: bool
    ) -> PreamblePlan | None:
        """`preamble_plan` of the same batch with parameters of the same names and types as
        one planned before, whose plan's shape (its first item: what depends on nothing else)
        the caller kept, and these ``values``: the same answer. No side effects."""
        if not self.reset_inline():
            return None
        if not reset and self.flow.doomed:
            return None
        stored = self._preamble_values(shape, values, None if reset else self._context)
        return None if stored is None else (shape, stored)

    def run_preamble(self, plan: PreamblePlan) -> None:
        """Run the batch `preamble_plan` planned, right after it (and the reset it was asked
        about, if any): the same effects as `execute` of that batch and its iterator run out,
        which yields nothing (the checks `execute` makes are `preamble_plan`'s)."""
        self._cancel_requested = False
        wake = self.flow.wake
        if wake.is_set():
            wake.clear()
        self._store_contexts(plan)  # (open rows first)

    def reset_inline(self) -> bool:
        """Whether a reset (`reset`) neither waits nor takes long: no transaction to roll back,
        no #table, #procedure or table variable to drop, no open rows. No side effects."""
        if self._closed or self._trancount or self._conn.in_transaction:
            return False
        return not (
            self._open_rows is not None or self.objects.temp_procedures or self._catalog.temp
        )

    def select_inline(self, sql: str, params: Sequence[Param]) -> bool:
        """Whether ``sql`` is one SELECT of values only (`_values_only`: ``SELECT 1``,
        ``SELECT @n AS n``): no table, view, function or subquery, so running it reads no table,
        waits for no lock and takes no longer than its values are long, whatever the session's
        state. The wire layer then runs such a request on its event loop instead of a worker
        thread (the answer is the same). No side effects (the parse is cached as when run)."""
        if self._closed or self._open_rows is not None:
            return False
        if any(param.type.name == _tvp.TABLE.name for param in params):
            return False
        try:
            statements = _split(sql)
            if len(statements) != 1 or statements[0].keyword != "SELECT":
                return False
            return _selects_values(statements[0].sql, statements[0].words)
        except SqlError:
            return False

    def _run_contexts(
        self, sql: str, params: Sequence[Param], plan: PreamblePlan
    ) -> Iterator[ResultSet | RowCount | StatementFailed | Info]:
        # Strategy: the calls run in one step when the iterator is first advanced (the general
        # path runs them one per step, with nothing to yield between them), so a cancel can only
        # come before them all: then the general path runs and reports it as it always does.
        if self._cancel_requested:
            yield from self._general(sql, params)
            return
        self._store_contexts(plan)
        return
        yield  # a generator, as the general path's iterator

    def _store_contexts(self, plan: PreamblePlan) -> None:
        """The ``sp_set_session_context`` calls of a preamble, as the general path runs them
        (rows left open go first; the calls open none). `_preamble_values` checked them
        against this session context: no key is read-only already, none is too long."""
        if self._open_rows is not None:
            self._finish_rows()
        shape, stored = plan
        types = shape[2]
        context = self._context
        flow = self.flow
        started = self.started
        for key, index, read_only, plain in shape[3]:
            started.append("EXEC")
            value: object = stored[index]
            if plain and type(value) is str:  # (what `_put_context` does with a string)
                context[key] = (value, types[index], read_only)
            else:
                sql_type = types[index]
                if type(value) is not str or sql_type.name not in STRING_TYPES:
                    value = decode(sql_type, stored[index])  # (a string is its own storage)
                if sql_type.length == -1:  # (a (max) value's own length)
                    _control.store_context(self, key, value, sql_type, read_only)
                else:
                    self._put_context(key, value, sql_type, read_only)
            flow.last_error = 0

    def _batch(
        self, nodes: list[_flow.Node], variables: dict[str, Variable]
    ) -> Iterator[ResultSet | RowCount | StatementFailed | Info]:
        try:
            yield from _flow.run(self, nodes, variables)
        finally:
            if not self._closed:
                _objects.drop_table_variables(self, variables)

    def run_body(
        self, sql: str, variables: dict[str, Variable], *, procedure: str | None = None
    ) -> Iterator[ResultSet | RowCount | StatementFailed | Info]:
        """Run the statements of ``sql`` in this session with ``variables`` (a procedure's
        parameters and locals; changed in place) through the block executor (_flow.py): the one
        entry point for statement lists that are not a client's batch. A RETURN ends them and
        sets `return_status`."""
        prepared = [self._prepare(statement) for statement in _split(sql)]
        runner = _flow.Runner(self, variables, procedure=procedure)
        self.return_status = 0
        yield from runner.run(_flow.build(self, prepared, procedure=True))
        self.return_status = runner.return_status  # after any nested procedure's

    def _prepare(self, statement: Statement) -> Prepared:
        if _objects.is_module(statement) or _tvp.is_type_ddl(statement.words):
            return Prepared(statement, None)  # CREATE PROCEDURE/VIEW/TYPE: read as text
        if statement.keyword not in _SQLGLOT_KEYWORDS and statement.keyword != "SET":
            if statement.keyword not in STATEMENT_KEYWORDS:
                near = statement.text.split()[0] if statement.text.split() else ""
                raise _errors.syntax_error(near).at_line(statement.line)
            if (
                statement.keyword not in _CONTROL_KEYWORDS
                and statement.keyword not in _flow.FLOW_KEYWORDS
            ):
                raise _errors.unsupported(statement.keyword or statement.text[:20]).at_line(
                    statement.line
                )
            return Prepared(statement, None)
        if statement.keyword == "SET" and "@" not in statement.words[1:2]:
            return Prepared(statement, None)
        try:
            tree = parse_statement(statement.sql, statement.words)
        except SqlError as exc:
            raise exc.at_line(statement.line) from None
        return Prepared(statement, tree)

    def _run_statement(
        self, item: Prepared, variables: dict[str, Variable]
    ) -> Iterator[ResultSet | RowCount | StatementFailed | Info]:
        """Run one statement (not control flow: _flow.py decides what an error means); raises
        its SqlError with the statement's line."""
        self._finish_rows()
        if self._cancel_requested:
            raise _errors.cancelled().at_line(item.statement.line)
        self.started.append(item.statement.keyword)
        try:
            try:
                yield from self._statement(item, variables)
            except sqlite3.OperationalError as exc:
                # cancel() interrupts whatever SQLite runs at that moment, including the
                # engine's own catalog queries around the statement: a cancel, never a crash
                if str(exc) != "interrupted":
                    raise
                raise _errors.cancelled().at_line(item.statement.line) from None
            except (IndexError, KeyError, ValueError, TypeError, AttributeError) as exc:
                # A statement shape the translator did not expect: an error, never a crash.
                raise _internal(exc).at_line(item.statement.line) from exc
        except SqlError as exc:
            if exc.line == 1 and item.statement.line != 1:
                exc.line = item.statement.line
            raise

    def statement_failed(self, exc: SqlError) -> bool:
        """A statement of a batch failed with ``exc``: apply SQL Server's consequences and say
        whether the batch goes on.

        XACT_ABORT ON: a run-time error rolls back the open transaction and ends the batch
        (compile errors do not roll back). XACT_ABORT OFF: a statement-level error (see
        `STATEMENT_ERRORS`) undoes only its statement (SQLite statements are atomic) and the batch
        goes on; a conversion error or lock conflict rolls back and ends the batch; anything else
        ends the batch and leaves the transaction open. A cancel (3617) ends the batch and, with
        XACT_ABORT ON, rolls back.
        """
        if exc.number in COMPILE_ERRORS:
            return False
        if self.xact_abort or exc.number in ROLLBACK_ERRORS:
            self._abort_transaction()
            return False
        return exc.number in STATEMENT_ERRORS

    def _finish_rows(self) -> None:
        if self._open_rows is not None:
            rows, self._open_rows = self._open_rows, None
            rows.close()  # type: ignore[attr-defined]

    # -- one statement ---------------------------------------------------------------------

    def _statement(
        self, item: Prepared, variables: dict[str, Variable]
    ) -> Iterator[ResultSet | RowCount | StatementFailed | Info]:
        keyword = item.statement.keyword
        tree = item.tree
        _objects.bind_table_variables(self, variables)  # FROM @t: this scope's tables
        if tree is None:
            if _tvp.is_type_ddl(item.statement.words):
                yield from _tvp.run_ddl(self, item.statement)
                return
            yield from _control.run(self, item.statement, variables)
            return
        if isinstance(tree, exp.Set):
            _control.assign(self, tree.copy(), variables)
            return
        if isinstance(tree, exp.Declare):
            _control.declare(self, tree.copy(), variables)
            return
        if _objects.handles(tree):
            _objects.run_tree(self, tree)
            return
        values_only = not self._table_params and _selects_values(
            item.statement.sql, item.statement.words
        )
        if not values_only:
            # (a SELECT of values only reads no table and calls no function: neither its
            # translation nor its run depends on the catalog or on the session context; a stale
            # fingerprint in its key only keys it apart)
            self._catalog.refresh(self._conn_internal())
        self._authorizer.tvp_rows = bool(self._table_params) and (
            self._catalog.table("json_each") is None
        )
        key = (
            item.statement.sql,
            self.database,
            self._catalog.fingerprint,
            tuple(sorted((k, v.type.text) for k, v in variables.items())),
            () if values_only else tuple(sorted((k, v[1].text) for k, v in self._context.items())),
            tuple(sorted(self._identity_insert)),
        )
        # a statement reading table-valued parameters depends on their types: not cached
        cached = None if self._table_params else self._engine.translations.get(key)
        if cached is None:
            cached = self._translate(tree.copy(), keyword, variables)
            if cached is None:  # SELECT @var = ... ran already
                yield RowCount(self._assigned_rows, select=True)
                return
            if cached[0] != "ddl" and not self._table_params:
                self._engine.translations.put(key, cached)
        kind, payload, tables = cached
        tables = self._build_views(tables)
        if kind == "select":
            sql, columns = payload
            self.principal.check(
                verb="SELECT", reads=set(tables), writes=set(), database=self.database
            )
            if not ({"NOLOCK", "READUNCOMMITTED"} & set(item.statement.words)):
                self._wait_for_writers(tables)
            yield self._result(sql, columns, variables)
            return
        plan = payload
        writes = (
            {plan.table.name.lower()}
            if plan.table is not None
            else {n.lower() for n in plan.dropped}
        )
        self.principal.check(
            verb=plan.verb, reads=set(tables) - writes, writes=writes, database=self.database
        )
        self._wait_for_writers(None)
        count, returned = self._apply(plan, variables)
        if self._trancount > 0:
            self._engine.locks.hold(self, writes)
        if plan.output:
            decoders = [decoder(c.type) for c in plan.output]
            rows = [tuple(d(v) for d, v in zip(decoders, row, strict=True)) for row in returned]
            yield ResultSet(list(plan.output), iter(rows))
        if plan.verb in ("INSERT", "UPDATE", "DELETE", "SELECT INTO"):
            yield RowCount(count)

    def _translate(
        self, tree: exp.Expression, keyword: str, variables: dict[str, Variable]
    ) -> tuple[str, Any, frozenset[str]] | None:
        """Translate a (copied) tree: ("select", (sql, columns), tables) or ("plan"|"ddl", ...)."""
        tr = Translator(self._context_for(variables))
        if isinstance(tree, exp.Select | exp.Union | exp.Except | exp.Intersect | exp.Subquery):
            if isinstance(tree, exp.Select) and tree.args.get("into"):
                plan = _objects.select_into(self, tree, tr)
                return "ddl", plan, frozenset(tr.tables)
            if (
                isinstance(tree, exp.Select)
                and tree.expressions
                and all(
                    isinstance(e, exp.EQ) and isinstance(e.this, exp.Parameter)
                    for e in tree.expressions
                )
            ):
                self._assigned_rows = _control.select_assign(self, tree, tr, variables)
                return None
            columns = tr.query(tree, None)
            return "select", (to_sqlite(tree), columns), frozenset(tr.tables)
        plan = self._plan(tree, tr, keyword)
        kind = "plan" if plan.verb in ("INSERT", "UPDATE", "DELETE") else "ddl"
        return kind, plan, frozenset(tr.tables)

    def _plan(self, tree: exp.Expression, tr: Translator, keyword: str) -> _statements.Plan:
        if isinstance(tree, exp.Insert):
            table = tree.this.this if isinstance(tree.this, exp.Schema) else tree.this
            on = (
                table.name.lower() in self._identity_insert
                if isinstance(table, exp.Table)
                else False
            )
            return _statements.insert(tree, tr, on)
        if isinstance(tree, exp.Update):
            return _statements.update(tree, tr)
        if isinstance(tree, exp.Delete):
            return _statements.delete(tree, tr)
        if not self.in_served_database and isinstance(tree, exp.Create):
            raise _errors.ddl_denied("CREATE TABLE", self.database)  # master is not ours
        if isinstance(tree, exp.Create) and str(tree.args.get("kind")).upper() == "TABLE":
            if isinstance(tree.this, exp.Schema) and isinstance(tree.this.this, exp.Table):
                _objects.check_create_table(self, tree.this.this)
            return _statements.create_table(tree, tr)
        if isinstance(tree, exp.Create) and str(tree.args.get("kind")).upper().endswith("INDEX"):
            return _statements.create_index(tree, tr)
        if isinstance(tree, exp.Drop):
            names = _objects.dropped_tables(self, tree)
            self.principal.check(
                verb="DROP TABLE", reads=set(), writes=names, database=self.database
            )
            return _statements.drop_tables(tree, tr)
        if isinstance(tree, exp.TruncateTable):
            return _statements.truncate(tree, tr)
        raise _errors.unsupported(f"{keyword} {type(tree).__name__.upper()}")

    def _apply(
        self, plan: _statements.Plan, variables: dict[str, Variable]
    ) -> tuple[int, list[Any]]:
        """Run a DDL/DML plan: (rows affected, rows of OUTPUT/RETURNING)."""
        bindings = self._bindings(variables)
        ddl = plan.verb in ("CREATE TABLE", "DROP TABLE", "CREATE INDEX", "SELECT INTO")
        count = 0
        returned: list[Any] = []
        try:
            if ddl:
                self._conn.execute("SAVEPOINT tds_ddl")
            try:
                before = self._preimage(plan, bindings)
                for sql in plan.sql:
                    self._authorizer.constraint_reads = not ddl
                    try:
                        # our own DDL for temporary tables, which need no permission
                        own = _objects.temporary_ddl(sql)
                        with self._authorizer.internal() if own else contextlib.nullcontext():
                            cursor = self._conn.execute(
                                sql, bindings if not ddl or plan.verb == "SELECT INTO" else ()
                            )
                        rows = cursor.fetchall() if plan.returns is not None else []
                        # (with RETURNING the statement completes in fetchall)
                    finally:
                        self._authorizer.constraint_reads = False
                    if plan.verb == "INSERT":  # one INSERT per row with DEFAULT in VALUES
                        returned.extend(rows)
                        count += max(cursor.rowcount, 0)
                    else:
                        returned, count = rows, cursor.rowcount
                    if (
                        plan.verb == "INSERT"
                        and plan.table is not None
                        and plan.table.identity
                        and count > 0
                    ):
                        self._identity = cursor.lastrowid
                if plan.returns is not None:
                    returned = plan.returns.rows(returned, before)
                    if plan.returns.insert is not None:  # OUTPUT ... INTO @t: stored, not sent
                        with self._authorizer.internal():
                            self._conn.executemany(plan.returns.insert, returned)
                        returned = []
                if plan.verb in ("CREATE TABLE", "SELECT INTO") and plan.table is not None:
                    _objects.created(self, plan.table)
                for name in plan.dropped:
                    with self._authorizer.internal():
                        forget_table(self._conn, name)
            except BaseException:
                if ddl:
                    self._conn.execute("ROLLBACK TO tds_ddl")
                    self._conn.execute("RELEASE tds_ddl")
                raise
            if ddl:
                self._conn.execute("RELEASE tds_ddl")
                self._catalog.invalidate()
        except sqlite3.Error as exc:
            raise self._map(exc, plan.verb, plan.table) from None
        self._rowcount = max(count, 0)
        return self._rowcount, returned

    def _preimage(self, plan: _statements.Plan, bindings: dict[str, Storage]) -> dict[int, Any]:
        """The rows an UPDATE with OUTPUT DELETED.x will change, before it does: rowid -> row."""
        if plan.returns is None or plan.returns.preimage is None:
            return {}
        rows = self._conn.execute(plan.returns.preimage, bindings).fetchall()
        return {row[0]: row[1:] for row in rows}

    def _result(self, sql: str, columns: list[Column], variables: dict[str, Variable]) -> ResultSet:
        try:
            if _binds_globals(sql):
                cursor = self._conn.execute(sql, self._bindings(variables))
            else:  # (SQLite binds only the names the statement has)
                cursor = self._conn.execute(sql, {k: v.value for k, v in variables.items()})
            first = cursor.fetchone() if any(is_unknown(c.type) for c in columns) else None
        except sqlite3.Error as exc:
            raise self._map(exc, "SELECT", None) from None
        if len(cursor.description or ()) != len(columns):
            columns = [Column(d[0], UNKNOWN) for d in cursor.description or ()]
            if first is None:
                try:
                    first = cursor.fetchone()
                except sqlite3.Error as exc:
                    raise self._map(exc, "SELECT", None) from None
        if any(is_unknown(c.type) for c in columns):
            columns = [
                Column(c.name, guess_type(first[i] if first else None), c.nullable)
                if is_unknown(c.type)
                else c
                for i, c in enumerate(columns)
            ]
        decoders = [decoder(c.type) for c in columns]
        rows = self._rows(cursor, first, decoders)
        self._open_rows = rows
        return ResultSet(columns, rows)

    def _rows(
        self, cursor: sqlite3.Cursor, first: tuple[Any, ...] | None, decoders: list[Any]
    ) -> Iterator[tuple[object, ...]]:
        count = 0
        try:
            if first is not None:
                count += 1
                yield tuple(d(v) for d, v in zip(decoders, first, strict=True))
            for raw in cursor:
                count += 1
                yield tuple(d(v) for d, v in zip(decoders, raw, strict=True))
        except sqlite3.Error as exc:
            raise self._map(exc, "SELECT", None) from None
        except (ArithmeticError, ValueError, TypeError) as exc:
            raise _errors.SqlError(
                8114, f"Error converting a result value ({type(exc).__name__})."
            ) from exc
        finally:
            self._rowcount = count
            cursor.close()
            if self._open_rows is not None:
                self._open_rows = None

    # -- helpers ----------------------------------------------------------------------------

    @property
    def principal(self) -> Principal:
        return self._stack[-1]

    def _conn_internal(self) -> sqlite3.Connection:
        return _InternalConn(self._conn, self._authorizer)  # type: ignore[return-value]

    def _context_for(self, variables: dict[str, Variable]) -> Context:
        return Context(
            catalog=self._catalog if self.in_served_database else _NO_TABLES,
            database=self.database,
            variables={k: v.type for k, v in variables.items()},
            context_types={k: v[1] for k, v in self._context.items()},
            table_params=self._table_params,
        )

    def _globals(self) -> dict[str, Storage]:
        return {
            "__g_rowcount": self._rowcount, "__g_identity": self._identity,
            "__g_scope_identity": self._identity, "__g_version": _sysfuncs.VERSION,
            "__g_spid": self.spid, "__g_trancount": self._trancount, "__g_servername": "tdslite",
            "__g_servicename": "MSSQLSERVER", "__g_language": "us_english", "__g_error": 0,
            "__g_max_precision": 38, "__g_textsize": 2147483647, "__g_datefirst": 7,
            "__g_lock_timeout": self.lock_timeout_ms, "__g_nestlevel": 0,
            "__g_options": self.options,
            "__g_db_name": self.database, "__g_login": self.user.login,
            "__g_user": self.effective_user,
        }  # fmt: skip

    def _bindings(self, variables: dict[str, Variable]) -> dict[str, Storage]:
        bindings = self._globals()
        bindings.update(_flow.session_globals(self))  # type: ignore[arg-type]
        bindings.update({k: v.value for k, v in variables.items()})
        return bindings

    def _map(self, exc: sqlite3.Error, verb: str, table: TableInfo | None) -> SqlError:
        parked = self._fn_errors.take()
        if parked is not None:
            return parked
        return map_sqlite_error(
            exc, verb=verb, table=table, database=self.database, denied=self._authorizer.denied
        )

    def _build_views(self, tables: frozenset[str]) -> frozenset[str]:
        """Build the rows of the catalog views a statement reads (for this caller only, see
        _sysviews.py); the other names are tables, returned for the permission check."""
        views = {t for t in tables if t in _sysviews.VIEWS}
        self._sysview_rows = {}
        if views:
            viewer = self.viewer()
            self._sysview_rows = {name: _sysrows.build(name, viewer) for name in views}
        return tables - views

    def viewer(self) -> _sysviews.Viewer:
        """What the catalog views and sp_help show this caller (see _sysviews.py)."""
        conn = self._conn_internal()
        self._catalog.refresh(conn)
        return _sysviews.Viewer(
            database=self.database, served=self._engine.database, tables=self._catalog.tables(),
            may_see=lambda name: self.principal.may("SELECT", name),
            pragma=lambda sql: list(conn.execute(sql).fetchall()),
            session={**self.client, "session_id": self.spid, "login_name": self.user.login,
                     "row_count": self._rowcount, "open_transaction_count": self._trancount,
                     "transaction_isolation_level": _ISOLATION_CODES.get(self.isolation, 2)},
            providers=self._engine.catalog_providers, started=self._engine.started,
        )  # fmt: skip

    def _session_context_value(self, key: Storage) -> Storage:
        entry = self._context.get(str(key)) if key is not None else None
        return None if entry is None else encode(entry[1], entry[0])

    def _set_principal(self, principal: Principal) -> None:
        self._authorizer.principal = principal

    # -- EXECUTE AS / session context (used by _control) --------------------------------------

    def use(self, name: str) -> None:
        """USE name: the served database or master (911 for any other name)."""
        known = self._engine.database_name(name)
        if known is None:
            raise _errors.unknown_database(name)
        self.database = known

    @property
    def in_served_database(self) -> bool:
        """False in master, which holds no user tables."""
        return self.database == self._engine.database

    def impersonate(self, database_user: str) -> None:
        target = self._engine.principals.get(database_user.lower())
        allowed = {u.lower() for u in self.user.can_impersonate} | {self.user.database_user.lower()}
        if target is None or database_user.lower() not in allowed:
            raise _errors.cannot_impersonate(database_user)
        self._stack.append(target)
        self._set_principal(target)

    def revert(self) -> None:
        if len(self._stack) > 1:
            self._stack.pop()
            self._set_principal(self._stack[-1])

    def set_context(self, key: str, value: object, sql_type: SqlType, read_only: bool) -> None:
        existing = self._context.get(key)
        if existing is not None and existing[2]:
            raise _errors.read_only_key(key)
        if len(key) > 64 and len(key.encode("utf-16-le")) > 256:  # (<= 4 bytes a character)
            raise SqlError(15665, "The key passed to sp_set_session_context is too long (max 128).")
        self._put_context(key, value, sql_type, read_only)

    def _put_context(self, key: str, value: object, sql_type: SqlType, read_only: bool) -> None:
        """`set_context` once its checks passed."""
        if value is None and not read_only:
            self._context.pop(key, None)  # "Setting a value of NULL frees the memory."
            return
        self._context[key] = (value, sql_type, read_only)

    # -- transactions ------------------------------------------------------------------------

    def begin(self, name: str | None = None) -> None:
        """BEGIN TRANSACTION (also the TDS transaction manager's BEGIN request).

        Nested: only the outermost one starts a transaction (and keeps its name); @@TRANCOUNT
        counts them all.
        """
        self._finish_rows()
        if self._trancount == 0:
            self._run_control("BEGIN")
            self._tran_name = name
            self._savepoints.clear()
            self._tx_events.append("begin")
        self._trancount += 1

    def commit(self, *, all_levels: bool = True) -> None:
        """COMMIT decrements @@TRANCOUNT and commits at zero; the transaction manager's COMMIT
        ends every nesting level."""
        self._finish_rows()
        if self._trancount == 0:
            raise _errors.no_begin("COMMIT")
        self._trancount = 0 if all_levels else self._trancount - 1
        if self._trancount == 0:
            self._run_control("COMMIT")
            self._ended("commit")

    def rollback(self, name: str | None = None) -> None:
        """ROLLBACK [name]: without a name (or with the outermost BEGIN TRAN's name) undoes the
        whole transaction, whatever the nesting; with a savepoint's name undoes back to the latest
        savepoint of that name and leaves @@TRANCOUNT as it is."""
        self._finish_rows()
        if self._trancount == 0:
            raise _errors.no_begin("ROLLBACK")
        if name is not None:
            for index in range(len(self._savepoints) - 1, -1, -1):
                if self._savepoints[index][0] == name:  # names are case-sensitive
                    with _objects.table_variables_survive(self):
                        self._run_control(f"ROLLBACK TO {self._savepoints[index][1]}")
                    del self._savepoints[index + 1 :]
                    return
            if name != self._tran_name:
                raise _errors.no_savepoint(name)
        self._abort_transaction()

    def save(self, name: str) -> None:
        """SAVE TRANSACTION name (also the transaction manager's SAVE request)."""
        self._finish_rows()
        if self._trancount == 0:
            raise _errors.save_without_transaction()
        self._savepoint_ids += 1
        savepoint = f"tds_sp_{self._savepoint_ids}"
        self._run_control(f"SAVEPOINT {savepoint}")
        self._savepoints.append((name, savepoint))

    def take_transaction_events(self) -> list[str]:
        """The transactions begun ("begin") and ended ("commit" / "rollback") since the last
        call, in order: what the wire layer reports as ENVCHANGE 8 / 9 / 10."""
        events = self._tx_events
        if events:  # (none: the same empty list, nothing made)
            self._tx_events = []
        return events

    def _abort_transaction(self) -> None:
        """Roll back the whole transaction, if there is one."""
        self._finish_rows()
        if self._trancount == 0 and not self._conn.in_transaction:
            return
        had = self._trancount > 0
        self._trancount = 0
        self._cancel_requested = False
        self._engine.locks.release(self)
        with _objects.table_variables_survive(self):
            self._conn.execute("ROLLBACK")
        if had:
            self._ended("rollback")

    def _wait_for_writers(self, tables: frozenset[str] | None) -> None:
        """READ COMMITTED: wait for other sessions' uncommitted writes (see _locks.py)."""
        if tables is not None and (
            not tables or self.isolation in ("READ UNCOMMITTED", "SNAPSHOT")
        ):
            return  # (no table read: nothing to wait for)
        self._engine.locks.wait(
            self,
            tables,
            timeout_ms=self.lock_timeout_ms,
            cancelled=lambda: self._cancel_requested,
            on_cancel=_errors.cancelled,
        )

    def _ended(self, how: str) -> None:
        self._engine.locks.release(self)
        self.flow.doomed = False
        self._tran_name = None
        self._savepoints.clear()
        self._tx_events.append(how)

    def _run_control(self, sql: str) -> None:
        self._cancel_requested = False  # a transaction request is a new request
        try:
            self._conn.execute(sql)
        except sqlite3.Error as exc:
            raise self._map(exc, sql, None) from None

    # -- lifecycle ---------------------------------------------------------------------------

    def cancel(self) -> None:
        """Stop the running request (thread-safe): its statement raises SqlError 3617.

        Takes effect for the request in progress (from `execute` until its iterator is done);
        the next `execute` starts afresh.
        """
        if not self._closed:
            self._cancel_requested = True
            self.flow.wake.set()  # WAITFOR DELAY
            self._conn.interrupt()

    def _progress(self) -> int:
        return 1 if self._cancel_requested else 0

    def reset(self) -> None:
        """RESETCONNECTION / sp_reset_connection: roll back, REVERT all, clear session state."""
        rolled_back = self._trancount > 0 or self._conn.in_transaction
        if rolled_back:
            self._abort_transaction()  # (open rows first)
        elif self._open_rows is not None:
            self._finish_rows()
        self.xact_abort = False
        if vars(self.set_options) != _NEW_OPTIONS:  # (options as new are kept: no new object)
            self.set_options = SessionOptions()
        flow = self.flow
        if flow.caught or flow.doomed or flow.last_error or flow.try_depth:
            self.flow = FlowState()
        elif flow.wake.is_set():  # as new already (a new one costs an Event): only a WAITFOR's
            flow.wake.clear()  # wake-up to clear
        stack = self._stack
        if len(stack) > 1 or self._authorizer.principal is not stack[0]:
            del stack[1:]
            self._set_principal(stack[0])
        self._context.clear()
        self._identity_insert.clear()
        self.nocount = False
        self.isolation = "READ COMMITTED"
        self._rowcount = 0
        self._identity = None
        if rolled_back or self._catalog.temp or self.objects.temp_procedures:
            _objects.reset(self, rolled_back=rolled_back)
        else:  # (what `_objects.reset` does when there is nothing to drop)
            self._cancel_requested = False

    def close(self) -> None:
        if self._closed:
            return
        try:
            self._finish_rows()
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            _objects.close(self)
        finally:
            self._closed = True
            self._engine.locks.release(self)
            self._conn.close()
            self._engine._forget(self)


class _InternalConn:
    """A view of the connection whose statements bypass the authorizer (catalog reads)."""

    def __init__(self, conn: sqlite3.Connection, authorizer: Authorizer) -> None:
        self._conn = conn
        self._authorizer = authorizer

    def execute(self, sql: str, params: Any = ()) -> sqlite3.Cursor:
        with self._authorizer.internal():
            cursor = self._conn.execute(sql, params)
            return _Materialized(cursor.fetchall())  # type: ignore[return-value]


class _Materialized:
    def __init__(self, rows: list[Any]) -> None:
        self._rows = rows

    def fetchone(self) -> Any:
        return self._rows[0] if self._rows else None

    def fetchall(self) -> list[Any]:
        return self._rows


def _internal(exc: Exception) -> SqlError:
    return SqlError(
        40517,
        f"tdslite cannot run this statement (internal {type(exc).__name__}); "
        "see tdslite/README.md, 'Supported T-SQL'.",
    )


#: What `_values_only` allows as a selected value (under an alias or not).
_VALUE_NODES = (exp.Literal, exp.National, exp.Null, exp.Boolean)


@functools.lru_cache(maxsize=1024)
def _binds_globals(sql: str) -> bool:
    """Whether SQLite ``sql`` (a translation) may bind a session global (``@__g_name``: @@ROWCOUNT,
    DB_NAME()...), which `Session._bindings` computes; else only the variables are bound."""
    return "__g_" in sql.lower()


@functools.lru_cache(maxsize=256)
def _selects_values(sql: str, words: tuple[str, ...]) -> bool:
    """`_values_only` of a statement's (cached) parse; False when it does not parse."""
    try:
        return _values_only(parse_statement(sql, words))
    except SqlError:
        return False


def _values_only(tree: exp.Expression) -> bool:
    """``tree`` is a SELECT of literals and variables only (each may be aliased), with no other
    clause: no FROM, WHERE, TOP, INTO, CTE..."""
    if not isinstance(tree, exp.Select) or not tree.expressions:
        return False
    if any(value for key, value in tree.args.items() if key != "expressions"):
        return False
    for node in tree.expressions:
        if isinstance(node, exp.Alias):
            node = node.this
        if isinstance(node, exp.Neg):
            node = node.this
        if isinstance(node, exp.Parameter):
            if not isinstance(node.this, exp.Var):
                return False
        elif not isinstance(node, _VALUE_NODES):
            return False
    return True


def _procedure_call(statement: Statement) -> bool:
    """The first statement of a batch names a procedure without EXEC (``sp_help 'orders'``)."""
    first = statement.text.split(None, 1)[0].lower().lstrip("[") if statement.text else ""
    return statement.keyword not in STATEMENT_KEYWORDS and first.startswith("sp_")


@functools.lru_cache(maxsize=256)
def _variable_name(param: str) -> str | None:
    """The variable an RPC parameter named ``param`` binds (lower case, no "@"), or None for a
    name no parameter may have (empty, or a session global's ``__g_`` prefix). Cached: clients
    send the same few names."""
    name = param.lstrip("@").lower()
    return None if not name or name.startswith("__g_") else name


def _preamble_shape(
    calls: tuple[_preamble.Call, ...], params: Sequence[Param]
) -> PreambleShape | None:
    """The shape of a preamble batch of ``calls`` run with ``params`` (what depends only on the
    calls and the parameters' names and types), or None when the general path must run it: a
    parameter name no parameter may have, a table-valued parameter, a call whose value no
    parameter gives, a key too long."""
    index: dict[str, int] = {}
    as_is: list[bool] = []
    for i, param in enumerate(params):
        name = _variable_name(param.name)
        if name is None or param.type.name == _tvp.TABLE.name:
            return None
        index[name] = i  # (the last of a name binds it)
        as_is.append(param.type.name in STRING_TYPES)
    types = tuple(param.type for param in params)
    slots: list[tuple[str, int, bool, bool]] = []
    for key, name, read_only in calls:
        if name not in index or len(key) > 128:  # (256 bytes in UTF-16: the keys are ASCII)
            return None
        i = index[name]
        slots.append((key, i, read_only, as_is[i] and types[i].length != -1))
    return calls, tuple(as_is), types, tuple(slots)


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# END
