"""What the statement runners share with the session: its state records and `SessionView`.

The session (_session.py) runs a batch through the block executor (_flow.py), which hands each
statement to the statement runners (_control.py, _procedures.py, _objects.py, _sysprocs.py,
_tvp.py, _sysfuncs.py), which use the translator (_translate.py).  The dependencies go that way
only: a runner sees the session as the `SessionView` protocol below, never as the class, and the
session sees its engine as `EngineView`.  The records a session holds for them (`Variable`,
`Prepared`, `FlowState`, `SessionObjects`, `ObjectRow`) live here for the same reason.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlglot import exp

from ._batch import Statement
from ._catalog import Catalog, TableInfo
from ._errors import SqlError
from ._locks import TableLocks
from ._lru import LruCache
from ._options import SessionOptions
from ._perms import Authorizer, Principal
from ._results import Info, ResultSet, RowCount, StatementFailed
from ._scope import Context
from ._sysviews import CatalogProvider, Viewer
from ._types import Column, SqlType
from ._values import Storage

#: What running a statement yields.
Result = ResultSet | RowCount | StatementFailed | Info


@dataclass
class Prepared:
    """One statement of a batch, and its parsed tree (None for a statement read as text)."""

    statement: Statement
    tree: exp.Expression | None


@dataclass
class Variable:
    """A T-SQL variable (or RPC parameter): its declared type and its value in storage form."""

    type: SqlType
    value: Storage


@dataclass
class FlowState:
    """What control flow keeps on a session: the errors being handled by CATCH blocks (innermost
    last), whether the transaction is doomed, @@ERROR, and how many TRY blocks are open."""

    caught: list[SqlError] = field(default_factory=list)
    doomed: bool = False
    last_error: int = 0
    try_depth: int = 0
    wake: threading.Event = field(default_factory=threading.Event)


@dataclass(frozen=True)
class ObjectRow:
    """One row of the object registry (see the docstring of _objects.py)."""

    schema: str
    name: str
    type: str
    definition: str
    parameters: tuple[dict[str, Any], ...] = ()
    body: str = ""


@dataclass
class SessionObjects:
    """A session's own objects and procedure-call state."""

    temp_procedures: dict[str, ObjectRow] = field(default_factory=dict)
    global_temps: set[str] = field(default_factory=set)
    #: live table variables: SQLite name -> (TableInfo, its CREATE statements)
    table_variables: dict[str, tuple[TableInfo, tuple[str, ...]]] = field(default_factory=dict)
    variable_ids: int = 0
    depth: int = 0  # procedure nesting (@@NESTLEVEL)
    #: the last EXEC's (return status, caller variables it set as OUTPUT: name -> (type, value))
    outcome: tuple[int, dict[str, tuple[SqlType, object]]] | None = None


class SessionView(Protocol):
    """The session (`_session.Session`) as the statement runners use it."""

    database: str
    nocount: bool
    xact_abort: bool
    isolation: str
    host_name: str
    return_status: int
    started: deque[str]
    set_options: SessionOptions
    flow: FlowState
    objects: SessionObjects
    _rowcount: int
    _identity_insert: set[str]
    _catalog: Catalog
    _conn: sqlite3.Connection
    _cancel_requested: bool
    _authorizer: Authorizer
    _stack: list[Principal]
    _engine: EngineView

    @property
    def principal(self) -> Principal: ...

    @property
    def in_transaction(self) -> bool: ...

    def viewer(self) -> Viewer: ...

    def run_body(
        self, sql: str, variables: dict[str, Variable], *, procedure: str | None = None
    ) -> Iterator[Result]: ...

    def statement_failed(self, exc: SqlError) -> bool: ...

    def use(self, name: str) -> None: ...

    def impersonate(self, database_user: str) -> None: ...

    def revert(self) -> None: ...

    def set_context(self, key: str, value: object, sql_type: SqlType, read_only: bool) -> None: ...

    def begin(self, name: str | None = None) -> None: ...

    def commit(self, *, all_levels: bool = True) -> None: ...

    def rollback(self, name: str | None = None) -> None: ...

    def save(self, name: str) -> None: ...

    def reset(self) -> None: ...

    def _prepare(self, statement: Statement) -> Prepared: ...

    def _run_statement(
        self, item: Prepared, variables: dict[str, Variable]
    ) -> Iterator[Result]: ...

    def _abort_transaction(self) -> None: ...

    def _finish_rows(self) -> None: ...

    def _result(
        self, sql: str, columns: list[Column], variables: dict[str, Variable]
    ) -> ResultSet: ...

    def _conn_internal(self) -> sqlite3.Connection: ...

    def _context_for(self, variables: dict[str, Variable]) -> Context: ...

    def _map(self, exc: sqlite3.Error, verb: str, table: TableInfo | None) -> SqlError: ...

    def _set_principal(self, principal: Principal) -> None: ...


class EngineView(Protocol):
    """The engine (`_engine.Engine`) as its sessions use it."""

    database: str
    principals: dict[str, Principal]
    translations: LruCache
    locks: TableLocks
    catalog_providers: dict[str, CatalogProvider]
    started: dt.datetime
    procedure_names: set[str]

    def principal(self, database_user: str) -> Principal: ...

    def database_name(self, name: str) -> str | None: ...

    def _forget(self, session: Any) -> None: ...
