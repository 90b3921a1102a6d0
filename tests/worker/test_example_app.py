"""examples/worker-app under workerd: a second Worker using client.js over a service binding."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest
import trio

from edgetds.devidp import DevIdP
from protocol import events
from tests.support.protocol_peer import Peer
from tests.support.worker_relay import WorkerRelay, open_worker_relay
from tests.worker.helpers import CONNECTORS, TUNNEL, peer

ORDER_COLUMNS = [
    {"name": n, "type": t, "nullable": False, "precision": None, "scale": None, "length": None}
    for n, t in (("id", "int"), ("item", "nvarchar"), ("total", "decimal"))
]


@pytest.fixture
async def app_relay(idp: DevIdP) -> AsyncIterator[WorkerRelay]:
    async with open_worker_relay(
        tunnel=TUNNEL, connector_ids=CONNECTORS, issuer=idp.issuer, app=True
    ) as relay:
        yield relay


async def orders(p: Peer, q: events.Query) -> None:
    owner = q.params["owner"]
    await p.columns(q.stream_id, ORDER_COLUMNS)
    await p.rows(q.stream_id, [[1, f"book for {owner}", "12.5000"], [2, "pen", "1.2500"]])
    await p.done(q.stream_id, rows=2, query_id=q.query_id)


async def test_app_answers_with_rows_for_the_signed_in_user(
    app_relay: WorkerRelay, idp: DevIdP, client: httpx.AsyncClient
) -> None:
    assert app_relay.app_url is not None
    token = idp.mint(sub="alice", groups=["analysts"])
    with trio.fail_after(20):
        async with peer(app_relay, handler=orders) as p:
            response = await client.get(
                f"{app_relay.app_url}/api/orders", headers={"Authorization": f"Bearer {token}"}
            )
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["owner"] == "alice"
            assert body["orders"] == [
                {"id": 1, "item": "book for alice", "total": "12.5000"},
                {"id": 2, "item": "pen", "total": "1.2500"},
            ]
            (q,) = p.queries
            assert q.token == token  # the user's own token reached the connector
            assert p.attestation_errors == []
            assert body["query_id"] == q.query_id


async def test_app_reports_a_typed_error(
    app_relay: WorkerRelay, idp: DevIdP, client: httpx.AsyncClient
) -> None:
    async def deny(p: Peer, q: events.Query) -> None:
        await p.error(q.stream_id, "policy.denied", "no role", q.query_id)

    assert app_relay.app_url is not None
    with trio.fail_after(20):
        async with peer(app_relay, handler=deny):
            response = await client.get(
                f"{app_relay.app_url}/api/orders",
                headers={"Authorization": f"Bearer {idp.mint(sub='mallory')}"},
            )
    assert response.status_code == 403
    assert json.loads(response.text)["error"] == "policy.denied"
