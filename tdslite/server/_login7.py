"""LOGIN7: the login record (MS-TDS 2.2.6.4), with password de-obfuscation and FeatureExt.

The password is "obfuscated", not encrypted: each byte had its nibbles swapped and was XORed with
0xA5. Only TLS (full or login-only) protects it on the wire.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ._buffer import Reader
from ._packets import ProtocolError

_FIXED = struct.Struct("<IIIIIIBBBBiI")
#: FeatureExt ids (MS-TDS 2.2.6.4): only FEDAUTH matters to us; the rest are read and ignored.
FEATURE_FEDAUTH = 0x02
FEATURE_TERMINATOR = 0xFF
#: FEDAUTH library "security token" (an access token obtained by the client itself).
FEDAUTH_LIBRARY_SECURITYTOKEN = 0x01
_OPTION3_EXTENSION = 0x10


@dataclass(frozen=True)
class Login7:
    tds_version: int
    packet_size: int
    client_pid: int
    hostname: str
    username: str
    password: str = ""
    appname: str = ""
    servername: str = ""
    language: str = ""
    database: str = ""
    access_token: str | None = None
    sspi: bool = False
    #: the client's first SSPI (integrated authentication) token
    sspi_token: bytes = b""

    def __repr__(self) -> str:  # never show the password or the token
        return (
            f"Login7(user={self.username!r}, app={self.appname!r}, db={self.database!r}, "
            f"tds=0x{self.tds_version:08x}, fedauth={self.access_token is not None})"
        )


def deobfuscate(raw: bytes) -> str:
    plain = bytes((((b ^ 0xA5) << 4) & 0xF0) | ((b ^ 0xA5) >> 4) for b in raw)
    return plain.decode("utf-16-le")


def parse(payload: bytes) -> Login7:
    """Decode a LOGIN7 record; raises ProtocolError on anything malformed."""
    try:
        return _parse(payload)
    except (ValueError, OverflowError) as exc:  # e.g. UnicodeDecodeError in a name
        raise ProtocolError(f"invalid LOGIN7: {exc}") from None


def _parse(payload: bytes) -> Login7:
    if len(payload) < 94:
        raise ProtocolError(f"LOGIN7 of {len(payload)} bytes is shorter than its fixed part")
    (
        _length,
        tds_version,
        packet_size,
        _prog,
        pid,
        _conn,
        _o1,
        option2,
        _tf,
        option3,
        _tz,
        _lcid,
    ) = _FIXED.unpack_from(payload, 0)
    r = Reader(payload, 36)

    def field() -> tuple[int, int]:
        return r.u16(), r.u16()

    def text(spec: tuple[int, int]) -> str:
        off, count = spec
        return Reader(payload, off).take(count * 2).decode("utf-16-le")

    host, user, password, app, server, ext, _lib, lang, db = (field() for _ in range(9))
    r.take(6)  # ClientID (MAC address)
    sspi_off, sspi_len = field()
    if sspi_len == 0xFFFF:  # cbSSPILong, after ibAtchDBFile/cchAtchDBFile/ibChangePassword/cch...
        r.take(8)
        sspi_len = r.u32()
    access_token: str | None = None
    if option3 & _OPTION3_EXTENSION and ext[1] >= 4:
        feature_off = Reader(payload, ext[0]).u32()
        access_token = _parse_features(payload, feature_off)
    pw_off, pw_count = password
    return Login7(
        tds_version=tds_version,
        packet_size=packet_size,
        client_pid=pid,
        hostname=text(host),
        username=text(user),
        password=deobfuscate(Reader(payload, pw_off).take(pw_count * 2)),
        appname=text(app),
        servername=text(server),
        language=text(lang),
        database=text(db),
        access_token=access_token,
        sspi=bool(option2 & 0x80) or sspi_len > 0,
        sspi_token=Reader(payload, sspi_off).take(sspi_len) if sspi_len else b"",
    )


def _parse_features(payload: bytes, offset: int) -> str | None:
    """Walk FeatureExt; return the FEDAUTH security token if there is one."""
    r = Reader(payload, offset)
    token: str | None = None
    while True:
        feature = r.u8()
        if feature == FEATURE_TERMINATOR:
            return token
        data = r.take(r.u32())
        if feature == FEATURE_FEDAUTH:
            f = Reader(data)
            library = f.u8() >> 1
            if library != FEDAUTH_LIBRARY_SECURITYTOKEN:
                raise ProtocolError(
                    f"FEDAUTH library {library} is not supported; send an access token instead"
                )
            token = f.take(f.u32()).decode("utf-16-le")
