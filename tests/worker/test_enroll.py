"""One-token enrolment on the Worker relay (SPEC.md 8.7), under the real workerd runtime.

The enrolled keys live in Durable Object storage (relay/worker/src/tunnel.js): the tunnel's
TUNNELS entry may have no connectors at all, an enrolled connector connects and serves, refusals
register nothing, a new enrolment of the same id drains the old key's connections on every shard,
and the keys survive the object's eviction and a workerd restart on the same storage.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from websockets.exceptions import InvalidStatus
from websockets.trio.client import connect

from edgetds.devidp import DevIdP
from protocol import (
    make_connector_token,
    make_enroll_request,
    public_key_text,
    verify_enrolled,
)
from tests.conformance.test_enroll import altered
from tests.support.connector_stack import write_config_to_enrol
from tests.support.e2e_stack import write_key
from tests.support.protocol_peer import Peer, open_peer
from tests.support.relays import enroll_token
from tests.support.waiting import eventually
from tests.support.worker_relay import (
    TEST_LIMITS,
    WorkerRelay,
    idle_until_hibernated,
    open_worker_relay,
)
from tests.worker.helpers import (
    bearer,
    connect_url,
    idp_and_db,
    ndjson,
    query_url,
    shard_of,
)

TUNNEL = "demo"
CONNECTOR_ID = "conn-e"


def token_for(
    relay: WorkerRelay,
    connector_id: str = CONNECTOR_ID,
    *,
    tunnel: str = TUNNEL,
    now: int | None = None,
    relay_key: Ed25519PrivateKey | None = None,
) -> str:
    """A token for ``relay`` (its key unless ``relay_key``), made offline."""
    handle = relay.handle
    return enroll_token(handle, tunnel=tunnel, connector_id=connector_id, now=now, key=relay_key)


async def post_enroll(
    client: httpx.AsyncClient, relay: WorkerRelay, body: Any, *, tunnel: str = TUNNEL
) -> httpx.Response:
    return await client.post(f"{relay.handle.http_url}/v1/tunnels/{tunnel}/enroll", json=body)


async def enrol(
    client: httpx.AsyncClient, relay: WorkerRelay, key: Ed25519PrivateKey, token: str
) -> dict[str, Any]:
    """Enrol ``key`` with ``token``; the answer is checked as the connector checks it."""
    response = await post_enroll(client, relay, make_enroll_request(token, key))
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    verify_enrolled(answer, token=token, public_key=public_key_text(key))
    return answer


def refusal(response: httpx.Response) -> tuple[int, str]:
    code: str = response.json()["error"]["code"]
    return response.status_code, code


async def connect_refusal(
    relay: WorkerRelay, key: Ed25519PrivateKey, connector_id: str = CONNECTOR_ID
) -> tuple[int, str]:
    """The status and error code with which the Worker refuses this key's upgrade."""
    token = make_connector_token(
        key, connector_id=connector_id, tunnel=TUNNEL, now=int(time.time())
    )
    with pytest.raises(InvalidStatus) as info:
        async with connect(
            connect_url(relay),
            subprotocols=["edgetds.v1"],  # type: ignore[list-item]
            additional_headers={"Authorization": f"Bearer {token}"},
        ):
            pass
    code: str = json.loads(bytes(info.value.response.body or b"{}"))["error"]["code"]
    return info.value.response.status_code, code


@asynccontextmanager
async def enrolled_peer(
    relay: WorkerRelay, key: Ed25519PrivateKey, *, shard: int | None = None, shards: int = 1
) -> AsyncIterator[Peer]:
    """A protocol peer connected as the enrolled connector with ``key``; ``shard``: on that
    shard (its token's jti is chosen so that the Worker's shardOf sends it there)."""
    token = None
    if shard is not None:
        # (a fresh random jti each time: a jti is good for one connection)
        jti = next(
            j for j in iter(lambda: secrets.token_urlsafe(16), "") if shard_of(j, shards) == shard
        )
        token = make_connector_token(
            key, connector_id=CONNECTOR_ID, tunnel=TUNNEL, now=int(time.time()), jti=jti
        )
    h = relay.handle
    async with open_peer(h.ws_url, TUNNEL, CONNECTOR_ID, key, h.relay_public_key, token=token) as p:
        yield p


async def edge_counts(client: httpx.AsyncClient, relay: WorkerRelay, idp: DevIdP) -> Any:
    status = await client.get(
        f"{relay.handle.http_url}/v1/tunnels/{TUNNEL}/status", headers=bearer(idp.mint(sub="ops"))
    )
    assert status.status_code == 200, status.text
    return status.json()["edge"]


async def test_refused_enrolments_name_their_check_and_register_nothing(
    idp: DevIdP, client: httpx.AsyncClient
) -> None:
    async with open_worker_relay(
        tunnel=TUNNEL, connector_ids=[], issuer=idp.issuer, extra_tunnels={"other": ["conn-x"]}
    ) as relay:
        with trio.fail_after(40):
            key = Ed25519PrivateKey.generate()
            token = token_for(relay)
            good = make_enroll_request(token, key)
            cases: list[tuple[Any, str, tuple[int, str]]] = [
                ({"token": token}, TUNNEL, (400, "request.invalid")),
                (
                    {**good, "token": altered(token, connector_id="conn-1")},
                    TUNNEL,
                    (401, "enroll.invalid_token"),
                ),
                (
                    make_enroll_request(
                        token_for(relay, relay_key=Ed25519PrivateKey.generate()), key
                    ),
                    TUNNEL,
                    (401, "enroll.invalid_token"),
                ),
                (good, "other", (401, "enroll.invalid_token")),
                (
                    make_enroll_request(token_for(relay, tunnel="ghost"), key),
                    "ghost",
                    (404, "tunnel.unknown"),
                ),
                (
                    make_enroll_request(token_for(relay, now=int(time.time()) - 3600), key),
                    TUNNEL,
                    (401, "enroll.expired"),
                ),
                (
                    {
                        **good,
                        "proof": make_enroll_request(token, Ed25519PrivateKey.generate())["proof"],
                    },
                    TUNNEL,
                    (400, "enroll.invalid_proof"),
                ),
            ]
            for body, tunnel, expected in cases:
                assert refusal(await post_enroll(client, relay, body, tunnel=tunnel)) == expected
            # None of them registered the key: the Worker still does not know the connector id.
            assert await connect_refusal(relay, key) == (401, "auth.unknown_issuer")
            await enrol(client, relay, key, token)
            # A replay of the token that worked, even with another key and its own good proof.
            assert refusal(await post_enroll(client, relay, good)) == (409, "enroll.used")
            thief = Ed25519PrivateKey.generate()
            replayed = make_enroll_request(token, thief)
            assert refusal(await post_enroll(client, relay, replayed)) == (409, "enroll.used")
            assert await connect_refusal(relay, thief) == (401, "auth.invalid_token")
            edge = await edge_counts(client, relay, idp)
            assert edge["totals"]["enrollments"] == 1
            refused = edge["refused"]
            assert refused["enroll.used"] == 2
            assert refused["enroll.invalid_token"] == 3
            assert (refused["enroll.expired"], refused["enroll.invalid_proof"]) == (1, 1)
            assert (refused["request.invalid"], refused["tunnel.unknown"]) == (1, 1)
            async with enrolled_peer(relay, key) as p:
                assert p.session_id  # the enrolled key connects; HELLO verified


async def test_enrolment_refusals_spend_the_failed_authentication_budget(
    idp: DevIdP, client: httpx.AsyncClient
) -> None:
    limits = {"auth_failure_burst": 2, "auth_failures_per_second": 0.001}
    async with open_worker_relay(
        tunnel=TUNNEL, connector_ids=[], issuer=idp.issuer, limits=limits
    ) as relay:
        with trio.fail_after(30):
            key = Ed25519PrivateKey.generate()
            token = token_for(relay)
            bad = {**make_enroll_request(token, key), "proof": "AAAA"}
            for _ in range(2):
                assert refusal(await post_enroll(client, relay, bad)) == (
                    400,
                    "enroll.invalid_proof",
                )
            # Over the budget: even a good enrolment is refused before its body is read.
            limited = await post_enroll(client, relay, make_enroll_request(token, key))
            assert refusal(limited) == (429, "limits.rate_limited")
            assert int(limited.headers["retry-after"]) >= 1


@pytest.mark.parametrize("shards", [1, 2])
async def test_a_new_enrolment_of_the_id_drains_the_old_keys_connections(
    idp: DevIdP, client: httpx.AsyncClient, shards: int
) -> None:
    async with open_worker_relay(
        tunnel=TUNNEL, connector_ids=["conn-1"], issuer=idp.issuer, shards=shards
    ) as relay:
        with trio.fail_after(40):
            old, new = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
            await enrol(client, relay, old, token_for(relay))
            async with (
                enrolled_peer(relay, old, shard=0, shards=shards) as first,
                enrolled_peer(relay, old, shard=shards - 1, shards=shards) as last,
                open_peer(
                    relay.handle.ws_url,
                    TUNNEL,
                    "conn-1",
                    relay.handle.connector_keys["conn-1"],
                    relay.handle.relay_public_key,
                ) as static,
            ):
                await enrol(client, relay, new, token_for(relay))
                # Both of the old key's connections (one per shard) are drained; the static
                # connector's connection (its key is still registered) is not.
                await first.drained.wait()
                await last.drained.wait()
                assert not static.drained.is_set()
                status = await client.get(
                    f"{relay.handle.http_url}/v1/tunnels/{TUNNEL}/status",
                    headers=bearer(idp.mint(sub="ops")),
                )
                body = status.json()
                assert (body["connections"], body["draining"]) == (3, 2), body
                assert body["connector_ids"] == ["conn-1", CONNECTOR_ID]
                assert await connect_refusal(relay, old) == (401, "auth.invalid_token")
                async with enrolled_peer(relay, new) as p:
                    assert p.session_id
                # The static connector still serves (the drained ones take no new query).
                response = await client.post(
                    f"{relay.handle.http_url}/v1/tunnels/{TUNNEL}/query",
                    json={"sql": "select 1"},
                    headers=bearer(idp.mint(sub="alice")),
                )
                assert response.status_code == 200, response.text
                assert (len(static.queries), len(first.queries), len(last.queries)) == (1, 0, 0)


@pytest.mark.timeout(90)
async def test_enrolled_keys_survive_eviction_and_a_workerd_restart(
    idp: DevIdP, client: httpx.AsyncClient
) -> None:
    async with open_worker_relay(tunnel=TUNNEL, connector_ids=[], issuer=idp.issuer) as relay:
        key = Ed25519PrivateKey.generate()
        token = token_for(relay)
        with trio.fail_after(20):
            await enrol(client, relay, key, token)
            before = (await relay.do_state(client))["instance"]
        await idle_until_hibernated()
        with trio.fail_after(20):
            async with enrolled_peer(relay, key) as p:
                assert p.session_id
            assert (await relay.do_state(client))["instance"] != before  # the object was rebuilt
            await relay.restart()  # SIGKILL, then a new workerd on the same storage directory
            async with enrolled_peer(relay, key) as p:
                assert p.session_id
            # The consumed token is still consumed.
            replay = make_enroll_request(token, Ed25519PrivateKey.generate())
            assert refusal(await post_enroll(client, relay, replay)) == (409, "enroll.used")


AUDIT_TOKEN = "audit-reader-secret"
EDGETDS = [sys.executable, "-m", "edgetds"]


@pytest.mark.timeout(120)
async def test_enrolled_with_both_clis_a_connector_run_serves_and_its_checkpoints_verify(
    tmp_path: Path,
) -> None:
    """The operator makes the token offline (`relay enroll --key --relay-url`), the connector
    host enrols with it on stdin (`connector enroll -`), then `connector run` with the written
    config connects through the Worker and serves; its signed audit checkpoint verifies under
    the enrolled key (the Worker keeps it)."""
    with trio.fail_after(100):
        async with idp_and_db(tmp_path) as (idp, db), httpx.AsyncClient(timeout=20) as http:
            async with open_worker_relay(
                tunnel=TUNNEL,
                connector_ids=[],
                issuer=idp.issuer,
                audit_token_sha256=hashlib.sha256(AUDIT_TOKEN.encode()).hexdigest(),
            ) as relay:
                assert relay.handle.relay_key is not None
                relay_key = write_key(tmp_path / "relay.key", relay.handle.relay_key)
                out = tmp_path / "connector"
                write_config_to_enrol(
                    out,
                    issuer=idp.issuer,
                    db=db,
                    audit_options={"checkpoint_every_records": 1, "checkpoint_interval_s": 3600},
                )
                made = await trio.run_process(
                    [*EDGETDS, "relay", "enroll", "--tunnel", TUNNEL, "--connector", CONNECTOR_ID,
                     "--key", str(relay_key), "--relay-url", relay.handle.http_url],
                    capture_stdout=True, capture_stderr=True,
                )  # fmt: skip
                token = made.stdout.decode().strip()
                done = await trio.run_process(
                    [*EDGETDS, "connector", "enroll", "-", "--out", str(out)],
                    stdin=token.encode() + b"\n", capture_stdout=True, capture_stderr=True,
                    check=False,
                )  # fmt: skip
                assert done.returncode == 0, done.stderr.decode()
                assert token not in done.stdout.decode() + done.stderr.decode()
                # the token is consumed: a second enrolment with it is refused
                again = make_enroll_request(token, Ed25519PrivateKey.generate())
                assert refusal(await post_enroll(http, relay, again)) == (409, "enroll.used")
                url = f"{relay.handle.http_url}/v1/tunnels/{TUNNEL}/audit/checkpoint"
                params = {"connector": CONNECTOR_ID}

                async def count_notes() -> httpx.Response:
                    return await http.post(
                        query_url(relay),
                        json={"sql": "SELECT COUNT(*) AS c FROM notes"},
                        headers=bearer(idp.mint(sub="alice", groups=["analysts"])),
                    )

                async def serves() -> bool:
                    return (await count_notes()).status_code == 200

                async def checkpoint_held() -> bool:
                    answer = await http.get(url, params=params, headers=bearer(AUDIT_TOKEN))
                    return answer.json()["checkpoint"] is not None

                config = out / "connector.toml"
                with (tmp_path / "connector.log").open("wb") as log:
                    async with trio.open_nursery() as nursery:
                        await nursery.start(
                            partial(trio.run_process, [*EDGETDS, "connector", "run", "--config",
                                    str(config)], stderr=log, check=False)
                        )  # fmt: skip
                        await eventually(serves)
                        response = await count_notes()
                        assert response.status_code == 200, response.text
                        assert ndjson(response.text)[1] == [2]
                        await eventually(checkpoint_held)
                        nursery.cancel_scope.cancel()


async def test_a_new_enrolment_closes_a_connection_of_the_old_key_still_in_its_handshake(
    idp: DevIdP, client: httpx.AsyncClient
) -> None:
    async with open_worker_relay(tunnel=TUNNEL, connector_ids=[], issuer=idp.issuer) as relay:
        with trio.fail_after(20):
            old = Ed25519PrivateKey.generate()
            await enrol(client, relay, old, token_for(relay))
            token = make_connector_token(
                old, connector_id=CONNECTOR_ID, tunnel=TUNNEL, now=int(time.time())
            )
            async with connect(
                connect_url(relay),
                subprotocols=["edgetds.v1"],  # type: ignore[list-item]
                additional_headers={"Authorization": f"Bearer {token}"},
                close_timeout=0.5,
            ) as ws:
                await ws.recv()  # HELLO; no READY: the connection stays in its handshake
                await enrol(client, relay, Ed25519PrivateKey.generate(), token_for(relay))
                # It cannot be drained (no DRAIN before READY): GOAWAY, then close 4001. (workerd
                # delivers a close() made outside a request to the socket only when the object
                # is next evicted, see test_shards.py; the GOAWAY is what ends it.)
                goaway = await ws.recv()
                assert isinstance(goaway, bytes)
                assert goaway[1] == 0x34  # GOAWAY
                assert b"auth.connector_rejected" in goaway


async def test_a_drained_connection_the_connector_keeps_is_closed_after_the_query_timeout(
    idp: DevIdP, client: httpx.AsyncClient
) -> None:
    # it is closed query_timeout_ms + deadline_grace_ms (300) after the DRAIN: the time its
    # in-flight queries may still take
    limits = {**TEST_LIMITS, "query_timeout_ms": 3000}
    async with open_worker_relay(
        tunnel=TUNNEL, connector_ids=[], issuer=idp.issuer, limits=limits
    ) as relay:
        with trio.fail_after(20):
            old = Ed25519PrivateKey.generate()
            await enrol(client, relay, old, token_for(relay))
            async with enrolled_peer(relay, old) as p:  # a peer that ignores DRAIN
                await enrol(client, relay, Ed25519PrivateKey.generate(), token_for(relay))
                await p.drained.wait()
                status_url = f"{relay.handle.http_url}/v1/tunnels/{TUNNEL}/status"
                headers = bearer(idp.mint(sub="ops"))

                async def closed() -> bool:
                    status = (await client.get(status_url, headers=headers)).json()
                    return bool(status["connections"] == 0)

                assert not await closed()  # drained, still there
                await eventually(closed)  # the alarm closed it
