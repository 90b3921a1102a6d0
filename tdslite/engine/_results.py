"""What Session.execute yields: a ResultSet (columns + lazily produced rows) or a RowCount."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

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
