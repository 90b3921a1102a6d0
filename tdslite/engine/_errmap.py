"""SQLite errors -> SQL Server errors (numbers, classes, messages naming the object)."""

from __future__ import annotations

import re
import sqlite3

from . import _errors
from ._catalog import TableInfo
from ._errors import SqlError


def map_sqlite_error(
    exc: sqlite3.Error,
    *,
    verb: str,
    table: TableInfo | None,
    database: str,
    denied: tuple[str, str] | None,
) -> SqlError:
    """The SQL Server error for a SQLite failure of a ``verb`` statement on ``table``."""
    message = str(exc)
    if message == "interrupted":
        return _errors.cancelled()
    if message.startswith("not authorized") or "prohibited" in message:
        permission, obj = denied or ("EXECUTE", "statement")
        if permission == "ALTER":
            return _errors.ddl_denied("CREATE TABLE", database)
        return _errors.permission_denied(permission, obj, database)
    match = re.match(r"UNIQUE constraint failed: (.+)", message)
    if match is not None:
        columns = [c.split(".", 1)[-1] for c in match.group(1).split(", ")]
        name = table.name if table is not None else columns[0]
        pk = table is not None and table.pk_name is not None
        if pk and table is not None:
            pk_columns = [c.name for c in table.columns if not c.nullable]
            pk = set(columns) <= set(pk_columns)
        if pk and table is not None:
            return _errors.pk_violation(str(table.pk_name), name, ", ".join(columns))
        return _errors.unique_violation(f"UQ_{name}_{'_'.join(columns)}", name, ", ".join(columns))
    match = re.match(r"NOT NULL constraint failed: ([^.]+)\.(.+)", message)
    if match is not None:
        return _errors.null_violation(match.group(2), match.group(1), database, verb)
    match = re.match(r"CHECK constraint failed: tds_len_(.+)", message)
    if match is not None:
        return _errors.truncation(f"{database}.dbo.{table.name if table else '?'}", match.group(1))
    if message.startswith("FOREIGN KEY constraint failed"):
        return SqlError(
            547,
            f"The {verb} statement conflicted with a FOREIGN KEY constraint"
            f"{' on table ' + repr(table.name) if table else ''}. "
            "The statement has been terminated.",
        )
    for pattern, number in (
        (r"no such table: (?:main\.)?(.+)", 208),
        (r"no such column: (.+)", 207),
        (r"ambiguous column name: (.+)", 209),
    ):
        match = re.match(pattern, message)
        if match is not None:
            name = match.group(1)
            if number == 208:
                return _errors.invalid_object(name)
            if number == 207:
                return _errors.invalid_column(name.split(".")[-1])
            return SqlError(209, f"Ambiguous column name '{name}'.")
    match = re.match(r"table \"?([^\"]+)\"? already exists", message)
    if match is not None:
        return _errors.already_exists(match.group(1))
    if "database is locked" in message or "database table is locked" in message:
        return SqlError(
            1205,
            "Transaction was deadlocked on lock resources with another process and has been "
            "chosen as the deadlock victim. Rerun the transaction.",
            severity=13,
        )
    if (
        message.startswith("misuse of aggregate")
        or "aggregate functions are not allowed" in message
    ):
        return SqlError(
            8120,
            "Column is invalid in the select list because it is not contained in either an "
            "aggregate function or the GROUP BY clause.",
        )
    if "syntax error" in message or message == "incomplete input":
        return SqlError(102, f"Incorrect syntax ({message}).", severity=15)
    return SqlError(50000, f"tdslite could not run this statement on SQLite: {message}")
