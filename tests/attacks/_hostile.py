"""Hostile edgetds/1 input: hand-made frames that break one rule each, and seeded random frames.

Frames are built byte by byte here (not with protocol/'s encoder, which refuses to make them).
"""

from __future__ import annotations

import random
import struct

from protocol import FrameType as T

#: close codes a peer may use to refuse a frame (SPEC 3.3)
PROTOCOL_ERROR = 1002
MESSAGE_TOO_BIG = 1009


def raw(
    frame_type: int, stream: int = 0, payload: bytes = b"", *, length: int | None = None
) -> bytes:
    """A frame header + payload; `length` may lie about the payload size."""
    size = len(payload) if length is None else length
    return bytes([1, frame_type, 0, 0]) + struct.pack(">II", stream, size) + payload


#: relay -> connector, each sent after READY on its own connection: (bytes, close codes allowed;
#: an empty set means "may stay open": the connector must only survive it).
TO_CONNECTOR: dict[str, tuple[bytes, set[int]]] = {
    "oversized": (raw(T.PING, 0, length=0xFFFF_FFF0), {MESSAGE_TOO_BIG}),
    "unknown_type": (raw(0x7F), {PROTOCOL_ERROR}),
    "bad_version": (bytes([2]) + raw(T.PING, 0, b"12345678")[1:], {PROTOCOL_ERROR}),
    "nonzero_flags": (bytes([1, T.PING, 1, 0]) + raw(T.PING, 0, b"12345678")[4:], {PROTOCOL_ERROR}),
    "truncated_query_json": (raw(T.QUERY, 1, b'{"query_id": "q", "tok'), {PROTOCOL_ERROR}),
    "rows_from_the_relay": (raw(T.ROWS, 1, b"[1]\n"), {PROTOCOL_ERROR}),
    "cancel_of_a_stream_never_opened": (raw(T.CANCEL, 5), {PROTOCOL_ERROR}),
    "second_hello": (raw(T.HELLO, 0, b"{}"), {PROTOCOL_ERROR}),
    "credit_overflow": (raw(T.CREDIT, 0, struct.pack(">I", 0x7FFF_FFFF)), {PROTOCOL_ERROR}),
    "credit_zero": (raw(T.CREDIT, 0, struct.pack(">I", 0)), {PROTOCOL_ERROR}),
    "query_on_stream_0": (raw(T.QUERY, 0, b"{}"), {PROTOCOL_ERROR}),
    "ping_flood": (raw(T.PING, 0, b"12345678") * 10_000, set()),
    "tiny_frame_flood": (raw(T.CREDIT, 0, struct.pack(">I", 1)) * 20_000, set()),
    "truncated_frame": (raw(T.PING, 0, b"1234", length=8), set()),
}

#: connector -> relay, each sent after READY on its own connection.
TO_RELAY: dict[str, tuple[bytes, set[int]]] = {
    "oversized": (raw(T.ROWS, 1, length=0xFFFF_FFF0), {MESSAGE_TOO_BIG, PROTOCOL_ERROR}),
    "unknown_type": (raw(0x7F), {PROTOCOL_ERROR}),
    "bad_version": (bytes([9]) + raw(T.PING, 0, b"12345678")[1:], {PROTOCOL_ERROR}),
    "query_from_a_connector": (raw(T.QUERY, 1, b"{}"), {PROTOCOL_ERROR}),
    "credit_from_a_connector": (raw(T.CREDIT, 0, struct.pack(">I", 1)), {PROTOCOL_ERROR}),
    "columns_on_a_stream_never_opened": (raw(T.COLUMNS, 9, b'{"columns":[]}\n'), {PROTOCOL_ERROR}),
    "second_ready": (raw(T.READY, 0, b"{}"), {PROTOCOL_ERROR}),
    "done_not_json": (raw(T.DONE, 1, b"nope\n"), {PROTOCOL_ERROR}),
    "ping_flood": (raw(T.PING, 0, b"12345678") * 10_000, {PROTOCOL_ERROR}),  # F3/F4
    "tiny_frame_flood": (raw(T.PONG, 0, b"12345678") * 20_000, set()),
    "truncated_frame": (raw(T.PING, 0, b"1234", length=8), set()),
}


def fuzz_blobs(seed: int, count: int) -> list[bytes]:
    """Seeded random input: pure noise, and valid-looking headers with random type, stream,
    length and payload (so the parser gets past the header checks)."""
    rng = random.Random(seed)
    types = [int(t) for t in T] + [0, 0x7F, 0xFF]
    blobs = []
    for i in range(count):
        if i % 3 == 0:
            blobs.append(rng.randbytes(rng.randrange(1, 200)))
            continue
        payload = rng.randbytes(rng.randrange(0, 64))
        if rng.random() < 0.3:
            payload = rng.choice([b"{}", b"[]", b'{"a":1}\n', b"[1]\n", b"\x00" * 8, b"{"])
        frame = raw(
            rng.choice(types),
            rng.choice([0, 1, 2, rng.randrange(2**32)]),
            payload,
            length=None if rng.random() < 0.8 else rng.randrange(2**32),
        )
        blobs.append(frame * rng.choice([1, 1, 1, 3]))
    return blobs
