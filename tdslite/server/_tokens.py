"""Server -> client tokens other than result rows: LOGINACK, ENVCHANGE, INFO/ERROR, DONE*, RETURN*.

Each function returns the bytes of one token (MS-TDS 2.2.7); `_columns` owns COLMETADATA/ROW.
"""

from __future__ import annotations

import enum
import struct

from ._datatypes import COLLATION, encode_utf16

_U16 = struct.Struct("<H")
_DONE = struct.Struct("<BHHQ")
_MSG_HEAD = struct.Struct("<iBB")

#: What we call ourselves in LOGINACK and as ServerName in ERROR/INFO.
SERVER_NAME = "tdslite"
#: The SQL Server version we claim: 16.0.1000 (SQL Server 2022 RTM).
PROG_VERSION = bytes([16, 0, 0x03, 0xE8])


class Done:
    """DONE/DONEPROC/DONEINPROC status bits (plain ints: combined on every statement's DONE,
    where IntFlag arithmetic costs more than the token)."""

    FINAL = 0x00
    MORE = 0x01  #: more results follow in this response
    ERROR = 0x02  #: the statement failed
    INXACT = 0x04  #: a transaction is in progress
    COUNT = 0x10  #: DoneRowCount is valid
    ATTN = 0x20  #: acknowledges an ATTENTION
    RPCINBATCH = 0x80  #: DONEPROC of an RPC of a batch of RPCs other than the last one
    SRVERROR = 0x100  #: the batch was aborted


class EnvChange(enum.IntEnum):
    DATABASE = 1
    LANGUAGE = 2
    PACKET_SIZE = 4
    COLLATION = 7
    BEGIN_TRAN = 8
    COMMIT_TRAN = 9
    ROLLBACK_TRAN = 10
    RESET_ACK = 18


TOKEN_DONE = 0xFD
TOKEN_DONEPROC = 0xFE
TOKEN_DONEINPROC = 0xFF

CURCMD_SELECT = 0xC1


def _b_varchar(text: str) -> bytes:
    raw = encode_utf16(text)
    return bytes([len(raw) // 2]) + raw


def _wrap(token: int, body: bytes) -> bytes:
    return bytes([token]) + _U16.pack(len(body)) + body


def done(status: int, count: int = 0, *, token: int = TOKEN_DONE, curcmd: int = 0) -> bytes:
    return _DONE.pack(token, status, curcmd, count)


def sspi(data: bytes) -> bytes:
    """SSPI token: the server's next integrated-authentication token (MS-TDS 2.2.7.22)."""
    return _wrap(0xED, data)


def loginack(tds_version: int) -> bytes:
    body = bytes([1]) + tds_version.to_bytes(4, "big") + _b_varchar("Microsoft SQL Server")
    return _wrap(0xAD, body + PROG_VERSION)


def envchange_text(kind: EnvChange, new: str, old: str) -> bytes:
    return _wrap(0xE3, bytes([kind]) + _b_varchar(new) + _b_varchar(old))


def envchange_bytes(kind: EnvChange, new: bytes, old: bytes) -> bytes:
    return _wrap(0xE3, bytes([kind, len(new)]) + new + bytes([len(old)]) + old)


#: ENVCHANGE(RESET_ACK): the answer to every RESETCONNECTION
RESET_ACK = envchange_bytes(EnvChange.RESET_ACK, b"", b"")


def database_changed(new: str, old: str) -> bytes:
    """ENVCHANGE(database) and the INFO 5701 that SQL Server sends with it."""
    info = message(5701, f"Changed database context to '{new}'.", severity=0, state=2, info=True)
    return envchange_text(EnvChange.DATABASE, new, old) + info


def envchange_collation() -> bytes:
    return envchange_bytes(EnvChange.COLLATION, COLLATION, b"")


def message(
    number: int,
    text: str,
    *,
    state: int = 1,
    severity: int = 16,
    line: int = 1,
    info: bool = False,
    proc: str = "",
) -> bytes:
    """An ERROR (0xAA) or, with ``info=True``, an INFO (0xAB) token."""
    raw = encode_utf16(text[:4000])
    body = (
        _MSG_HEAD.pack(number, state & 0xFF, severity & 0xFF)
        + _U16.pack(len(raw) // 2)
        + raw
        + _b_varchar(SERVER_NAME)
        + _b_varchar(proc)
        + struct.pack("<i", line)
    )
    return _wrap(0xAB if info else 0xAA, body)


def returnstatus(value: int) -> bytes:
    return _RETURNSTATUS.pack(0x79, value)


_RETURNSTATUS = struct.Struct("<Bi")
#: RETURNSTATUS 0: most procedure calls' (every sp_executesql's)
RETURN_0 = returnstatus(0)


def returnvalue_int(ordinal: int, name: str, value: int) -> bytes:
    """RETURNVALUE of an int OUTPUT parameter (the sp_prepare / sp_prepexec handle)."""
    return (
        bytes([0xAC])
        + _U16.pack(ordinal)
        + _b_varchar(name)
        + bytes([0x01])  # status: output parameter
        + struct.pack("<IH", 0, 0x0001)  # user type, flags (nullable)
        + bytes([0x26, 4, 4])  # INTN(4), value length 4
        + struct.pack("<i", value)
    )
