"""The BulkLoad message (packet type 0x07) that follows an INSERT BULK: COLMETADATA, rows, DONE.

python-tds ``Cursor.copy_to`` and tedious ``execBulkLoad`` send, after the INSERT BULK batch, a
COLMETADATA token (per column: user type, flags, TYPE_INFO, name), one ROW (or NBCROW) token per
row with values encoded as in RPC parameters, and a DONE token. Each value is read with the RPC
parameter reader (`_params.read_param`) by putting its column's TYPE_INFO bytes in front of it.
"""

from __future__ import annotations

from collections.abc import Iterator

from ._buffer import Reader
from ._colmetadata import BulkColumn, Prefixed, read_type_info
from ._packets import ProtocolError
from ._params import read_param

TOKEN_COLMETADATA = 0x81
TOKEN_ROW = 0xD1
TOKEN_NBCROW = 0xD2
TOKEN_DONE = 0xFD


def read_colmetadata(r: Reader) -> list[BulkColumn]:
    if r.u8() != TOKEN_COLMETADATA:
        raise ProtocolError("a bulk load must start with COLMETADATA")
    count = r.u16()
    if count in (0, 0xFFFF):
        raise ProtocolError("a bulk load without columns")
    columns = []
    for _ in range(count):
        r.u32()  # user type
        r.u16()  # flags
        info = read_type_info(r)
        columns.append(BulkColumn(r.b_varchar(), info))
    return columns


def read_rows(r: Reader, columns: list[BulkColumn]) -> Iterator[list[object]]:
    """The rows of the message, read as they are consumed, up to its DONE token."""
    bitmap_len = (len(columns) + 7) // 8
    while True:
        token = r.u8()
        if token == TOKEN_DONE:
            r.take(12)
            if r.remaining():
                raise ProtocolError("bytes after the DONE of a bulk load")
            return
        if token not in (TOKEN_ROW, TOKEN_NBCROW):
            raise ProtocolError(f"token 0x{token:02X} in a bulk load")
        nulls = r.take(bitmap_len) if token == TOKEN_NBCROW else bytes(bitmap_len)
        row: list[object] = []
        for i, column in enumerate(columns):
            if nulls[i >> 3] & (1 << (i & 7)):
                row.append(None)
                continue
            _, value = read_param(Prefixed(column.type_info, r))
            row.append(value)
        yield row
