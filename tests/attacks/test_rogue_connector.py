"""Attacks from a rogue connector on BOTH relays (Python, Worker): a registered connector that,
once READY, sends frames breaking edgetds/1 (oversized, unknown type, wrong role, wrong stream
state, bad payload, PING and tiny-frame floods, a truncated frame) and seeded random frames. Each
hostile connection is refused or survived; the relay keeps serving the real connector."""

from __future__ import annotations

import time
from typing import Any

import trio
from websockets.exceptions import ConnectionClosed
from websockets.trio.client import connect

from protocol import SUBPROTOCOL, Connection, Role, events, make_connector_token
from tests.attacks._hostile import TO_RELAY, fuzz_blobs
from tests.chaos._common import counted
from tests.support.chaos import Tally, one_query
from tests.support.chaos_stack import TUNNEL, Chaos, open_relay
from tests.support.relays import RelayHandle

FUZZ_SEED = 7


async def send_hostile(relay: RelayHandle, blob: bytes, *, with_ready: bool = False) -> int | None:
    """Connect as conn-2, READY, send `blob` (in the READY message if `with_ready`); the close
    code the relay used within 3 s (None: still open after 3 s, then closed from here)."""
    token = make_connector_token(
        relay.connector_keys["conn-2"], connector_id="conn-2", tunnel=TUNNEL, now=int(time.time())
    )
    async with connect(
        f"{relay.ws_url}/v1/tunnels/{TUNNEL}/connect",
        subprotocols=[SUBPROTOCOL],  # type: ignore[list-item]
        additional_headers={"Authorization": f"Bearer {token}"},
        max_size=None,
    ) as ws:
        conn = Connection(Role.CONNECTOR)
        conn.receive_data(await ws.recv())
        assert isinstance(conn.events()[0], events.Hello)
        conn.send(events.Ready("conn-2", 16))
        if with_ready:
            await ws.send(conn.data_to_send() + blob)
        else:
            await ws.send(conn.data_to_send())
            await ws.send(blob)
        with trio.move_on_after(3):
            try:
                while True:
                    await ws.recv()
            except ConnectionClosed as exc:
                return exc.rcvd.code if exc.rcvd is not None else 1006
    return None


async def still_serving(chaos: Chaos, name: str) -> None:
    tally = Tally(name)
    outcome = await one_query(chaos.http, chaos.query_url, chaos.token, tally, counted)
    assert outcome == ("ok", ""), tally.samples


async def test_hostile_and_random_frames_are_refused_by_the_relay(
    chaos: Chaos, relay_kind: str
) -> None:
    codes: dict[str, Any] = {}
    with trio.fail_after(150):
        async with open_relay(relay_kind, chaos) as relay, chaos.connector("conn-1"):
            await chaos.wait_connections(2)
            for name, (blob, _allowed) in TO_RELAY.items():
                codes[name] = await send_hostile(relay, blob)
            await still_serving(chaos, f"rogue_connector_{relay_kind}")
            fuzz = [await send_hostile(relay, blob) for blob in fuzz_blobs(FUZZ_SEED, 24)]
            await still_serving(chaos, f"fuzz_relay_{relay_kind}")
            assert await chaos.connections() == 2  # only the real connector's two links remain
    print(f"\n{relay_kind} relay close codes: {codes}; random frames: {fuzz}")
    wrong = {n: c for n, c in codes.items() if TO_RELAY[n][1] and c not in TO_RELAY[n][1]}
    assert not wrong, f"{relay_kind}: wrong close code (or none): {wrong} (all: {codes})"
    assert {c for c in fuzz if c is not None} <= {1000, 1001, 1002, 1003, 1009}, fuzz
    assert sum(c is not None for c in fuzz) >= 12, fuzz


PING_FLOOD = TO_RELAY["ping_flood"][0]


async def test_python_relay_cuts_a_ping_flood_sent_with_ready(chaos: Chaos) -> None:
    with trio.fail_after(30):
        async with open_relay("python", chaos) as relay:
            assert await send_hostile(relay, PING_FLOOD, with_ready=True) == 1002


async def test_worker_relay_cuts_a_ping_flood(chaos: Chaos) -> None:
    with trio.fail_after(60):
        async with open_relay("worker", chaos) as relay:
            assert await send_hostile(relay, PING_FLOOD) == 1002
