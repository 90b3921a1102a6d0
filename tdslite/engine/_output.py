"""The OUTPUT clause of INSERT, UPDATE and DELETE, as SQL Server has it, on SQLite's RETURNING.

SQLite's RETURNING gives the new row of an INSERT or UPDATE and the removed row of a DELETE. The
old row of an UPDATE (``OUTPUT deleted.x``) is read just before the UPDATE runs, by rowid, and
joined to what RETURNING gives. ``OUTPUT ... INTO @t | #t`` stores the rows in that table (each
value converted to its column's type with ``tds_cast``) instead of sending them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlglot import exp

from . import _errors
from ._catalog import TableInfo
from ._translate import Translator, check_args, object_name, to_sqlite
from ._types import Column


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True)
class Output:
    """A DML statement's OUTPUT clause, planned.

    Attributes:
        columns: the OUTPUT list's columns (a result set, or the rows stored by ``into``).
        sources: per column, its index in the RETURNING row; ``-1 - j`` is column ``j`` of the
            pre-image row (a DELETED value of an UPDATE, which SQLite's RETURNING cannot give).
        preimage: for an UPDATE that outputs DELETED values: ``SELECT rowid, <columns>`` of the
            rows it will change, run first; the RETURNING row then ends with the rowid.
        into: ``OUTPUT ... INTO @t | #t``: the table the rows go to instead of the client.
        insert: the SQLite INSERT (positional parameters) that stores one row in ``into``.
    """

    columns: tuple[Column, ...]
    sources: tuple[int, ...]
    preimage: str | None = None
    into: TableInfo | None = None
    insert: str | None = None

    def rows(self, returned: list[Any], before: dict[int, Any]) -> list[tuple[Any, ...]]:
        """The OUTPUT rows from SQLite's RETURNING rows (and the pre-image rows by rowid)."""
        out = []
        for row in returned:
            old = before.get(row[-1]) if self.preimage is not None else None
            out.append(
                tuple(
                    row[i] if i >= 0 else (old[-1 - i] if old is not None else None)
                    for i in self.sources
                )
            )
        return out


def _unbound(target: exp.Column) -> _errors.SqlError:
    return _errors.SqlError(
        4104, f'The multi-part identifier "{target.table}.{target.name}" could not be bound.'
    )


def output(node: exp.Expression, info: TableInfo, tr: Translator, verb: str) -> Output | None:
    """Translate ``OUTPUT inserted.col | deleted.col | inserted.* | deleted.* [INTO @t | #t]``
    into SQLite's RETURNING (see `Output`).

    As in SQL Server: INSERT has only INSERTED, DELETE only DELETED (else 4104), UPDATE both.
    SQLite's RETURNING gives the new row of an INSERT/UPDATE and the removed row of a DELETE;
    the old row of an UPDATE is read just before it (not for ``UPDATE ... FROM``).
    """
    returning = node.args.get("returning")
    if not returning:
        return None
    check_args(returning, {"expressions", "into"}, "OUTPUT")
    columns: list[Column] = []
    sources: list[int] = []
    items: list[exp.Expression] = []
    old_names = [c.name for c in info.columns]
    uses_old = False
    for item in returning.expressions:
        alias = item.alias if isinstance(item, exp.Alias) else None
        target = item.this if isinstance(item, exp.Alias) else item
        if not isinstance(target, exp.Column) or target.table.lower() not in (
            "inserted",
            "deleted",
        ):
            raise _errors.unsupported("OUTPUT of anything but INSERTED.column or DELETED.column")
        old = target.table.lower() == "deleted"
        if (old and verb == "INSERT") or (not old and verb == "DELETE"):
            raise _unbound(target)
        if isinstance(target.this, exp.Star):
            chosen = list(info.columns)
        else:
            found = info.column(target.name)
            if found is None:
                raise _errors.invalid_column(target.name)
            chosen = [found]
        for column in chosen:
            columns.append(Column(alias or column.name, column.type, column.nullable))
            if old and verb == "UPDATE":
                uses_old = True
                sources.append(-1 - old_names.index(column.name))
            else:
                sources.append(len(items))
                items.append(exp.column(column.name, quoted=True))
    preimage = None
    if uses_old:
        if node.args.get("from_"):
            raise _errors.unsupported("OUTPUT DELETED in UPDATE ... FROM")
        items.append(exp.column("rowid"))
        select = exp.select(
            exp.column("rowid"), *(exp.column(n, quoted=True) for n in old_names)
        ).from_(node.this.copy())
        if node.args.get("where") is not None:
            select.set("where", node.args["where"].copy())
        preimage = to_sqlite(select)
    node.set("returning", exp.Returning(expressions=items or [exp.column("rowid")]))
    into = returning.args.get("into")
    if not into:
        return Output(tuple(columns), tuple(sources), preimage)
    return _output_into(into, Output(tuple(columns), tuple(sources), preimage), tr)


def _output_into(into: exp.Expression, planned: Output, tr: Translator) -> Output:
    """``OUTPUT ... INTO @t | #t``: the INSERT storing each row, converted to the target's types
    (the number of columns must match the target's, as SQL Server: else 213)."""
    table = into if isinstance(into, exp.Table) else exp.Table(this=into.copy())
    name = object_name(table)
    if not name.startswith(("@", "#")) or name.startswith("##"):
        raise _errors.unsupported("OUTPUT INTO a table other than a table variable or #table")
    target = tr.table(table)
    wanted = [c for c in target.columns if not c.identity]
    if len(wanted) != len(planned.columns):
        raise _errors.SqlError(
            213,
            "Column name or number of supplied values does not match table definition.",
        )
    names = ", ".join(_quoted(c.name) for c in wanted)
    values = ", ".join(
        f"tds_cast(?, '{column.type}', '{source.type}')"
        for column, source in zip(wanted, planned.columns, strict=True)
    )
    insert = f"INSERT INTO temp.{_quoted(target.name)} ({names}) VALUES ({values})"
    return Output(planned.columns, planned.sources, planned.preimage, target, insert)
