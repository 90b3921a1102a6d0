"""What a statement is translated against (`Context`) and the row sources in scope (`Scope`).

Shared by the translator (_translate.py) and its built-in functions (_builtins.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import _errors
from ._catalog import Catalog
from ._types import Column, SqlType


@dataclass
class Context:
    """What a statement is translated against."""

    catalog: Catalog
    database: str
    variables: dict[str, SqlType]  # lower-case name without "@" -> declared type
    context_types: dict[str, SqlType] = field(default_factory=dict)  # SESSION_CONTEXT keys
    #: table-valued parameters: lower-case name without "@" -> the table type's columns
    table_params: dict[str, list[Column]] = field(default_factory=dict)


class Scope:
    """The row sources of one SELECT (alias -> columns), chained to the enclosing query."""

    def __init__(self, parent: Scope | None = None, ctes: dict[str, list[Column]] | None = None):
        self.parent = parent
        self.sources: list[tuple[str, list[Column]]] = []
        self.ctes: dict[str, list[Column]] = dict(
            ctes if ctes is not None else parent.ctes if parent else {}
        )

    def add(self, alias: str, columns: list[Column]) -> None:
        self.sources.append((alias.lower(), columns))

    def resolve(self, table: str, name: str) -> Column | None:
        """The column, None if it is not ours to judge (e.g. an ORDER BY alias)."""
        lowered = name.lower()
        if table:
            for alias, columns in self.sources:
                if alias == table.lower():
                    found = next((c for c in columns if c.name.lower() == lowered), None)
                    if found is None:
                        raise _errors.invalid_column(name)
                    return found
            return self.parent.resolve(table, name) if self.parent else None
        matches = [c for _, cols in self.sources for c in cols if c.name.lower() == lowered]
        if len(matches) > 1:
            raise _errors.SqlError(209, f"Ambiguous column name '{name}'.")
        if matches:
            return matches[0]
        return self.parent.resolve(table, name) if self.parent else None
