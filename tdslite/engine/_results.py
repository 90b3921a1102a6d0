"""What Session.execute yields: a ResultSet (columns + lazily produced rows), a RowCount, a
StatementFailed (a statement-level error after which the batch goes on), or an Info message."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from ._errors import SqlError
from ._types import Column


@dataclass
class ResultSet:
    """One result set of a batch.

    ``rows`` is a lazy iterator: rows are read from SQLite as it is advanced, so the wire layer can
    stream them; it may raise SqlError (e.g. divide by zero in row 1,000, or a cancel). Consume or
    close it before advancing the batch iterator.
    """

    columns: list[Column]
    rows: Iterator[tuple[object, ...]]


@dataclass(frozen=True)
class RowCount:
    """A statement that affected ``count`` rows (DONE with DONE_COUNT), or with ``select`` a
    ``SELECT @v = ...`` that assigned variables from ``count`` rows (its DONE says SELECT)."""

    count: int
    select: bool = False


@dataclass(frozen=True)
class StatementFailed:
    """A statement ended with a statement-level error (2627, 547, 8134...): only that statement
    was undone and the batch goes on with the next one, as SQL Server with XACT_ABORT OFF.
    (An error that ends the batch is raised instead, as is an error of the batch's last
    statement.)"""

    error: SqlError


@dataclass(frozen=True)
class Info:
    """An informational message (PRINT, RAISERROR of severity 0-10): an INFO token, no DONE.

    ``error`` carries its number, text, state, class and line; ``nowait`` (RAISERROR ... WITH
    NOWAIT) asks the wire layer to send everything it holds now instead of at the end."""

    error: SqlError
    nowait: bool = False
