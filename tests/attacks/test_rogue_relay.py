"""Attacks from a rogue relay on the connector (a real `edgetds connector run` process): frames
that break edgetds/1 (oversized, truncated, unknown type, wrong role or stream state, credit
overflow, PING and tiny-frame floods), seeded random frames, and replayed or altered QUERY
attestations. Each hostile connection is refused (closed with 1002/1009) or merely survived; the
process never dies, reconnects, keeps serving a good connection, and no hostile statement reaches
the database."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.attacks._hostile import TO_CONNECTOR, fuzz_blobs
from tests.connector.rogue_relay import RogueRelay, RogueSession, open_rogue_relay
from tests.support.chaos_stack import TUNNEL, Chaos, public_text
from tests.support.relays import RelayHandle

FUZZ_SEED = 20261127


@asynccontextmanager
async def rogue_and_connector(chaos: Chaos) -> AsyncIterator[tuple[RogueRelay, trio.Process]]:
    """A rogue relay holding the pinned relay key, and conn-1 (one link) dialling it."""
    relay_key = Ed25519PrivateKey.generate()
    connector_key = Ed25519PrivateKey.generate()
    async with open_rogue_relay(
        tunnel=TUNNEL,
        connector_id="conn-1",
        connector_public_key=connector_key.public_key(),
        relay_key=relay_key,
    ) as rogue:
        chaos.use_relay(
            RelayHandle(
                kind="rogue",
                http_url="",
                ws_url=rogue.ws_url,
                tunnel=TUNNEL,
                relay_public_key=public_text(relay_key),
                connector_keys={"conn-1": connector_key},
            )
        )
        async with chaos.connector("conn-1", ha_connections=1, backoff_cap_s=0.3) as proc:
            yield rogue, proc


async def send_hostile(rogue: RogueRelay, number: int, blob: bytes) -> int | None:
    """Send `blob` on the `number`-th session once it is READY; the close code the connector
    used within 3 s (None: it kept the connection, which is then closed from here)."""
    session = await rogue.wait_session(number)
    await session.ready.wait()
    await session.ws.send(blob)
    with trio.move_on_after(3):
        await session.closed.wait()
        return session.close_code
    await session.ws.aclose()
    return None


async def good_query(session: RogueSession, token: str, sql: str) -> dict:
    result = await session.query(token=token, sql=sql)
    await result.done.wait()
    return json.loads(result.body.decode().splitlines()[-1])


async def test_hostile_frames_are_refused_and_the_connector_keeps_serving(chaos: Chaos) -> None:
    codes: dict[str, int | None] = {}
    with trio.fail_after(120):
        async with rogue_and_connector(chaos) as (rogue, proc):
            for number, (name, (blob, _allowed)) in enumerate(TO_CONNECTOR.items(), start=1):
                codes[name] = await send_hostile(rogue, number, blob)
                assert proc.returncode is None, f"the connector died on {name}"
            session = await rogue.wait_session(len(TO_CONNECTOR) + 1)
            await session.ready.wait()
            statements_before = len(chaos.db.log.entries)
            ok = await good_query(session, chaos.token, "SELECT COUNT(*) AS c FROM notes")
            # the same QUERY again (replayed attestation and query id), then altered ones
            first = session.streams[max(session.streams)]
            replay = await session.query(
                token=chaos.token,
                sql=first.query.sql,
                query_id=first.query_id,
                attestation=first.query.attestation,
            )
            altered = await session.query(
                token=chaos.token, sql="SELECT 1 AS one", tamper={"sql": "SELECT 2 AS two"}
            )
            other_params = await session.query(
                token=chaos.token,
                sql="SELECT @p AS p",
                params={"p": 1},
                tamper={"params": {"p": 2}},
            )
            for result in (replay, altered, other_params):
                await result.done.wait()
            refusals = [
                json.loads(r.body.decode())["error"]["code"]
                for r in (replay, altered, other_params)
            ]
            assert proc.returncode is None
    print(f"\nconnector close codes: {codes}")
    wrong = {
        name: code
        for name, code in codes.items()
        if TO_CONNECTOR[name][1] and code not in TO_CONNECTOR[name][1]
    }
    assert not wrong, f"refused with the wrong close code (or not at all): {wrong} (all: {codes})"
    assert "done" in ok, ok
    assert refusals == ["auth.replay", "auth.attestation_invalid", "auth.attestation_invalid"]
    ran = [e["statement"] for e in chaos.db.log.entries[statements_before:]]
    assert "SELECT COUNT(*) AS c FROM notes" in ran
    assert not {"SELECT 1 AS one", "SELECT 2 AS two", "SELECT @p AS p"} & set(ran), ran


async def test_random_frames_never_kill_the_connector(chaos: Chaos) -> None:
    blobs = fuzz_blobs(FUZZ_SEED, 24)
    codes: list[int | None] = []
    with trio.fail_after(120):
        async with rogue_and_connector(chaos) as (rogue, proc):
            for number, blob in enumerate(blobs, start=1):
                codes.append(await send_hostile(rogue, number, blob))
                assert proc.returncode is None, f"the connector died on blob {number - 1}"
            session = await rogue.wait_session(len(blobs) + 1)
            await session.ready.wait()
            ok = await good_query(session, chaos.token, "SELECT COUNT(*) AS c FROM notes")
    assert "done" in ok, ok
    # most random input is refused at once, with a protocol close code (or, for a well-formed
    # DRAIN/GOAWAY that the noise happened to make, an orderly 1000/1001)
    assert {c for c in codes if c is not None} <= {1000, 1001, 1002, 1009}, codes
    assert sum(c is not None for c in codes) >= len(blobs) // 2, codes
