"""How fast is the edgetds/1 frame codec, next to the transport it rides on?

1. frame codec alone: ``encode_frame`` + ``FrameReader`` for 64-byte frames and 16 KiB ROWS
   frames (the connector's chunk size): frames/s and MiB/s.
2. the whole sans-I/O connection: a relay and a connector ``Connection`` back to back in memory
   (tests/protocol/helpers.ProtocolPair): the connector sends 16 KiB ROWS on one stream, the
   relay parses them and grants CREDIT back (``consumed``): frames/s, MiB/s.
3. the transport floor, measured in the same run: a loopback WebSocket (websockets.trio, as the
   connector uses) round trip p50/p99 and pipelined 16 KiB messages/s (bench/ws_transport.py).

The ratio codec frames/s over WebSocket messages/s says how many times more frames the codec could
handle than the socket carries (>1: the codec is not the bottleneck).
Run: ``.venv/bin/python -m bench.codec [--frames N]``.
"""

from __future__ import annotations

import argparse
import time

import trio

from bench import ws_transport
from protocol import Frame, FrameReader, FrameType, encode_frame, events
from tests.protocol.helpers import ProtocolPair

SMALL = b"x" * 64
CHUNK = b'[1,"row text",12.5]\n' * 819  # 16,380 bytes of whole NDJSON row lines


def codec_rate(payload: bytes, frames: int, batch: int = 1) -> float:
    """Frames/s for encode + decode of ``frames`` frames, ``batch`` frames fed at once (one
    WebSocket message carries one or more whole frames)."""
    reader = FrameReader(max_payload=1 << 20)
    frame = Frame(FrameType.ROWS, 1, payload)
    start = time.perf_counter()
    for _ in range(frames // batch):
        reader.feed(b"".join(encode_frame(frame) for _ in range(batch)))
        while reader.next_frame() is not None:
            pass
    return (frames // batch) * batch / (time.perf_counter() - start)


def connection_rate(frames: int) -> float:
    """Frames/s through two sans-I/O Connections (ROWS one way, CREDIT back)."""
    pair = ProtocolPair()
    pair.handshake()
    query = pair.query()
    sid = query.stream_id
    pair.send(pair.connector, events.Columns(sid, b'{"columns":[]}\n'))
    done = 0
    start = time.perf_counter()
    while done < frames:
        while pair.connector.send_window(sid) >= len(CHUNK) and done < frames:
            pair.connector.send(events.Rows(sid, CHUNK))
            done += 1
        for event in pair.pipe(pair.connector):
            if isinstance(event, events.Rows):
                pair.relay.consumed(sid, len(event.data))
        pair.pipe(pair.relay)  # CREDIT back
    return done / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--frames", type=int, default=200_000, help="frames per codec run")
    parser.add_argument("--rounds", type=int, default=2000, help="WebSocket echo round trips")
    args = parser.parse_args(argv)
    mib = len(CHUNK) / 2**20
    small = codec_rate(SMALL, args.frames)
    rows = codec_rate(CHUNK, args.frames // 4)
    rows_batched = codec_rate(CHUNK, args.frames // 4, batch=64)
    conn = connection_rate(args.frames // 8)
    ws = trio.run(ws_transport.run, args.rounds, 20_000)
    ws_lib = next(r for r in ws if r.name.startswith("websockets.trio"))
    print("(4) frame codec vs the loopback WebSocket floor")
    print(f"  codec, 64 B frames        {small:12,.0f} frames/s")
    print(f"  codec, 16 KiB ROWS        {rows:12,.0f} frames/s  {rows * mib:8.0f} MiB/s")
    print(
        f"  codec, 16 KiB x64/message {rows_batched:12,.0f} frames/s  "
        f"{rows_batched * mib:8.0f} MiB/s  ({rows_batched / rows:.2f}x of one frame/message)"
    )
    print(f"  Connection pair, 16 KiB   {conn:12,.0f} frames/s  {conn * mib:8.0f} MiB/s")
    for r in ws:
        print(
            f"  {r.name:<26}rtt p50 {r.p50_us:6.0f} us  p99 {r.p99_us:6.0f} us  "
            f"{r.msgs_per_s:9,.0f} msg/s  {r.mib_per_s:6.0f} MiB/s"
        )
    print(
        f"  -> Connection pair / websockets.trio 16 KiB msg/s = {conn / ws_lib.msgs_per_s:.1f}x "
        f"(>1: the codec is not the bottleneck); two WebSocket hops floor ~ "
        f"{2 * ws_lib.p50_us / 1000:.2f} ms p50"
    )


if __name__ == "__main__":
    main()
