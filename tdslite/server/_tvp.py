"""Table-valued parameters (TDS type 0xF3): refused for now."""

from __future__ import annotations

from ._buffer import Reader
from ._params import UnsupportedParameter, WireType


def read_tvp(r: Reader) -> tuple[WireType, object]:
    raise UnsupportedParameter(
        "table-valued parameters (TDS type 0xF3) are not supported by tdslite; "
        "send the rows as separate statements or a bulk load"
    )
