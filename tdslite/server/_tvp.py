"""Table-valued parameters on the wire (TDS type 0xF3, MS-TDS 2.2.5.5.5).

After the type byte: the type's name (database, schema, name as B_VARCHARs), TVP_COLMETADATA
(a column count, or 0xFFFF for a NULL table; per column: user type, flags, TYPE_INFO, an empty
name), optional TVP_ORDER_UNIQUE (0x10) and TVP_COLUMN_ORDERING (0x11) tokens, an end token (0x00),
then rows (0x01 and one value per column, as in a ROW token) up to another end token. The value
becomes an engine `TableValue`; the engine finds the column names in the type (CREATE TYPE).
"""

from __future__ import annotations

from tdslite.engine._tvp import TableValue

from ._buffer import Reader
from ._colmetadata import BulkColumn, Prefixed, column_types, read_type_info
from ._packets import ProtocolError
from ._wiretype import ReadParam, WireType

TVP_NULL = 0xFFFF
TVP_END = 0x00
TVP_ROW = 0x01
TVP_ORDER_UNIQUE = 0x10
TVP_COLUMN_ORDERING = 0x11
#: a column whose values the client leaves to the server (not sent in rows)
_FLAG_DEFAULT = 0x0200


def read_tvp(r: Reader, read_param: ReadParam) -> tuple[WireType, object]:
    """A table-valued parameter after its type byte: (WireType("table"), TableValue).

    Its values are read with ``read_param``, the RPC parameter reader that called this one.
    """
    r.b_varchar()  # database: always the current one
    schema = r.b_varchar()
    name = r.b_varchar()
    if not name:
        raise ProtocolError("a table-valued parameter without a type name")
    type_name = f"{schema}.{name}" if schema else name
    count = r.u16()
    columns: list[BulkColumn] = []
    if count != TVP_NULL:
        for _ in range(count):
            r.u32()  # user type
            flags = r.u16()
            if flags & _FLAG_DEFAULT:
                raise ProtocolError("default columns in a table-valued parameter")
            info = read_type_info(r)
            r.b_varchar()  # column name: empty
            columns.append(BulkColumn("", info))
    while True:
        token = r.u8()
        if token == TVP_END:
            break
        if token == TVP_ORDER_UNIQUE:
            r.take(3 * r.u16())
        elif token == TVP_COLUMN_ORDERING:
            r.take(2 * r.u16())
        else:
            raise ProtocolError(f"token 0x{token:02X} in a table-valued parameter's metadata")
    types = column_types(r, columns, read_param)
    rows = []
    while True:
        token = r.u8()
        if token == TVP_END:
            break
        if token != TVP_ROW or not columns:
            raise ProtocolError(f"token 0x{token:02X} in a table-valued parameter's rows")
        rows.append(tuple(read_param(Prefixed(c.type_info, r))[1] for c in columns))
    return WireType("table"), TableValue(type_name, tuple(types), tuple(rows))
