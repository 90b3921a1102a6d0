"""Conformance: ``GET /healthz`` at both relays (Python and Worker under workerd) is the same
liveness contract: 200 ``{"status": "ok"}`` as JSON, HEAD answered too, any other method 405
``request.invalid`` with ``Allow: GET``. Load balancers and uptime checks probe either relay the
same way; the answer needs no credential, no tunnel and no connector."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
import trio

from edgetds.devidp import DevIdP, open_dev_idp
from tests.support.conformance import RELAYS
from tests.support.relays import RelayHandle


@pytest.fixture(params=sorted(RELAYS))
async def relay(request: pytest.FixtureRequest) -> AsyncIterator[RelayHandle]:
    idp: DevIdP
    with trio.fail_after(60):
        async with (
            open_dev_idp() as idp,
            RELAYS[request.param](
                tunnel="demo", connector_ids=["conn-1"], issuer=idp.issuer
            ) as relay,
        ):
            yield relay


async def test_healthz_answers_ok_without_credentials(relay: RelayHandle) -> None:
    async with httpx.AsyncClient(timeout=20) as client:
        response = await client.get(f"{relay.http_url}/healthz")
        head = await client.head(f"{relay.http_url}/healthz")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"status": "ok"}
    assert head.status_code == 200


async def test_healthz_refuses_other_methods_with_405(relay: RelayHandle) -> None:
    async with httpx.AsyncClient(timeout=20) as client:
        response = await client.post(f"{relay.http_url}/healthz")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET"
    assert response.json()["error"]["code"] == "request.invalid"
