"""The relay Worker as its developers run it: ``wrangler dev`` (Miniflare on wrangler's own
workerd) from relay/worker/wrangler.toml, the file that deploys, with only its bindings overridden
by an env file (tests/support/wrangler.py). The Durable Object binding, the SQLite migration, the
compatibility date and the bundling are wrangler's, not the capnp template's; a protocol peer
with a registered key connects, checks the relay-signed HELLO, and serves a query a dev-IdP user
sends."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
import trio

from edgetds.devidp import DevIdP
from tests.support.protocol_peer import open_peer
from tests.support.relays import RelayHandle
from tests.support.wrangler import open_wrangler_dev
from tests.worker.helpers import CONNECTORS, TUNNEL, bearer, ndjson


@pytest.fixture
async def relay(idp: DevIdP) -> AsyncIterator[RelayHandle]:
    with trio.fail_after(60):
        async with open_wrangler_dev(
            tunnel=TUNNEL, connector_ids=CONNECTORS, issuer=idp.issuer
        ) as relay:
            yield relay


async def test_wrangler_dev_serves_healthz_and_reads_its_bindings(
    relay: RelayHandle, client: httpx.AsyncClient
) -> None:
    health = await client.get(f"{relay.http_url}/healthz")
    # Past the config (a binding it cannot read is 500 internal): the missing token is refused.
    status = await client.get(f"{relay.http_url}/v1/tunnels/{TUNNEL}/status")
    assert health.status_code == 200
    assert health.json() == {"status": "ok"}
    assert status.status_code == 401, status.text
    assert status.json()["error"]["code"] == "auth.missing_token"


async def test_wrangler_dev_relays_a_query_to_a_connector(
    relay: RelayHandle, idp: DevIdP, client: httpx.AsyncClient
) -> None:
    key = relay.connector_keys["conn-1"]
    with trio.fail_after(30):
        async with open_peer(relay.ws_url, TUNNEL, "conn-1", key, relay.relay_public_key) as p:
            response = await client.post(
                f"{relay.http_url}/v1/tunnels/{TUNNEL}/query",
                json={"sql": "select n from t where n < @k", "params": {"k": 3}},
                headers=bearer(idp.mint(sub="alice")),
            )
    assert response.status_code == 200, response.text
    lines = ndjson(response.text)
    assert lines[0]["columns"][0]["name"] == "n"
    assert lines[1:4] == [[0], [1], [2]]
    assert lines[4]["done"]["rows"] == 3
    assert p.attestation_errors == []
    assert [q.sql for q in p.queries] == ["select n from t where n < @k"]
