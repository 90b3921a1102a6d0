"""Token forms of TDS 7.1, rewritten from the 7.2+ forms the rest of the server writes.

Before TDS 7.2 a DONE / DONEPROC / DONEINPROC counts rows in 4 bytes (not 8), an INFO / ERROR
gives its line number in 2 bytes (not 4) and the UserType of a RETURNVALUE is a USHORT (not a
ULONG).  `downgrade` walks the tokens a `Reply` is given and rewrites those; any other token (and
everything after it) passes unchanged, so a result row is never parsed (rows are written one token
per call).
"""

from __future__ import annotations

import struct

_DONE_TOKENS = frozenset({0xFD, 0xFE, 0xFF})
_MESSAGE_TOKENS = frozenset({0xAA, 0xAB})  # ERROR, INFO
_LENGTH_TOKENS = frozenset({0xE3, 0xAD})  # ENVCHANGE, LOGINACK: passed through whole
_RETURNVALUE = 0xAC  # only the int form tdslite writes (sp_prepare handles)
_U16 = struct.Struct("<H")


def downgrade(data: bytes) -> bytes:
    """``data`` (whole tokens in their TDS 7.2+ form) in the TDS 7.1 form."""
    out = bytearray()
    pos = 0
    while pos < len(data):
        token = data[pos]
        if token in _DONE_TOKENS and pos + 13 <= len(data):
            out += data[pos : pos + 9]  # token, status, curcmd, low 4 bytes of the count
            pos += 13
        elif token in _MESSAGE_TOKENS and pos + 3 <= len(data):
            (length,) = _U16.unpack_from(data, pos + 1)
            body = data[pos + 3 : pos + 3 + length]
            line = int.from_bytes(body[-4:], "little")
            out += bytes([token]) + _U16.pack(length - 2) + body[:-4]
            out += min(line, 0xFFFF).to_bytes(2, "little")
            pos += 3 + length
        elif token == _RETURNVALUE and pos + 4 <= len(data):
            # ordinal, name, status, user type (ULONG -> USHORT), flags, INTN(4) and its value
            head = 3 + 1 + data[pos + 3] * 2 + 1
            out += data[pos : pos + head] + data[pos + head : pos + head + 2]
            rest = pos + head + 4
            out += data[rest : rest + 2 + 3 + 4]
            pos = rest + 9
        elif token in _LENGTH_TOKENS and pos + 3 <= len(data):
            (length,) = _U16.unpack_from(data, pos + 1)
            out += data[pos : pos + 3 + length]
            pos += 3 + length
        else:
            out += data[pos:]
            break
    return bytes(out)
