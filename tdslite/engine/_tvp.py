"""Table types and table-valued parameters.

``CREATE TYPE name AS TABLE (col type [NULL|NOT NULL], ...)`` records the type in the internal
table ``__tds_types`` (admin only, 262; 2714 when it exists); ``DROP TYPE [IF EXISTS] name``
removes it (3701). A table-valued parameter (`TableValue`, decoded by the wire layer from TDS type
0xF3) is bound as one JSON text of its rows, its values converted to the type's columns (515 for
a NULL in a NOT NULL column); in the statement ``FROM @p [AS a]`` becomes a derived table reading
that JSON with SQLite's ``json_each``, so the parameter is a READONLY table: using it as the
target of INSERT/UPDATE/DELETE is error 10700, as in SQL Server.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError

from . import _errors
from ._batch import Statement
from ._errors import SqlError
from ._results import RowCount
from ._state import SessionView
from ._types import BINARY_TYPES, Column, SqlType
from ._typing import sql_type_of
from ._values import convert, encode

TYPES_TABLE = "__tds_types"
_CREATE = f"""CREATE TABLE IF NOT EXISTS {TYPES_TABLE} (
    name TEXT PRIMARY KEY COLLATE NOCASE, columns TEXT NOT NULL)"""
#: The SQL type of a table-valued parameter's variable.
TABLE = SqlType("table")
_DDL = re.compile(
    r"^\s*(CREATE|DROP)\s+TYPE\s+(IF\s+EXISTS\s+)?((?:\[[^\]]+\]|\w+)(?:\s*\.\s*(?:\[[^\]]+\]|\w+))?)"
    r"\s*(.*)$",
    re.IGNORECASE | re.DOTALL,
)


@dataclass(frozen=True)
class TableValue:
    """A table-valued parameter as sent: its type's name, the wire type of each column, rows."""

    type_name: str
    types: tuple[SqlType, ...]
    rows: tuple[tuple[object, ...], ...]

    def __repr__(self) -> str:  # never show values
        return f"TableValue({self.type_name!r}, {len(self.types)} columns, {len(self.rows)} rows)"


def is_type_ddl(words: Sequence[str]) -> bool:
    return len(words) > 1 and words[0] in ("CREATE", "DROP") and words[1] == "TYPE"


def _name(text: str) -> str:
    """``dbo.[ids]`` -> ``ids`` (only the dbo schema exists)."""
    parts = [p.strip().strip("[]") for p in re.split(r"\s*\.\s*", text.strip())]
    if len(parts) > 1 and parts[0].lower() != "dbo":
        raise SqlError(2760, f'The specified schema name "{parts[0]}" does not exist.')
    return parts[-1]


def run_ddl(session: SessionView, statement: Statement) -> Iterator[RowCount]:
    """CREATE TYPE ... AS TABLE / DROP TYPE."""
    match = _DDL.match(statement.text)
    if match is None:
        raise _errors.syntax_error("TYPE")
    verb, if_exists, raw_name, rest = match.groups()
    name = _name(raw_name)
    conn = session._conn_internal()
    conn.execute(_CREATE)
    exists = conn.execute(f"SELECT 1 FROM {TYPES_TABLE} WHERE name = ?", (name,)).fetchone()
    if verb.upper() == "DROP":
        if not session.principal.may_ddl or (exists is None and not if_exists):
            raise SqlError(
                3701,
                f"Cannot drop the type '{name}', because it does not exist or you do not have "
                "permission.",
                severity=11,
            )
        conn.execute(f"DELETE FROM {TYPES_TABLE} WHERE name = ?", (name,))
        return
    if not session.principal.may_ddl:
        raise SqlError(
            262, f"CREATE TYPE permission denied in database '{session.database}'.", severity=14
        )
    table = re.match(r"^AS\s+TABLE\s*(\(.*\))\s*;?\s*$", rest.strip(), re.IGNORECASE | re.DOTALL)
    if if_exists or table is None:
        raise _errors.unsupported("CREATE TYPE other than AS TABLE (...)")
    if exists is not None:
        raise SqlError(
            2714, f"There is already an object named '{name}' in the database.", severity=16
        )
    columns = _columns(table.group(1))
    conn.execute(
        f"INSERT INTO {TYPES_TABLE} (name, columns) VALUES (?, ?)",
        (name, json.dumps([[c.name, str(c.type), c.nullable] for c in columns])),
    )
    yield from ()


def _columns(definition: str) -> list[Column]:
    try:
        tree = sqlglot.parse_one(f"CREATE TABLE t {definition}", read="tsql")
    except SqlglotError:
        raise _errors.syntax_error(definition[:30]) from None
    columns = []
    for item in tree.find_all(exp.ColumnDef):
        kind = item.args.get("kind")
        if kind is None:
            raise _errors.syntax_error(item.name)
        nullable = not any(
            isinstance(c.args.get("kind"), exp.NotNullColumnConstraint)
            and not c.args["kind"].args.get("allow_null")
            or isinstance(c.args.get("kind"), exp.PrimaryKeyColumnConstraint)
            for c in item.args.get("constraints") or []
        )
        columns.append(Column(item.name, sql_type_of(kind), nullable))
    if not columns:
        raise _errors.syntax_error(definition[:30])
    return columns


def type_columns(session: SessionView, name: str) -> list[Column]:
    conn = session._conn_internal()
    try:
        row = conn.execute(f"SELECT columns FROM {TYPES_TABLE} WHERE name = ?", (name,)).fetchone()
    except sqlite3.OperationalError:
        row = None  # no type was ever created
    if row is None:
        raise SqlError(2715, f"Column, parameter, or variable: cannot find data type {name}.")
    return [Column(n, SqlType.parse(t), bool(nullable)) for n, t, nullable in json.loads(row[0])]


def bind(session: SessionView, param_name: str, value: object) -> tuple[list[Column], str | None]:
    """The table type's columns and the JSON text of the parameter's rows (None for NULL)."""
    if not isinstance(value, TableValue):
        raise SqlError(206, f"Operand type clash: {param_name} is not a table-valued parameter.")
    columns = type_columns(session, _name(value.type_name))
    if not value.types and not value.rows:  # a NULL table-valued parameter: no rows
        return columns, "[]"
    if len(value.types) != len(columns):
        raise SqlError(
            8047,
            f"The table-valued parameter {param_name} has {len(value.types)} column(s) but its "
            f"type {value.type_name} has {len(columns)}.",
        )
    rows = []
    for row in value.rows:
        stored = []
        for item, source, column in zip(row, value.types, columns, strict=True):
            if item is None and not column.nullable:
                raise _errors.SqlError(
                    515,
                    f"Cannot insert the value NULL into column '{column.name}', table "
                    f"'@{param_name.lstrip('@')}'; column does not allow nulls. INSERT fails.",
                    state=2,
                )
            raw = encode(column.type, convert(item, column.type, source=source))
            stored.append(raw.hex() if isinstance(raw, bytes) else raw)
        rows.append(stored)
    return columns, json.dumps(rows)


def source(node: exp.Table, columns: list[Column]) -> exp.Subquery:
    """``@p AS a`` -> ``(SELECT json_extract(value, '$[0]') AS c1, ...
    FROM json_each(@p)) AS a``."""
    selected = []
    for index, column in enumerate(columns):
        value: exp.Expression = exp.Anonymous(
            this="json_extract",
            expressions=[exp.column("value"), exp.Literal.string(f"$[{index}]")],
        )
        if column.type.name in BINARY_TYPES:
            value = exp.Anonymous(this="tds_unhex", expressions=[value])
        selected.append(exp.alias_(value, column.name, quoted=True))
    parameter = node.this
    assert isinstance(parameter, exp.Parameter)
    bound = exp.Parameter(this=exp.Var(this=parameter.name.lower()))  # bindings are lower-case
    rows = exp.Table(this=exp.Anonymous(this="json_each", expressions=[bound]))
    alias = node.alias or parameter.name
    return exp.Subquery(
        this=exp.Select(expressions=selected).from_(rows),
        alias=exp.TableAlias(this=exp.to_identifier(alias, quoted=True)),
    )


def readonly(name: str) -> SqlError:
    return SqlError(
        10700,
        f'The table-valued parameter "@{name}" is READONLY and cannot be modified.',
        severity=16,
    )
