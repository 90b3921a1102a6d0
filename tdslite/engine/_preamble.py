"""A fast path for one batch shape: ``sp_set_session_context`` calls with bound values.

A client that tags every request with who asked (the edgetds connector does, on every query)
sends the same batch each time, e.g.::

    EXEC sp_set_session_context @key = N'edgetds.sub', @value = @c0, @read_only = 1;
    EXEC sp_set_session_context @key = N'edgetds.iss', @value = @c1, @read_only = 1

with the values as sp_executesql parameters. The general path splits, tokenizes and dispatches
each statement on every call, which costs more than the query that follows. `match` recognizes
exactly this shape (literal keys, ``@name`` values, ``@read_only = 0|1``, ``;`` between calls,
nothing else) and `Session.execute` then sets the keys directly.

Rule: the fast path only runs when it gives the same answer as the general path. Whatever could
make a call fail or behave differently (a key already set read-only, a key set twice in the batch,
a key too long, an undeclared or table-valued parameter, a user procedure of that name, table
variables in scope) sends the batch down the general path instead, which raises the error
SQL Server would. So the fast path never raises and yields no result, as the general path does
for these calls.
"""

from __future__ import annotations

import functools
import re

__all__ = ["Call", "match"]

#: (key, parameter name in lower case without "@", read_only)
Call = tuple[str, str, bool]

_CALL = (
    r"EXEC sp_set_session_context @key = N'([A-Za-z0-9_.\-]{1,128})', "
    r"@value = @([A-Za-z_][A-Za-z0-9_]{0,126}), @read_only = ([01])"
)
_BATCH = re.compile(rf"{_CALL}(?:;{_CALL})*")
_ONE = re.compile(_CALL)


@functools.lru_cache(maxsize=64)
def match(sql: str) -> tuple[Call, ...] | None:
    """The calls of ``sql`` if it is exactly the fast path's shape, else None."""
    if not sql.startswith("EXEC sp_set_session_context ") or _BATCH.fullmatch(sql) is None:
        return None
    calls = tuple(
        (found.group(1), found.group(2).lower(), found.group(3) == "1")
        for found in _ONE.finditer(sql)
    )
    keys = [key for key, _, _ in calls]
    if len(set(keys)) != len(keys) or any(name.startswith("__g_") for _, name, _ in calls):
        return None  # the general path decides what a repeated key or a reserved name does
    return calls
