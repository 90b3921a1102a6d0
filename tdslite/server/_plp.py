"""PLP (partially length-prefixed) values: the wire form of (max) types and xml parameters."""

from __future__ import annotations

import struct

from ._buffer import Reader, truncated
from ._datatypes import PLP_NULL, PLP_UNKNOWN
from ._packets import ProtocolError

_U32_AT = struct.Struct("<I").unpack_from
_U64_AT = struct.Struct("<Q").unpack_from


def read_plp(r: Reader) -> bytes | None:
    """A PLP value: 8-byte total (or NULL / unknown marker), then chunks ended by a 0 length."""
    # every sp_executesql statement arrives this way: read off the buffer directly, bounds checked
    # (a bulk load's reader is no plain Reader: see _colmetadata)
    if type(r) is not Reader:
        return _read_plp_read(r)
    data, pos = r.data, r.pos
    end = len(data)
    if pos + 8 > end:
        raise truncated(8, pos)
    (total,) = _U64_AT(data, pos)
    pos += 8
    if total == PLP_NULL:
        r.pos = pos
        return None
    chunks = []
    while True:
        if pos + 4 > end:
            raise truncated(4, pos)
        (n,) = _U32_AT(data, pos)
        pos += 4
        if n == 0:
            break
        chunks.append(data[pos : pos + n])
        pos += n  # past the end if cut short: then the next length read fails
    r.pos = pos
    value = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    if total != PLP_UNKNOWN and total != len(value):
        raise ProtocolError(f"PLP value announced {total} bytes but carried {len(value)}")
    return value


def _read_plp_read(r: Reader) -> bytes | None:
    """`read_plp` through the Reader's own methods."""
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
