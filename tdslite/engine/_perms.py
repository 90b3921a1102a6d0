"""Least privilege: what a database user may do, checked twice.

1. Before running, `Principal.check` looks at the statement's plan: the tables it reads and the
   table it writes (or DDL), and refuses with SQL Server's errors (229, 262, 3701) naming the
   object.  Only statement shapes the translator fully understood get this far.
2. As defence in depth, `Authorizer` is installed with sqlite3's set_authorizer on the session's
   connection: SQLite asks it about every table read/write and schema change while compiling each
   statement, so even a statement that slipped past (1) cannot write for a read-only user.
   Unknown actions are denied (fail closed); our own catalog bookkeeping runs in `internal()`.

Roles: read-only = SELECT; read-write = SELECT, INSERT, UPDATE, DELETE; admin = all and DDL.
Grants, when a user has any, restrict table access to the listed tables ("read" = SELECT,
"write" = SELECT and DML).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field

from . import _errors
from ._catalog import is_internal
from ._users import User

_WRITE_VERBS = ("INSERT", "UPDATE", "DELETE")
_SCHEMA_TABLES = ("sqlite_master", "sqlite_schema", "sqlite_sequence")


@dataclass(frozen=True)
class Principal:
    """A database user and its permissions."""

    name: str
    role: str
    grants: dict[str, str] = field(default_factory=dict)

    def may(self, permission: str, table: str) -> bool:
        """May this user exercise ``permission`` (SELECT/INSERT/UPDATE/DELETE) on ``table``?"""
        if table.startswith(("#", "@")):
            return True  # temporary tables and table variables: anyone may use them
        if is_internal(table):
            return False
        if self.grants:
            level = self.grants.get(table.lower())
            if level not in ("read", "write") or (permission != "SELECT" and level != "write"):
                return False
        if permission == "SELECT":
            return True
        return self.role in ("read-write", "admin")

    @property
    def may_ddl(self) -> bool:
        return self.role == "admin"

    def may_execute(self, procedure: str) -> bool:
        """EXECUTE on a procedure: admin; read-write without grants; else a grant "execute"."""
        if procedure.startswith("#"):
            return True  # temporary procedures: anyone may run them
        if self.grants:
            return self.grants.get(procedure.lower()) == "execute"
        return self.role in ("read-write", "admin")

    def check(self, *, verb: str, reads: set[str], writes: set[str], database: str) -> None:
        """Refuse a planned statement this user may not run (SQL Server's errors)."""
        temporary = bool(writes) and all(w.startswith(("#", "@")) for w in writes)
        if temporary and verb in ("CREATE TABLE", "CREATE INDEX", "SELECT INTO", "DROP TABLE"):
            writes = set()  # temporary tables and table variables belong to their session
        elif verb in ("CREATE TABLE", "CREATE INDEX", "SELECT INTO") and not self.may_ddl:
            raise _errors.ddl_denied(
                "CREATE TABLE" if verb != "CREATE INDEX" else "CREATE INDEX", database
            )
        elif verb == "DROP TABLE" and not self.may_ddl:
            raise _errors.drop_denied(sorted(writes)[0] if writes else "")
        if verb == "TRUNCATE TABLE" and not self.may_ddl:
            name = sorted(writes)[0] if writes else ""
            raise _errors.SqlError(
                1088,
                f'Cannot find the object "{name}" because it does not exist or you do not have '
                "permissions.",
            )
        permission = verb if verb in _WRITE_VERBS else "DELETE"
        for table in sorted(writes):
            if verb in _WRITE_VERBS and not self.may(permission, table):
                raise _errors.permission_denied(permission, table, database)
        for table in sorted(reads):
            if not self.may("SELECT", table):
                raise _errors.permission_denied("SELECT", table, database)


@dataclass(frozen=True)
class ChainedPrincipal(Principal):
    """The caller inside a procedure owned by dbo (every procedure in tdslite is): ownership
    chaining lets its statements read and write the (dbo) tables they name without the caller's
    own SELECT/INSERT/UPDATE/DELETE permission, while DDL still needs the caller's rights and the
    internal tables stay out of reach."""

    def may(self, permission: str, table: str) -> bool:
        return not is_internal(table)

    def may_execute(self, procedure: str) -> bool:
        return True  # a procedure calling another of the same owner (dbo)


def principals(users: dict[str, User]) -> dict[str, Principal]:
    """database user name (lower-case) -> Principal, from the logins mapped to it."""
    return {
        u.database_user.lower(): Principal(u.database_user, u.role, dict(u.grants))
        for u in users.values()
    }


class _Internal:
    """`Authorizer.internal`'s context manager: a class, not a generator (it wraps every catalog
    check of every statement)."""

    __slots__ = ("_authorizer",)

    def __init__(self, authorizer: Authorizer) -> None:
        self._authorizer = authorizer

    def __enter__(self) -> None:
        self._authorizer._internal += 1

    def __exit__(self, *exc: object) -> None:
        self._authorizer._internal -= 1


class Authorizer:
    """sqlite3 authorizer for one session's connection (see the module docstring)."""

    _READ_ONLY_ACTIONS = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE}
    _TRANSACTION_ACTIONS = {sqlite3.SQLITE_TRANSACTION, sqlite3.SQLITE_SAVEPOINT}
    _VTAB_DECLARE = {sqlite3.SQLITE_READ, sqlite3.SQLITE_UPDATE}
    _WRITES = {
        sqlite3.SQLITE_INSERT: "INSERT",
        sqlite3.SQLITE_UPDATE: "UPDATE",
        sqlite3.SQLITE_DELETE: "DELETE",
    }
    _DDL = {
        sqlite3.SQLITE_CREATE_TABLE, sqlite3.SQLITE_DROP_TABLE, sqlite3.SQLITE_CREATE_INDEX,
        sqlite3.SQLITE_DROP_INDEX, sqlite3.SQLITE_ALTER_TABLE, sqlite3.SQLITE_REINDEX,
    }  # fmt: skip

    def __init__(self, principal: Principal) -> None:
        self.principal = principal
        self.denied: tuple[str, str] | None = None  # (permission, object) of the last denial
        self._internal = 0
        self._internal_scope = _Internal(self)
        #: While a DML statement that passed `Principal.check` runs, SQLite's own foreign-key
        #: enforcement reads parent/child tables; SQL Server needs no SELECT permission for that.
        self.constraint_reads = False
        #: A statement reads table-valued parameters (SQLite's json_each over bound JSON text)
        #: and no user table shadows json_each.
        self.tvp_rows = False

    def internal(self) -> _Internal:
        """Run tdslite's own bookkeeping statements (catalog, PRAGMAs) unchecked (a context
        manager; nests)."""
        return self._internal_scope

    def __call__(
        self, action: int, arg1: str | None, arg2: str | None, db: str | None, source: str | None
    ) -> int:
        if self._internal:
            return sqlite3.SQLITE_OK
        if action in self._READ_ONLY_ACTIONS or action in self._TRANSACTION_ACTIONS:
            return sqlite3.SQLITE_OK
        if self.tvp_rows and arg1 == "sqlite_master" and action in self._VTAB_DECLARE:
            # the first json_each of a connection declares its virtual table, which SQLite
            # reports as a read and an update of sqlite_master
            return sqlite3.SQLITE_OK
        if action == sqlite3.SQLITE_READ:
            table = arg1 or ""
            if table in _SCHEMA_TABLES and self.principal.may_ddl:
                return sqlite3.SQLITE_OK
            if table.lower() == "json_each" and not source:
                return sqlite3.SQLITE_OK  # catalog views: rows built for this caller only
            if self.constraint_reads and not is_internal(table):
                return sqlite3.SQLITE_OK
            if source and not is_internal(table) and self.principal.may("SELECT", source):
                # Ownership chaining: a view (dbo-owned) reads its tables with its owner's
                # rights once the user may read the view itself.
                return sqlite3.SQLITE_OK
            if table == "json_each" and self.tvp_rows:  # a table-valued parameter's rows
                return sqlite3.SQLITE_OK
            return self._decide(self.principal.may("SELECT", table), "SELECT", table)
        if action in self._WRITES:
            table = arg1 or ""
            if table in _SCHEMA_TABLES and self.principal.may_ddl:
                return sqlite3.SQLITE_OK  # CREATE/DROP TABLE write SQLite's own schema
            permission = self._WRITES[action]
            return self._decide(self.principal.may(permission, table), permission, table)
        if action in self._DDL:
            index_action = action in (sqlite3.SQLITE_CREATE_INDEX, sqlite3.SQLITE_DROP_INDEX)
            table = (arg2 if index_action else arg1) or ""
            internal = is_internal(table or "") and table != "sqlite_sequence"
            allowed = self.principal.may_ddl and not internal
            return self._decide(allowed, "ALTER", table or "")
        return self._decide(False, "EXECUTE", f"sqlite action {action}")

    def _decide(self, allowed: bool, permission: str, table: str) -> int:
        if allowed:
            return sqlite3.SQLITE_OK
        self.denied = (permission, table)
        return sqlite3.SQLITE_DENY
