"""A connector that breaks edgetds/1 is cut off with GOAWAY protocol.error; clients still get a
terminal record."""

from __future__ import annotations

import httpx
import pytest
import trio
from websockets.exceptions import ConnectionClosed

from edgetds.devidp import DevIdP
from protocol import Frame, FrameType, encode_frame, events
from tests.support.protocol_peer import Peer
from tests.support.worker_relay import WorkerRelay
from tests.worker.helpers import bearer, ndjson, peer, query_url


def raw(frame_type: FrameType, stream_id: int, payload: bytes) -> bytes:
    return encode_frame(Frame(frame_type, stream_id, payload))


async def goaway_then_close(p: Peer) -> int:
    """Wait for the relay's close; return its code (the peer's reader saw the GOAWAY)."""
    await p.closed.wait()
    with pytest.raises(ConnectionClosed) as info:
        await p.ws.recv()
    assert info.value.rcvd is not None
    return info.value.rcvd.code


async def test_rows_after_done_is_a_protocol_error(
    relay: WorkerRelay, idp: DevIdP, client: httpx.AsyncClient
) -> None:
    with trio.fail_after(20):
        async with peer(relay) as p:
            response = await client.post(
                query_url(relay), json={"sql": "select 1"}, headers=bearer(idp.mint(sub="x"))
            )
            assert response.status_code == 200
            await p.ws.send(raw(FrameType.ROWS, 1, b"[9]\n"))  # stream 1 is closed
            assert await goaway_then_close(p) == 1002


async def test_text_message_closes_with_1003(relay: WorkerRelay) -> None:
    with trio.fail_after(20):
        async with peer(relay) as p:
            await p.ws.send("hello?")
            assert await goaway_then_close(p) == 1003


async def test_window_overrun_cuts_the_connector_and_ends_the_stream(
    relay: WorkerRelay, idp: DevIdP, client: httpx.AsyncClient
) -> None:
    async def greedy(p: Peer, q: events.Query) -> None:
        await p.columns(q.stream_id)
        chunk = b"".join(b'["' + b"z" * 1000 + b'"]\n' for _ in range(600))  # ~600 KB
        # Two chunks exceed the 1 MiB stream window without waiting for CREDIT.
        await p.ws.send(raw(FrameType.ROWS, q.stream_id, chunk) * 2)

    with trio.fail_after(20):
        async with peer(relay, handler=greedy) as p:
            response = await client.post(
                query_url(relay), json={"sql": "select *"}, headers=bearer(idp.mint(sub="g"))
            )
            assert await goaway_then_close(p) == 1002
    assert response.status_code == 200
    lines = ndjson(response.text)
    assert lines[-1]["error"]["code"] == "transport.lost"
    assert all("done" not in line for line in lines if isinstance(line, dict))


async def test_a_ping_flood_is_cut_off_like_the_python_relay(
    relay: WorkerRelay, idp: DevIdP, client: httpx.AsyncClient
) -> None:
    with trio.fail_after(20):
        async with peer(relay) as p:
            # The burst (20, relay/session.py PING_BURST) is answered and the link keeps serving ...
            await p.ws.send(b"".join(raw(FrameType.PING, 0, b"%08d" % i) for i in range(20)))
            response = await client.post(
                query_url(relay), json={"sql": "select n"}, headers=bearer(idp.mint(sub="p"))
            )
            assert response.status_code == 200, response.text
            assert ndjson(response.text)[-1]["done"]["rows"] == 3  # type: ignore[index]
            # ... a flood (each PING costs a PONG) is cut off with GOAWAY protocol.error + 1002.
            await p.ws.send(b"".join(raw(FrameType.PING, 0, b"%08d" % i) for i in range(1000)))
            assert await goaway_then_close(p) == 1002
