"""The Worker reads the audit checkpoints a deployment kept per connector (``ckpt:<connector>`` in
a shard's storage, before they were kept per audit file) as per file, the way relay/config.py
reads an old ``checkpoint_file`` (tests/audit/test_rotation_checkpoints.py): the checkpoint under
its own file, a conflict of the same file kept, a conflict naming another file (two replicas'
checkpoints) as that file's checkpoint. Under workerd; the old entries are put
in place by the test build's hook, the new checkpoints come from a peer with the connector's key.
"""

from __future__ import annotations

import hashlib
from typing import Any

import httpx
import trio

from protocol import CHECKPOINT_CAP, events, sign_checkpoint
from tests.support.protocol_peer import open_peer
from tests.support.waiting import eventually
from tests.support.worker_relay import start_worker_relay

AUDIT_TOKEN = "audit-reader-secret"
AUTH = {"authorization": f"Bearer {AUDIT_TOKEN}"}


async def test_checkpoints_kept_per_connector_are_read_per_file() -> None:
    digest = hashlib.sha256(AUDIT_TOKEN.encode()).hexdigest()
    with trio.fail_after(90):
        async with (
            start_worker_relay(
                tunnel="demo",
                connector_ids=["conn-1", "conn-2"],
                issuer="https://idp.invalid",
                audit_token_sha256=digest,
            ) as relay,
            httpx.AsyncClient(timeout=20) as http,
        ):
            keys = relay.connector_keys
            base = f"{relay.http_url}/v1/tunnels/demo"

            def signed(cid: str, seq: int, file: str) -> dict[str, Any]:
                fields = {"connector_id": cid, "tunnel": "demo", "file": file}
                return sign_checkpoint(keys[cid], seq=seq, head=f"{seq:064x}", now=1, **fields)

            async def legacy(cid: str, entry: dict[str, Any]) -> None:
                url = f"{base}/_test/legacy_checkpoint?shard=0&connector={cid}"
                assert (await http.post(url, json=entry)).status_code == 200

            async def answer(cid: str, file: str | None = None) -> httpx.Response:
                query = {"connector": cid} | ({} if file is None else {"file": file})
                response: httpx.Response = await http.get(
                    f"{base}/audit/checkpoint", params=query, headers=AUTH
                )
                return response

            async def held(cid: str, file: str) -> tuple[Any, Any]:
                body = (await answer(cid, file)).json()
                return body["checkpoint"], body["conflict"]

            one, two = "audit-1.jsonl", "audit-2.jsonl"
            # conn-1: replica 2's checkpoint held, replica 1's kept as its "conflict"
            await legacy(
                "conn-1",
                {"checkpoint": signed("conn-1", 2, two), "received_at": 5,
                 "conflict": signed("conn-1", 9, one)},
            )  # fmt: skip
            # conn-2: one file that went backwards once: its conflict stays
            await legacy(
                "conn-2",
                {"checkpoint": signed("conn-2", 6, "audit.jsonl"), "received_at": 5,
                 "conflict": signed("conn-2", 5, "audit.jsonl")},
            )  # fmt: skip
            assert await held("conn-1", one) == (signed("conn-1", 9, one), None)
            assert await held("conn-1", two) == (signed("conn-1", 2, two), None)
            several = await answer("conn-1")
            assert several.status_code == 409, several.text
            assert several.json()["files"] == [one, two]
            single = await answer("conn-2")  # one file: the answer as before, conflict and all
            assert single.json() == {
                "tunnel": "demo",
                "connector_id": "conn-2",
                "checkpoint": signed("conn-2", 6, "audit.jsonl"),
                "received_at": 5,
                "conflict": signed("conn-2", 5, "audit.jsonl"),
            }
            # the connector goes on: the old entries are what its new checkpoints are held to
            peer_args = (relay.ws_url, "demo", "conn-1", keys["conn-1"], relay.relay_public_key)
            async with open_peer(*peer_args, caps=(CHECKPOINT_CAP,)) as peer:
                await peer.send(events.Checkpoint(signed("conn-1", 1, two)))  # backwards
                await peer.send(events.Checkpoint(signed("conn-1", 10, one)))

                async def stored() -> bool:
                    return (await held("conn-1", one))[0] == signed("conn-1", 10, one)

                await eventually(stored)
            # replica 2's file went backwards: refused, its old checkpoint kept as the conflict
            assert await held("conn-1", two) == (signed("conn-1", 2, two), signed("conn-1", 2, two))
