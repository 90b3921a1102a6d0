"""The frame layer: header codec, incremental reader, round trips and the fuzz invariant."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import (
    HEADER_SIZE,
    CloseCode,
    Frame,
    FrameReader,
    FrameType,
    LocalProtocolError,
    RemoteProtocolError,
    encode_frame,
    parse_frame,
)

MAX = 1024 * 1024


def header(version: int = 1, ftype: int = 0x31, flags: int = 0, reserved: int = 0,
           stream_id: int = 0, length: int = 8) -> bytes:  # fmt: skip
    return struct.pack(">BBBBII", version, ftype, flags, reserved, stream_id, length)


def test_encode_layout() -> None:
    data = encode_frame(Frame(FrameType.QUERY, 0x01020304, b"{}"))
    assert data == bytes([1, 0x10, 0, 0, 1, 2, 3, 4, 0, 0, 0, 2]) + b"{}"
    assert HEADER_SIZE == 12


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (header(version=2), "unsupported frame version 2"),
        (header(ftype=0x03), "unknown frame type 0x03"),
        (header(flags=1), "flags must be 0"),
        (header(reserved=0x80), "reserved header byte"),
    ],
)
def test_bad_headers(raw: bytes, message: str) -> None:
    with pytest.raises(RemoteProtocolError, match=message) as info:
        parse_frame(raw + b"\0" * 8, max_payload=MAX)
    assert info.value.close_code is CloseCode.PROTOCOL_ERROR


def test_oversized_length_refused_from_the_header_alone() -> None:
    reader = FrameReader(max_payload=1000)
    reader.feed(header(length=1001)[:11])
    assert reader.next_frame() is None
    reader.feed(header(length=1001)[11:])  # no payload byte fed: refused anyway
    with pytest.raises(RemoteProtocolError) as info:
        reader.next_frame()
    assert info.value.close_code is CloseCode.MESSAGE_TOO_BIG


def test_reader_byte_by_byte_and_buffered() -> None:
    data = encode_frame(Frame(FrameType.PING, 0, b"12345678")) * 2
    reader = FrameReader(max_payload=MAX)
    frames = []
    for i, byte in enumerate(data):
        reader.feed(bytes([byte]))
        frame = reader.next_frame()
        if frame is not None:
            frames.append(frame)
        elif i >= HEADER_SIZE:
            assert reader.buffered > 0
    assert frames == [Frame(FrameType.PING, 0, b"12345678")] * 2
    assert reader.buffered == 0


def test_parse_frame_truncated_and_trailing() -> None:
    data = encode_frame(Frame(FrameType.PONG, 0, b"abcdefgh"))
    with pytest.raises(RemoteProtocolError, match="truncated"):
        parse_frame(data[:-1], max_payload=MAX)
    with pytest.raises(RemoteProtocolError, match="1 bytes after"):
        parse_frame(data + b"\1", max_payload=MAX)


def test_encode_refuses_what_does_not_fit() -> None:
    with pytest.raises(LocalProtocolError, match="u32"):
        encode_frame(Frame(FrameType.QUERY, 2**32, b""))
    with pytest.raises(LocalProtocolError, match="u32"):
        encode_frame(Frame(FrameType.QUERY, -1, b""))


def test_encode_refuses_payload_over_u32() -> None:
    class Huge(bytes):
        def __len__(self) -> int:
            return 2**32

    with pytest.raises(LocalProtocolError, match="2\\^32"):
        encode_frame(Frame(FrameType.ROWS, 1, Huge()))


frames = st.builds(
    Frame,
    st.sampled_from(list(FrameType)),
    st.integers(0, 2**32 - 1),
    st.binary(max_size=300),
)


@given(frames)
def test_round_trip(frame: Frame) -> None:
    assert parse_frame(encode_frame(frame), max_payload=MAX) == frame


@given(st.lists(frames, max_size=5), st.data())
def test_round_trip_any_split(sent: list[Frame], data: st.DataObject) -> None:
    wire = b"".join(encode_frame(f) for f in sent)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=8)))
    reader = FrameReader(max_payload=MAX)
    got = []
    for start, end in zip([0, *cuts], [*cuts, len(wire)], strict=True):
        reader.feed(wire[start:end])
        while (frame := reader.next_frame()) is not None:
            got.append(frame)
    assert got == sent


@settings(max_examples=300)
@given(st.binary(max_size=64))
def test_fuzz_reader_parses_or_raises_remote_error(data: bytes) -> None:
    reader = FrameReader(max_payload=16)
    reader.feed(data)
    try:
        while reader.next_frame() is not None:
            pass
    except RemoteProtocolError:
        pass
