"""The client's query request: the JSON body of `POST /v1/tunnels/{tunnel}/query`, checked.

Every refusal is an `HttpError(ErrorCode.REQUEST_INVALID, ...)` whose message says which member
is wrong and what is expected (never echoing the SQL text or a parameter value back). Parameters are
capped here, before anything is signed or sent: at most `MAX_PARAMS` (SQL Server's limit per
request) and at most `max_param_bytes` of canonical JSON.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from protocol import ErrorCode, canonical_json, loads_object, param_type
from relay.http import HttpError

__all__ = [
    "MAX_PARAMS",
    "QueryRequest",
    "check_query_object",
    "new_query_id",
    "parse_query_request",
    "well_formed",
]

#: SQL Server accepts at most 2,100 parameters in one request.
MAX_PARAMS = 2100

_ALLOWED = frozenset({"sql", "query", "params", "max_rows", "timeout_ms", "query_id"})
#: A client query_id: a UUID, or any short token of safe characters (it is logged and echoed).
_QUERY_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.:-]{0,127}")


@dataclass(frozen=True, kw_only=True)
class QueryRequest:
    """A checked query request. Exactly one of `sql` and `query` is set."""

    sql: str | None
    query: str | None
    params: Mapping[str, Any] = field(repr=False)
    max_rows: int | None
    timeout_ms: int
    query_id: str
    client_query_id: bool
    #: ``canonical_json(params)``, as the size check encoded it (the attestation hashes it)
    params_json: bytes | None = field(default=None, repr=False)

    @property
    def options(self) -> dict[str, int | None]:
        return {"max_rows": self.max_rows, "timeout_ms": self.timeout_ms}

    @property
    def sql_bytes(self) -> int:
        """The size of `sql` in UTF-8 bytes (what the connector's max_statement_bytes limits)."""
        return len(self.sql.encode("utf-8", "surrogatepass")) if self.sql is not None else 0


def new_query_id() -> str:
    """A random query id: ``str(uuid.uuid4())`` without building a `uuid.UUID` (half the time)."""
    raw = bytearray(os.urandom(16))
    raw[6] = raw[6] & 0x0F | 0x40  # version 4
    raw[8] = raw[8] & 0x3F | 0x80  # RFC 4122 variant
    x = raw.hex()
    return f"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}"


#: what JavaScript's trim() removes (its WhiteSpace and LineTerminator), so that both relays call
#: the same statements blank (Python's strip() also removes U+001C-U+001F and U+0085, not U+FEFF)
_BLANK = (
    "\t\n\v\f\r \u00a0\u1680"
    + "".join(map(chr, range(0x2000, 0x200B)))
    + ("\u2028\u2029\u202f\u205f\u3000\ufeff")
)
#: the largest integer every JSON reader holds exactly (a double's 53-bit significand)
_EXACT = 2**53 - 1


def _parameter_problem(value: Any) -> str | None:
    """Why ``value`` is no parameter value (SPEC 12.2: a JSON scalar, or ``{"type", "value"}``
    with a scalar value, as `protocol.param_type` checks), or holds an integer beyond
    +-(2^53 - 1), which the Worker relay cannot read exactly; None when it is one."""
    try:
        param_type(value)
    except ValueError as exc:
        return str(exc)
    inner = value.get("value") if isinstance(value, dict) else value
    if isinstance(inner, int) and not -_EXACT <= inner <= _EXACT:
        return (
            "an integer beyond 2^53, which JSON readers such as JavaScript's cannot hold "
            'exactly; send it as a string: {"type": "bigint", "value": "9007199254740993"}'
        )
    return None


def well_formed(text: str) -> bool:
    """Whether ``text`` is valid Unicode (no lone surrogate from a JSON escape such as \\ud800):
    the QUERY frame carries it as UTF-8."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _invalid(message: str) -> HttpError:
    return HttpError(ErrorCode.REQUEST_INVALID, message)


def _optional_int(body: Mapping[str, Any], key: str, *, minimum: int) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value < 2**53:
        raise _invalid(f"'{key}' must be an integer >= {minimum} and < 2^53 (or null)")
    return value


def parse_query_request(
    raw: bytes, *, max_timeout_ms: int, max_param_bytes: int = 262_144
) -> QueryRequest:
    """Parse and check a query request body.

    Args:
        raw: the HTTP request body.
        max_timeout_ms: the relay's ceiling (and default) for `timeout_ms`.
        max_param_bytes: the most bytes the canonical JSON of `params` may take.

    Raises:
        HttpError: request.invalid naming the member that is wrong.
    """
    try:
        # The protocol's own strict parser (no NaN/Infinity, no duplicate keys, an object): a
        # request the relay accepts always makes a QUERY frame the connector accepts.
        body = loads_object(raw)
    except ValueError as exc:
        raise _invalid(
            f"body is not a JSON object ({str(exc)[:80]}); send "
            '{"sql": "...", "params": {...}} with Content-Type: application/json'
        ) from None
    return check_query_object(body, max_timeout_ms=max_timeout_ms, max_param_bytes=max_param_bytes)


def check_query_object(
    body: Mapping[str, Any], *, max_timeout_ms: int, max_param_bytes: int = 262_144
) -> QueryRequest:
    """`parse_query_request` of a body already read as JSON (a session's ``query`` op, a
    statement of ``/transaction``): the same checks and refusals."""
    unknown = sorted(set(body) - _ALLOWED)
    if unknown:
        shown = ", ".join(repr(k[:40]) for k in unknown[:5])
        raise _invalid(f"unknown member(s) {shown}; allowed: {', '.join(sorted(_ALLOWED))}")
    sql, query = body.get("sql"), body.get("query")
    if (sql is None) == (query is None):
        raise _invalid("send exactly one of 'sql' (a statement) and 'query' (a named query)")
    if sql is not None and (not isinstance(sql, str) or not sql.strip(_BLANK)):
        raise _invalid("'sql' must be a non-empty string")
    if sql is not None and not well_formed(sql):
        raise _invalid("'sql' contains a lone surrogate (invalid Unicode)")
    if query is not None and (not isinstance(query, str) or not _NAME.fullmatch(query)):
        raise _invalid("'query' must be a query name (letters, digits, _ . : -; at most 128)")
    params = body.get("params", {})
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise _invalid("'params' must be a JSON object mapping parameter names to values")
    if len(params) > MAX_PARAMS:
        raise _invalid(
            f"{len(params)} parameters; SQL Server accepts at most {MAX_PARAMS} in one request: "
            "pass a list as one parameter (e.g. JSON text read with OPENJSON) or split the query"
        )
    for name, value in params.items():
        problem = _parameter_problem(value)
        if problem is not None:
            raise _invalid(f"parameter {name[:40]!r}: {problem}")
    try:
        params_json = canonical_json(params)
    except ValueError:  # a lone surrogate: not encodable as UTF-8
        raise _invalid("'params' holds text that is not valid Unicode") from None
    params_bytes = len(params_json)
    if params_bytes > max_param_bytes:
        raise _invalid(
            f"'params' is {params_bytes} bytes as JSON; this relay accepts at most "
            f"{max_param_bytes}: send fewer or smaller values"
        )
    for name in params:
        if not _NAME.fullmatch(name.removeprefix("@")):
            raise _invalid(f"parameter name {name[:40]!r} is not a valid name")
    max_rows = _optional_int(body, "max_rows", minimum=0)
    timeout_ms = _optional_int(body, "timeout_ms", minimum=1)
    if timeout_ms is None or timeout_ms > max_timeout_ms:
        timeout_ms = max_timeout_ms
    query_id = body.get("query_id")
    bad_id = not isinstance(query_id, str) or not _QUERY_ID.fullmatch(query_id)
    if query_id is not None and bad_id:
        raise _invalid(
            "'query_id' must be a UUID (or 1-128 characters of letters, digits, . _ : -)"
        )
    return QueryRequest(
        sql=sql,
        query=query,
        params=params,
        max_rows=max_rows,
        timeout_ms=timeout_ms,
        query_id=query_id if query_id is not None else new_query_id(),
        client_query_id=query_id is not None,
        params_json=params_json,
    )
