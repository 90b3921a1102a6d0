"""Bulk load: ``INSERT BULK table (columns) WITH (options)`` and the rows of the BulkLoad message.

SQL Server accepts INSERT BULK only from a client library, which sends the rows next in a TDS
BulkLoad message (the wire layer decodes them, tdslite/server/_bulk.py). Here:

- `prepare_bulk` reads the statement, checks the table, the columns and the INSERT permission
  (error 208, 207, 264, 229: fail closed, before any row arrives) and returns a `BulkTarget`;
- `bulk_insert` inserts the rows as one unit (all or none, as SQL Server's single bulk batch):
  every row is an INSERT the engine type-checks and converts like any other (245, 515, 2627,
  2628, 8115 ...) and whose permission it checks again. Without KEEP_NULLS a NULL leaves the column
  out, so its DEFAULT applies (SQL Server's rule); with KEEP_NULLS the NULL is stored. Without
  KEEPIDENTITY the values sent for an IDENTITY column are ignored and new ones generated.
  CHECK_CONSTRAINTS, TABLOCK, FIRE_TRIGGERS, ORDER(...), ROWS_PER_BATCH and KILOBYTES_PER_BATCH
  are accepted; constraints (foreign keys, UNIQUE) are always checked by tdslite.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import _errors
from ._catalog import ColumnInfo, TableInfo, is_internal
from ._errors import SqlError
from ._results import StatementFailed
from ._types import Param, SqlType

if TYPE_CHECKING:
    from ._session import Session

_STATEMENT = re.compile(
    r"^\s*INSERT\s+BULK\s+(?P<table>(?:\[[^\]]+\]|\"[^\"]+\"|[\w#@$]+)"
    r"(?:\s*\.\s*(?:\[[^\]]+\]|\"[^\"]+\"|[\w#@$]+)){0,2})\s*"
    r"(?:\((?P<columns>.*?)\))?\s*(?:WITH\s*\((?P<options>.*)\))?\s*;?\s*$",
    re.IGNORECASE | re.DOTALL,
)
_OPTIONS = frozenset(
    {"CHECK_CONSTRAINTS", "FIRE_TRIGGERS", "KEEP_NULLS", "KEEPIDENTITY", "TABLOCK", "ORDER",
     "ROWS_PER_BATCH", "KILOBYTES_PER_BATCH"}
)  # fmt: skip


def is_insert_bulk(sql: str) -> bool:
    return re.match(r"^\s*INSERT\s+BULK\b", sql, re.IGNORECASE) is not None


@dataclass(frozen=True)
class BulkTarget:
    """What an INSERT BULK prepared: the table and the columns the rows will carry, in order."""

    table: TableInfo
    columns: tuple[ColumnInfo, ...]
    keep_nulls: bool
    keep_identity: bool
    options: frozenset[str]


def _unquote(name: str) -> str:
    name = name.strip()
    if name[:1] in '["' and len(name) >= 2:
        return name[1:-1]
    return name


def _split_top(text: str) -> list[str]:
    """Split on commas outside parentheses and brackets."""
    parts: list[str] = []
    item: list[str] = []
    depth = 0
    for ch in text:
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(item).strip())
            item = []
        else:
            item.append(ch)
    if "".join(item).strip():
        parts.append("".join(item).strip())
    return parts


def _column_name(definition: str) -> str:
    match = re.match(r"\s*(\[[^\]]+\]|\"[^\"]+\"|\S+)", definition)
    if match is None:
        raise _errors.syntax_error(definition[:30])
    return _unquote(match.group(1))


def prepare_bulk(session: Session, sql: str) -> BulkTarget:
    """Check an INSERT BULK statement; the rows follow in a BulkLoad message.

    Raises:
        SqlError: 102 syntax, 208 unknown table, 207 unknown column, 264 a column twice,
            229 no INSERT permission, 40517 an unknown option.
    """
    match = _STATEMENT.match(sql)
    if match is None:
        raise _errors.syntax_error("BULK")
    parts = [_unquote(p) for p in re.split(r"\s*\.\s*(?![^\[]*\])", match.group("table"))]
    name = parts[-1]
    schema = parts[-2] if len(parts) > 1 else ""
    database = parts[-3] if len(parts) > 2 else ""
    full = ".".join(p for p in parts if p)
    if (database and database.lower() != session.database.lower()) or (
        schema and schema.lower() != "dbo"
    ):
        raise _errors.invalid_object(full)
    session._catalog.refresh(session._conn_internal())
    table = None if is_internal(name) else session._catalog.table(name)
    if table is None:
        raise _errors.invalid_object(full)
    # the permission comes before anything about the columns: a user without INSERT learns no
    # more than SQL Server tells them
    session.principal.check(
        verb="INSERT", reads=set(), writes={table.name.lower()}, database=session.database
    )
    definitions = _split_top(match.group("columns") or "")
    columns: list[ColumnInfo] = []
    for definition in definitions:
        column = table.column(_column_name(definition))
        if column is None:
            raise _errors.invalid_column(_column_name(definition))
        if column in columns:
            raise SqlError(
                264,
                f"The column name '{column.name}' is specified more than once in the column list "
                "of an INSERT BULK.",
            )
        columns.append(column)
    options: set[str] = set()
    for option in _split_top(match.group("options") or ""):
        word = re.split(r"[\s=(]", option.strip(), maxsplit=1)[0].upper()
        if word not in _OPTIONS:
            raise _errors.unsupported(f"INSERT BULK option {word}")
        options.add(word)
    return BulkTarget(
        table,
        tuple(columns or table.columns),
        keep_nulls="KEEP_NULLS" in options,
        keep_identity="KEEPIDENTITY" in options,
        options=frozenset(options),
    )


def check_columns(target: BulkTarget, sent: Sequence[str]) -> None:
    """The BulkLoad message must describe the columns INSERT BULK named, in that order.

    Raises:
        SqlError: 4816 when the count or a name differs.
    """
    expected = [c.name.lower() for c in target.columns]
    if len(sent) != len(expected):
        raise SqlError(
            4816,
            f"Invalid column count in bulk load: INSERT BULK named {len(expected)} column(s) of "
            f"'{target.table.name}' but the bulk data describes {len(sent)}.",
        )
    for index, (name, want) in enumerate(zip(sent, expected, strict=True), 1):
        if name and name.lower() != want:
            raise SqlError(
                4816,
                f"Invalid column in bulk load for colid {index}: the bulk data names '{name}' "
                f"where INSERT BULK named '{target.columns[index - 1].name}'.",
            )


def _quote(name: str) -> str:
    return "[" + name.replace("]", "]]") + "]"


def bulk_insert(
    session: Session,
    target: BulkTarget,
    types: Sequence[SqlType],
    rows: Iterable[Sequence[object]],
) -> int:
    """Insert ``rows`` (values typed as ``types``) into the target, all or none; the row count.

    Raises:
        SqlError: the first row that fails (its error, e.g. 245, 515, 2627, 229); no row stays.
    """
    conn: sqlite3.Connection = session._conn
    count = 0
    conn.execute("SAVEPOINT tds_bulk")
    added_identity = False
    try:
        identity = target.table.identity
        if identity is not None and target.keep_identity:
            name = target.table.name.lower()
            added_identity = name not in session._identity_insert
            session._identity_insert.add(name)
        for row in rows:
            chosen = [
                i
                for i, (column, value) in enumerate(zip(target.columns, row, strict=True))
                if not (column.identity and not target.keep_identity)
                and (value is not None or target.keep_nulls)
            ]
            params = [Param(f"@b{i}", types[i], row[i]) for i in chosen]
            table = _quote(target.table.name)
            if chosen:
                names = ", ".join(_quote(target.columns[i].name) for i in chosen)
                values = ", ".join(p.name for p in params)
                sql = f"INSERT INTO {table} ({names}) VALUES ({values})"
            else:
                sql = f"INSERT INTO {table} DEFAULT VALUES"
            for result in session.execute(sql, params):
                if isinstance(result, StatementFailed):
                    raise result.error
            count += 1
    except BaseException:
        if added_identity:
            session._identity_insert.discard(target.table.name.lower())
        try:
            conn.execute("ROLLBACK TO tds_bulk")
            conn.execute("RELEASE tds_bulk")
        except sqlite3.Error:
            pass  # a batch-aborting error already rolled the whole transaction back
        raise
    if added_identity:
        session._identity_insert.discard(target.table.name.lower())
    conn.execute("RELEASE tds_bulk")
    session._rowcount = count
    return count
