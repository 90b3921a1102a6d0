"""What the parameter readers return: the wire type of a value, and the refusal of a type.

A leaf shared by the RPC parameter reader (`_params`) and the readers it calls for table-valued
parameters (`_tvp`, through `_colmetadata`), so that none of them imports another's caller.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from ._buffer import Reader


class UnsupportedParameter(Exception):
    """A parameter type tdslite does not decode (reported to the client as a TDS error)."""


class BadDataLength(UnsupportedParameter):
    """A value longer than the maximum length its TYPE_INFO declares: SQL Server refuses the RPC
    (error 8016, naming the parameter; `tdslite.server._rpc.parse` adds which)."""

    def __init__(self, code: int) -> None:
        super().__init__(f"Data type 0x{code:02X} has an invalid data length or metadata length.")
        self.code = code


class WireType(NamedTuple):
    """A parameter's type as sent (a named tuple: hashed and compared in C, it keys the type
    caches of every bound parameter)."""

    name: str
    length: int | None = None
    precision: int | None = None
    scale: int | None = None


#: Reads one TYPE_INFO and its value (`_params.read_param`), passed to the readers it calls.
ReadParam = Callable[[Reader], tuple[WireType, object]]
