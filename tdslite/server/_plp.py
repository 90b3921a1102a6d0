"""PLP (partially length-prefixed) values: the wire form of (max) types and xml parameters."""

from __future__ import annotations

from ._buffer import Reader
from ._datatypes import PLP_NULL, PLP_UNKNOWN
from ._packets import ProtocolError


def read_plp(r: Reader) -> bytes | None:
    """A PLP value: 8-byte total (or NULL / unknown marker), then chunks ended by a 0 length."""
    total = r.u64()
    if total == PLP_NULL:
        return None
    chunks = []
    while True:
        n = r.u32()
        if n == 0:
            break
        chunks.append(r.take(n))
    data = b"".join(chunks)
    if total != PLP_UNKNOWN and total != len(data):
        raise ProtocolError(f"PLP value announced {total} bytes but carried {len(data)}")
    return data
