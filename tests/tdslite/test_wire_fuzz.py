"""Parsers of client input take any bytes: they parse, or raise ProtocolError /
UnsupportedParameter, nothing else (no IndexError, ValueError, UnicodeDecodeError ...)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tdslite.server import _login7, _prelogin, _rpc
from tdslite.server._buffer import Reader
from tdslite.server._packets import ProtocolError
from tdslite.server._params import read_param
from tdslite.server._wiretype import UnsupportedParameter, WireType
from tests.tdslite._tds_raw import all_headers, login7, prelogin

ALLOWED = (ProtocolError, UnsupportedParameter)

TYPE_CODES = [
    0x1F,
    0x30,
    0x32,
    0x34,
    0x38,
    0x3A,
    0x3B,
    0x3C,
    0x3D,
    0x3E,
    0x7A,
    0x7F,
    0x24,
    0x26,
    0x37,
    0x3F,
    0x68,
    0x6A,
    0x6C,
    0x6D,
    0x6E,
    0x6F,
    0x28,
    0x29,
    0x2A,
    0x2B,
    0x2F,
    0x27,
    0x2D,
    0x25,
    0xA5,
    0xA7,
    0xAD,
    0xAF,
    0xE7,
    0xEF,
    0xF1,
    0x23,
    0x22,
    0x63,
]


def _parses_or_protocol_error(fn, data: bytes) -> None:  # type: ignore[no-untyped-def]
    try:
        fn(data)
    except ALLOWED:
        pass


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_prelogin_any_bytes(data: bytes) -> None:
    _parses_or_protocol_error(_prelogin.parse, data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.integers(0, 200), st.binary(max_size=8))
def test_login7_mutations(tail: bytes, cut: int, patch: bytes) -> None:
    base = bytearray(login7("alice", "pw") + tail)
    base[cut : cut + len(patch)] = patch
    _parses_or_protocol_error(_login7.parse, bytes(base))


@settings(max_examples=500, deadline=None)
@given(st.sampled_from(TYPE_CODES), st.binary(max_size=60), st.booleans())
def test_rpc_parameter_of_any_type_and_bytes(code: int, body: bytes, by_name: bool) -> None:
    head = (
        struct.pack("<HH", 0xFFFF, 10)
        if not by_name
        else struct.pack("<H", 2) + "sp".encode("utf-16-le")
    )
    param = b"\x02" + "@p".encode("utf-16-le") + b"\x00" + bytes([code]) + body
    _parses_or_protocol_error(_rpc.parse, all_headers() + head + b"\x00\x00" + param)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_rpc_any_bytes(data: bytes) -> None:
    _parses_or_protocol_error(_rpc.parse, all_headers() + data)
    _parses_or_protocol_error(_rpc.parse, data)


def test_prelogin_round_trip_of_our_client() -> None:
    client = _prelogin.parse(prelogin())
    assert client.encryption == _prelogin.Encrypt.NOT_SUP


def _string_params() -> tuple[bytes, list[bytes], list[tuple[str, str, int | None, object]]]:
    """An sp_executesql RPC of every string wire form the readers take straight off the buffer:
    nvarchar(max) in two PLP chunks, a NULL PLP, nvarchar(n), a NULL nvarchar(n), varbinary(n)
    (no collation), varchar(n) and a PLP of unknown length; the bytes of each parameter's type
    and value; and what each must read as."""
    collation = b"\x09\x04\xd0\x00\x34"

    def param(name: str, body: bytes) -> bytes:
        return bytes([len(name)]) + name.encode("utf-16-le") + b"\x00" + body

    stmt = "SELECT @a, @b".encode("utf-16-le")
    plp = struct.pack("<Q", len(stmt)) + b"".join(
        struct.pack("<I", len(part)) + part for part in (stmt[:6], stmt[6:])
    )
    values = [
        b"\xe7\xff\xff" + collation + plp + b"\x00\x00\x00\x00",
        b"\xe7\xff\xff" + collation + b"\xff" * 8,
        b"\xe7\xa0\x0f" + collation + struct.pack("<H", 6) + "abc".encode("utf-16-le"),
        b"\xe7\xa0\x0f" + collation + b"\xff\xff",
        b"\xa5\x08\x00" + struct.pack("<H", 3) + b"\x01\x02\x03",
        b"\xa7\x08\x00" + collation + struct.pack("<H", 2) + b"hi",
        # a PLP of unknown total length: only the chunk lengths tell where it ends
        b"\xe7\xff\xff" + collation + b"\xfe" + b"\xff" * 7 + plp[8:] + b"\x00\x00\x00\x00",
    ]
    names = ["@stmt", "@none", "@a", "@n", "@b", "@c", "@u"]
    body = b"".join(param(name, value) for name, value in zip(names, values, strict=True))
    want: list[tuple[str, str, int | None, object]] = [
        ("@stmt", "nvarchar", -1, "SELECT @a, @b"),
        ("@none", "nvarchar", -1, None),
        ("@a", "nvarchar", 2000, "abc"),
        ("@n", "nvarchar", 2000, None),
        ("@b", "varbinary", 8, b"\x01\x02\x03"),
        ("@c", "varchar", 8, "hi"),
        ("@u", "nvarchar", -1, "SELECT @a, @b"),
    ]
    return all_headers() + struct.pack("<HH", 0xFFFF, 10) + b"\x00\x00" + body, values, want


def test_every_cut_of_string_parameters_reads_whole_values_or_fails() -> None:
    """A parameter cut anywhere raises ProtocolError, and so does a request (or, cut between two
    parameters, it parses as those before the cut): a string value is never read short."""
    payload, values, want = _string_params()
    for value, (_, name, length, whole) in zip(values, want, strict=True):
        assert read_param(Reader(value)) == (WireType(name, length=length), whole)
        for cut in range(len(value)):
            with pytest.raises(ProtocolError):
                read_param(Reader(value[:cut]))
    [call] = _rpc.parse(payload)
    assert [(p.name, p.type.name, p.type.length, p.value) for p in call.params] == want
    header = len(all_headers()) + 6
    for cut in range(header, len(payload)):
        try:
            [call] = _rpc.parse(payload[:cut])
        except ProtocolError:
            continue
        got = [(p.name, p.type.name, p.type.length, p.value) for p in call.params]
        assert got == want[: len(got)], cut
