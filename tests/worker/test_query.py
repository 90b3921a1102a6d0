"""Queries through the Worker relay on workerd to a scripted protocol peer."""

from __future__ import annotations

import json

import httpx
import trio

from edgetds.devidp import DevIdP
from tests.support.protocol_peer import open_peer
from tests.support.worker_relay import WorkerRelay


def query_url(relay: WorkerRelay) -> str:
    return f"{relay.handle.http_url}/v1/tunnels/{relay.handle.tunnel}/query"


def peer(relay: WorkerRelay, connector_id: str = "conn-1", **options: object):  # type: ignore[no-untyped-def]
    h = relay.handle
    return open_peer(
        h.ws_url,
        h.tunnel,
        connector_id,
        h.connector_keys[connector_id],
        h.relay_public_key,
        **options,  # type: ignore[arg-type]
    )


async def test_query_streams_rows_and_done(
    relay: WorkerRelay, idp: DevIdP, client: httpx.AsyncClient
) -> None:
    with trio.fail_after(20):
        async with peer(relay) as p:
            token = idp.mint(sub="alice")
            response = await client.post(
                query_url(relay),
                json={"sql": "select n from t where n < @k", "params": {"k": 3, "f": 0.5e-5}},
                headers={"Authorization": f"Bearer {token}"},
            )
            assert response.status_code == 200, response.text
            assert response.headers["content-type"] == "application/x-ndjson"
            lines = [json.loads(x) for x in response.text.splitlines()]
            assert lines[0]["columns"][0]["name"] == "n"
            assert lines[1:4] == [[0], [1], [2]]
            assert lines[4]["done"]["rows"] == 3
            assert p.attestation_errors == []
            (q,) = p.queries
            assert q.token == token
            assert q.sql == "select n from t where n < @k"
            assert dict(q.params) == {"k": 3, "f": 0.5e-5}
