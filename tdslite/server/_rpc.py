"""RPC requests: proc name or id, option flags and parameters (MS-TDS 2.2.6.6).

One RPC message may hold several calls separated by a batch flag byte (0xFF, or 0x80 before 7.2).
System procedures arrive by ProcID (python-tds, FreeTDS, tedious) or by name; `canonical_name`
maps both to one spelling.
"""

from __future__ import annotations

import functools
import re
from typing import NamedTuple

from ._buffer import Reader
from ._datatypes import T, decode_utf16, utf16_decoder
from ._packets import ProtocolError
from ._params import read_nvarchar, read_param
from ._wiretype import BadDataLength, UnsupportedParameter, WireType

#: ProcIDs of the special system procedures (MS-TDS 2.2.6.6).
PROC_IDS = {
    1: "sp_cursor",
    2: "sp_cursoropen",
    3: "sp_cursorprepare",
    4: "sp_cursorexecute",
    5: "sp_cursorprepexec",
    6: "sp_cursorunprepare",
    7: "sp_cursorfetch",
    8: "sp_cursoroption",
    9: "sp_cursorclose",
    10: "sp_executesql",
    11: "sp_prepare",
    12: "sp_execute",
    13: "sp_prepexec",
    14: "sp_prepexecrpc",
    15: "sp_unprepare",
}
#: the byte between two calls of one request (0x80 before TDS 7.2)
BATCH_FLAGS = (0xFF, 0x80)
_NVARCHAR = int(T.NVARCHAR)


class RpcParam(NamedTuple):
    """One parameter of a call (a named tuple: one is made for every parameter of every RPC,
    and a tuple is quicker to make than a frozen dataclass)."""

    name: str  #: with its "@", or "" when the client sent none (positional)
    type: WireType
    value: object
    output: bool

    def __repr__(self) -> str:  # never show values (they may be secrets)
        return f"RpcParam({self.name!r}, {self.type.name}, output={self.output})"


#: ``RpcParam(*fields)`` (or ``RpcCall``'s) without the Python-level ``__new__`` a NamedTuple has
_new_param = tuple.__new__


class RpcCall(NamedTuple):
    """One procedure call of an RPC request (a named tuple, as `RpcParam`)."""

    name: str  #: canonical lowercase name, e.g. "sp_executesql"
    params: tuple[RpcParam, ...]
    #: the name's parts as the client wrote them, brackets removed (``[sales].[p]`` ->
    #: ``("sales", "p")``); empty for a ProcID
    parts: tuple[str, ...] = ()


def canonical_name(name: str) -> str:
    """``[sys].[sp_executesql]`` / ``master..sp_executesql`` -> ``sp_executesql``."""
    last = re.split(r"\.", name.strip())[-1]
    return last.strip('[] "').lower()


def parse(payload: bytes, *, skip_headers: bool = True, start: int = 0) -> list[RpcCall]:
    """The calls of an RPC request's payload (after ALL_HEADERS, when ``skip_headers``); with
    ``start`` (and not ``skip_headers``), the calls from that offset on, none when it is the
    end (the calls after one that `_callcache` read)."""
    r = Reader(payload, start)
    if skip_headers:
        r.skip_all_headers()
    calls: list[RpcCall] = []
    data = r.data
    size = len(data)
    pos = r.pos
    while pos < size:
        parts: tuple[str, ...] = ()
        if pos + 6 <= size and data[pos] == 0xFF and data[pos + 1] == 0xFF:
            # a ProcID and the option flags, read in one step (every sp_executesql this way)
            proc_id = data[pos + 2] | data[pos + 3] << 8
            if proc_id not in PROC_IDS:
                raise ProtocolError(f"unknown RPC ProcID {proc_id}")
            name = PROC_IDS[proc_id]
            pos += 6
        else:
            r.pos = pos
            name_len = r.u16()
            if name_len == 0xFFFF:
                proc_id = r.u16()
                if proc_id not in PROC_IDS:
                    raise ProtocolError(f"unknown RPC ProcID {proc_id}")
                name = PROC_IDS[proc_id]
            else:
                try:
                    written = decode_utf16(r.take(name_len * 2))
                except UnicodeDecodeError:
                    raise ProtocolError("RPC procedure name is not UTF-16") from None
                name = canonical_name(written)
                parts = tuple(p.strip().strip('[] "') for p in written.strip().split("."))
            r.u16()  # option flags (WITH RECOMPILE, NO METADATA): nothing to do for us
            pos = r.pos
        params: list[RpcParam] = []
        while pos < size and data[pos] not in BATCH_FLAGS:
            # the name (B_VARCHAR) and the status byte, read in one step: every parameter of
            # every RPC comes this way
            end = pos + 1 + 2 * data[pos]
            if end >= size:
                raise ProtocolError(f"truncated TDS payload: RPC parameter at offset {pos}")
            if end == pos + 1:
                pname = ""  # positional (sp_executesql's statement and declaration)
            else:
                try:
                    pname = utf16_decoder(data[pos + 1 : end], "strict", True)[0]
                except UnicodeDecodeError:
                    raise ProtocolError("RPC parameter name is not UTF-16") from None
            output = bool(data[end] & 0x01)
            pos = end + 1
            # an nvarchar (statement texts, declarations, most values) read without the
            # dispatch of `read_param`; any other type or form (or a bad value, which
            # `read_param` then reports) by `read_param`
            if pos < size and data[pos] == _NVARCHAR:
                try:
                    found = read_nvarchar(r, data, pos)
                except ValueError:
                    found = None  # `read_param` reports it
                if found is not None:
                    params.append(_new_param(RpcParam, (pname, *found, output)))
                    pos = r.pos
                    continue
            r.pos = pos
            try:
                wtype, value = read_param(r)
            except BadDataLength as exc:
                raise UnsupportedParameter(
                    "The incoming tabular data stream (TDS) remote procedure call (RPC) protocol "
                    f'stream is incorrect. Parameter {len(params) + 1} ("{pname}"): {exc}'
                ) from None
            params.append(_new_param(RpcParam, (pname, wtype, value, output)))
            pos = r.pos
        calls.append(_new_param(RpcCall, (name, tuple(params), parts)))
        if pos < size:
            pos += 1  # batch separator
    if not calls and not start:
        raise ProtocolError("empty RPC request")
    return calls


@functools.lru_cache(maxsize=256)
def declared_params(declaration: str) -> tuple[tuple[str, str], ...]:
    """(name, type text) of each parameter of an sp_executesql/sp_prepare declaration, in order.

    ``"@P1 int, @P2 decimal(18, 4) OUTPUT"`` -> ``(("@P1", "int"), ("@P2", "decimal(18, 4)"))``
    (commas inside parentheses are part of a type). Cached by the exact text: a client sends the
    same few declarations again and again.
    """
    params: list[tuple[str, str]] = []
    depth = 0
    item: list[str] = []
    for ch in declaration + ",":
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            words = "".join(item).split()
            if words:
                if len(words) > 1 and words[-1].upper() in ("OUTPUT", "OUT"):
                    words.pop()
                params.append((words[0], " ".join(words[1:])))
            item = []
        else:
            item.append(ch)
    return tuple(params)
