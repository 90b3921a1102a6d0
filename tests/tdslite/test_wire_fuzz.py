"""Parsers of client input take any bytes: they parse, or raise ProtocolError /
UnsupportedParameter, nothing else (no IndexError, ValueError, UnicodeDecodeError ...)."""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from tdslite.server import _login7, _prelogin, _rpc
from tdslite.server._packets import ProtocolError
from tdslite.server._wiretype import UnsupportedParameter
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
