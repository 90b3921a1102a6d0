"""Fixtures for the Python relay tests: a dev IdP, the relay in-process, an HTTP client.

The connector side is `tests.support.protocol_peer`: a peer that speaks the real protocol/ over
websockets.trio (the other end of the wire, not a mock of the relay).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from edgetds.devidp import DevIdP, open_dev_idp
from identity.oidc import default_verify_context
from relay.server import RunningRelay
from tests.support.relays import RelayHandle, open_python_relay

TUNNEL = "demo"
CONNECTORS = ("conn-1", "conn-2")


@pytest.fixture
async def idp() -> AsyncIterator[DevIdP]:
    async with open_dev_idp() as idp:
        yield idp


@pytest.fixture
async def relay_pair(idp: DevIdP) -> AsyncIterator[tuple[RelayHandle, RunningRelay]]:
    # Default test limits (tests.support.relays.TEST_LIMITS): refusal tests share one address.
    async with open_python_relay(
        tunnel=TUNNEL, connector_ids=CONNECTORS, issuer=idp.issuer
    ) as pair:
        yield pair


@pytest.fixture
def relay(relay_pair: tuple[RelayHandle, RunningRelay]) -> RelayHandle:
    return relay_pair[0]


@pytest.fixture
def running(relay_pair: tuple[RelayHandle, RunningRelay]) -> RunningRelay:
    return relay_pair[1]


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(verify=default_verify_context(), timeout=10) as client:
        yield client
