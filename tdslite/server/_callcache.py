"""A connection's cache of the first call of a repeated RPC request: its parse and bind.

A pooling client sends the same first call before each query (the edgetds connector: the
``sp_set_session_context`` preamble as an sp_executesql): the same procedure, statement text,
declaration and parameter names and types, only the values differ (a query id each time).
`_rpc.parse` and `_dispatch._bind` would read, decode and check the statement text and the
declaration again every time. A `CallTemplate` keeps what they gave for one such call, keyed by
exact bytes:

- ``head``: the call's bytes up to its first value parameter (the procedure, its option flags,
  the statement text and the declaration, each byte of them);
- for each value parameter, ``meta``: its bytes up to its value's length (the name, the status
  byte and the whole TYPE_INFO, collation included).

A payload that holds exactly the head where its first call starts, then exactly each meta where
that parameter starts, is the same call with its own values: `CallTemplate.read` reads each value
as `_params.read_nvarchar` reads it (its length, then UTF-16 strictly decoded). Anything else is a
miss, and the request is parsed as if there were no cache: another byte anywhere in the head or a
meta, another value form (NULL, longer than its maximum length, cut short), a value that does not
decode, more or fewer parameters.

Rule: a hit gives exactly the call and bound parameters `_rpc.parse` and `_dispatch._bind` give
for the same payload (`CallTemplate.call`, `CallTemplate.bound`), or nothing. A template is made
only from a call they read that way (every value an nvarchar of at most 4000 characters, bound as
sent, without a conversion), and only when the session planned it as its preamble
(`Session.preamble_plan`). The session plans each request again, with its own values and its
state then, as without a cache (`Session.preamble_plan_values`: only what depends on the
statement and the parameters' names and types, all in the head and the metas, is kept). When it
plans the call, nothing else is made of the values: the call and its bound parameters are made
(`CallTemplate.call`) only when the request takes any other way. At most `TEMPLATES_KEPT`
templates per connection, the oldest dropped first.
"""

from __future__ import annotations

from typing import NamedTuple

from tdslite.engine import Param, PreambleShape, SqlType

from . import _rpc
from ._buffer import Reader
from ._datatypes import T, utf16_decoder
from ._params import read_nvarchar
from ._rpc import BATCH_FLAGS, RpcCall, RpcParam
from ._wiretype import WireType

__all__ = ["TEMPLATES_KEPT", "CallCache", "CallTemplate"]

#: Templates a connection keeps (a client sends one preamble shape; a few cover its variants).
TEMPLATES_KEPT = 4

_NVARCHAR = int(T.NVARCHAR)
#: an nvarchar TYPE_INFO: the type code, the maximum length (2 bytes), the collation (5 bytes)
_TYPE_INFO_SIZE = 8


class _Value(NamedTuple):
    """One value parameter of a template: its bytes before the value's length, and what
    `_rpc.parse` and `_dispatch._bind` made of them."""

    meta: bytes
    skip: int  #: the meta's length and the value's length (2 bytes): where the value starts
    max_len: int  #: the TYPE_INFO's maximum length in bytes (at most 8000: never 0xFFFF)
    name: str  #: as sent ("" when positional)
    wire: WireType
    output: bool
    bound_name: str  #: the engine parameter's name (`_bind`: the sent one or the declared one)
    bound_type: SqlType


class CallTemplate(NamedTuple):
    """A first call's bytes up to each value, and what they parse and bind to."""

    head: bytes
    name: str
    parts: tuple[str, ...]
    fixed: tuple[RpcParam, ...]  #: the parameters the head holds (statement, declaration)
    values: tuple[_Value, ...]
    #: the session's plan's shape (`Session.preamble_plan`): what depends only on the statement
    #: and the parameters' names and types, all of which the head and the metas hold
    shape: PreambleShape
    statement: str  #: the statement text (the first parameter's value)
    #: the bound parameters' names and types, as the statement log names them
    log_params: tuple[tuple[str, str], ...]
    #: each value's (meta, skip, max_len): what `read` reads
    reads: tuple[tuple[bytes, int, int], ...]

    def read(self, data: bytes, pos: int) -> tuple[list[str], int] | None:
        """The values of the call at ``pos`` (where the head starts) and where the call ends (a
        batch flag, or the payload's end); None for a miss."""
        if not data.startswith(self.head, pos):
            return None
        size = len(data)
        pos += len(self.head)
        values: list[str] = []
        for meta, skip, max_len in self.reads:
            at = pos + skip
            if at > size or not data.startswith(meta, pos):
                return None
            n = data[at - 2] | data[at - 1] << 8
            pos = at + n
            if n > max_len or pos > size:  # (NULL, 0xFFFF, is more than any maximum length)
                return None
            try:
                values.append(utf16_decoder(data[at:pos], "strict", True)[0])
            except UnicodeDecodeError:
                return None
        if pos < size and data[pos] not in BATCH_FLAGS:
            return None  # more parameters than the template's
        return values, pos

    def call(self, values: list[str]) -> RpcCall:
        """The call with these values, as `_rpc.parse` reads it."""
        params = self.fixed + tuple(
            RpcParam(v.name, v.wire, value, v.output)
            for v, value in zip(self.values, values, strict=True)
        )
        return RpcCall(self.name, params, self.parts)

    def bound(self, values: list[str]) -> list[Param]:
        """The call's value parameters with these values, as `_dispatch._bind` binds them."""
        return [
            Param(v.bound_name, v.bound_type, value, v.output)
            for v, value in zip(self.values, values, strict=True)
        ]


def make_template(
    data: bytes, pos: int, call: RpcCall, bound: list[Param], shape: PreambleShape
) -> CallTemplate | None:
    """The template of ``call``, the first call of ``data`` (starting at ``pos``, after
    ALL_HEADERS), as `_rpc.parse` read it and `_dispatch._bind` bound its value parameters
    (``bound``), and the shape of the session's plan of it; None when a call of that form is
    not one a template reads."""
    params = call.params
    if len(params) < 2 or len(bound) != len(params) - 2:
        return None
    size = len(data)
    if pos + 6 <= size and data[pos] == 0xFF and data[pos + 1] == 0xFF:
        start = pos + 6  # ProcID and option flags
    elif pos + 2 <= size:
        start = pos + 2 + 2 * (data[pos] | data[pos + 1] << 8) + 2  # name and option flags
    else:
        return None
    r = Reader(data)
    values: list[_Value] = []
    head_end = start
    for i, param in enumerate(params):
        at = start + 1 + 2 * data[start] + 1  # after the name and the status byte
        if at >= size or data[at] != _NVARCHAR:
            return None
        found = read_nvarchar(r, data, at)
        if found is None or found != (param.type, param.value) or type(param.value) is not str:
            return None
        if i < 2:
            head_end = r.pos
        else:
            value = bound[i - 2]
            if param.type.length == -1:
                return None  # a (max) value
            if value.type != SqlType("nvarchar", length=param.type.length):
                # `_bind` converted it to its declared type (or checked it, as xml): it would
                # convert (or refuse) another value otherwise
                return None
            if value.value is not param.value or value.output != param.output:
                return None
            meta = data[start : at + _TYPE_INFO_SIZE]
            max_len = data[at + 1] | data[at + 2] << 8
            values.append(
                _Value(
                    meta,
                    len(meta) + 2,
                    max_len,
                    param.name,
                    param.type,
                    param.output,
                    value.name,
                    value.type,
                )
            )
        start = r.pos
    if start < size and data[start] not in BATCH_FLAGS:
        return None
    return CallTemplate(
        data[pos:head_end],
        call.name,
        call.parts,
        params[:2],
        tuple(values),
        shape,
        str(params[0].value),
        tuple((p.name, p.type.text) for p in bound),
        tuple((v.meta, v.skip, v.max_len) for v in values),
    )


class CallCache:
    """The templates of one connection (`TEMPLATES_KEPT` at most, the oldest dropped first)."""

    __slots__ = ("templates",)

    def __init__(self) -> None:
        self.templates: list[CallTemplate] = []

    def lookup(
        self, payload: bytes, *, skip_headers: bool
    ) -> tuple[CallTemplate, list[str], list[RpcCall]] | None:
        """For a payload whose first call a template reads: the template, the call's values and
        the calls after it (parsed by `_rpc.parse`); None for a miss. Raises what
        `_rpc.parse` raises for the calls after the first."""
        if not self.templates:
            return None
        pos = 0
        if skip_headers:  # (ALL_HEADERS' length, checked as `Reader.skip_all_headers` does)
            pos = int.from_bytes(payload[:4], "little")
            if not 4 <= pos <= len(payload):
                return None
        for template in self.templates:
            found = template.read(payload, pos)
            if found is not None:
                values, end = found
                if end == len(payload):
                    return template, values, []
                # (the calls after the batch flag)
                return template, values, _rpc.parse(payload, skip_headers=False, start=end + 1)
        return None

    def add(
        self,
        payload: bytes,
        call: RpcCall,
        bound: list[Param],
        shape: PreambleShape,
        *,
        skip_headers: bool,
    ) -> None:
        """Keep the template of ``call``, the first call of ``payload`` (see `make_template`)."""
        pos = _calls_start(payload) if skip_headers else 0
        template = None if pos < 0 else make_template(payload, pos, call, bound, shape)
        if template is None or template in self.templates:
            return
        if len(self.templates) >= TEMPLATES_KEPT:
            del self.templates[0]
        self.templates.append(template)


def _calls_start(payload: bytes) -> int:
    """Where the first call starts, after ALL_HEADERS (checked as `Reader.skip_all_headers`
    checks it); -1 when that check fails."""
    total = int.from_bytes(payload[:4], "little")
    return total if 4 <= total <= len(payload) else -1
