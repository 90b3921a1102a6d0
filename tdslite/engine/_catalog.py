"""The catalog: each table's columns with their declared SQL Server types, kept in SQLite.

SQLite keeps only storage classes, so tdslite records every column's SQL Server type in its own
table ``__tds_columns`` (written in the same transaction as the CREATE TABLE it describes).  The
catalog is re-read when SQLite's schema version changes, so a table created by another session is
seen at once.  Names are case-insensitive, as in SQL Server's default collation.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field

from ._types import SqlType

CATALOG_TABLE = "__tds_columns"
#: Prefixes of tables no user statement may touch.
INTERNAL_PREFIXES = ("__tds_", "sqlite_")

CREATE_CATALOG = f"""
CREATE TABLE IF NOT EXISTS {CATALOG_TABLE} (
    tbl TEXT NOT NULL COLLATE NOCASE,
    ord INTEGER NOT NULL,
    name TEXT NOT NULL,
    type TEXT NOT NULL,
    nullable INTEGER NOT NULL,
    ident INTEGER NOT NULL,
    pk_name TEXT,
    PRIMARY KEY (tbl, ord)
)"""


def is_internal(table: str) -> bool:
    return table.lower().startswith(INTERNAL_PREFIXES)


@dataclass(frozen=True)
class ColumnInfo:
    name: str
    type: SqlType
    nullable: bool
    identity: bool = False


@dataclass(frozen=True)
class TableInfo:
    name: str
    columns: tuple[ColumnInfo, ...]
    pk_name: str | None = None
    by_name: dict[str, ColumnInfo] = field(default_factory=dict, compare=False)

    def column(self, name: str) -> ColumnInfo | None:
        return self.by_name.get(name.lower())

    @property
    def identity(self) -> ColumnInfo | None:
        return next((c for c in self.columns if c.identity), None)


def make_table(name: str, columns: list[ColumnInfo], pk_name: str | None) -> TableInfo:
    return TableInfo(name, tuple(columns), pk_name, {c.name.lower(): c for c in columns})


class Catalog:
    """The tables of one database as one connection sees them."""

    def __init__(self) -> None:
        self._version = -1
        self._tables: dict[str, TableInfo] = {}
        self._main_fingerprint = 0
        #: Session-scoped tables: ``#name`` (SQLite temp schema) -> its TableInfo.
        self.temp: dict[str, TableInfo] = {}
        self._temp_version = -1
        #: Table variables of the running scope: ``@name`` -> TableInfo (set per statement).
        self.table_variables: dict[str, TableInfo] = {}
        #: Changes whenever the tables or their types change (a translation-cache key).
        self.fingerprint = 0

    def refresh(self, conn: sqlite3.Connection) -> None:
        """Re-read the catalog if the schema changed since the last read."""
        if self.temp:  # (nothing to check for a session without #tables: the common case)
            self._prune_temp(conn)
        self._fingerprint()
        version = conn.execute("PRAGMA schema_version").fetchone()[0]
        if version == self._version:
            return
        rows = conn.execute(
            f"SELECT tbl, name, type, nullable, ident, pk_name FROM {CATALOG_TABLE} "
            "ORDER BY tbl, ord"
        ).fetchall()
        grouped: dict[str, tuple[str, list[ColumnInfo], str | None]] = {}
        for tbl, name, type_text, nullable, ident, pk_name in rows:
            entry = grouped.setdefault(tbl.lower(), (tbl, [], pk_name))
            entry[1].append(ColumnInfo(name, SqlType.parse(type_text), bool(nullable), bool(ident)))
        self._tables = {key: make_table(tbl, cols, pk) for key, (tbl, cols, pk) in grouped.items()}
        self._version = version
        self._main_fingerprint = hash(tuple(rows))
        self._fingerprint()

    def _prune_temp(self, conn: sqlite3.Connection) -> None:
        temp_version = conn.execute("PRAGMA temp.schema_version").fetchone()[0]
        if temp_version != self._temp_version:
            # A rolled-back CREATE TABLE #t leaves no table behind: forget it too.
            live = {
                r[0].lower()
                for r in conn.execute(
                    "SELECT name FROM temp.sqlite_master WHERE type = 'table'"
                ).fetchall()
            }
            self.temp = {k: v for k, v in self.temp.items() if v.name.lower() in live}
            self._temp_version = temp_version

    def _fingerprint(self) -> None:
        if not self.temp and not self.table_variables:
            self.fingerprint = self._main_fingerprint
            return
        session_tables = (*self.temp.values(), *self.table_variables.values())
        self.fingerprint = hash((self._main_fingerprint, *session_tables))

    def invalidate(self) -> None:
        self._version = -1
        self._temp_version = -1

    def table(self, name: str) -> TableInfo | None:
        """The table (or view) named ``name`` as T-SQL writes it: ``t``, ``sales.t``, ``#t``,
        ``##t`` or ``@t``."""
        lowered = name.lower()
        if lowered.startswith("@"):
            return self.table_variables.get(lowered)
        if lowered.startswith("#") and not lowered.startswith("##"):
            return self.temp.get(lowered)
        return self._tables.get(lowered)

    def tables(self) -> list[TableInfo]:
        return list(self._tables.values())


def record_table(conn: sqlite3.Connection, table: TableInfo) -> None:
    conn.executemany(
        f"INSERT INTO {CATALOG_TABLE} (tbl, ord, name, type, nullable, ident, pk_name) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        [
            (table.name, i, c.name, str(c.type), int(c.nullable), int(c.identity), table.pk_name)
            for i, c in enumerate(table.columns)
        ],
    )


def forget_table(conn: sqlite3.Connection, name: str) -> None:
    conn.execute(f"DELETE FROM {CATALOG_TABLE} WHERE tbl = ?", (name,))
