"""Fixtures for the Worker relay tests: a dev IdP and the relay Worker under real workerd."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from edgetds.devidp import DevIdP, open_dev_idp
from identity.oidc import default_verify_context
from tests.support.node import NODE
from tests.support.worker_relay import WORKERD, WorkerRelay, open_worker_relay
from tests.worker.helpers import CONNECTORS, TUNNEL

if not WORKERD.exists() or not NODE.exists():  # pragma: no cover
    pytest.fail(
        "workerd/node missing: run `npm ci` at the repo root (make node-deps)", pytrace=False
    )


@pytest.fixture
async def idp() -> AsyncIterator[DevIdP]:
    async with open_dev_idp() as idp:
        yield idp


@pytest.fixture
async def relay(idp: DevIdP) -> AsyncIterator[WorkerRelay]:
    async with open_worker_relay(tunnel=TUNNEL, connector_ids=CONNECTORS, issuer=idp.issuer) as r:
        yield r


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(verify=default_verify_context(), timeout=10) as client:
        yield client
