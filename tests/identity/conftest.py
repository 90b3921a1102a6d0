"""Fixtures for token verification tests: real dev IdPs on 127.0.0.1, real keys, real tokens."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from edgetds.devidp import DevIdP, open_dev_idp
from identity.oidc import IssuerConfig, TokenVerifier


@pytest.fixture
async def idp() -> AsyncIterator[DevIdP]:
    async with open_dev_idp() as served:
        yield served


@pytest.fixture
async def other_idp() -> AsyncIterator[DevIdP]:
    async with open_dev_idp() as served:
        yield served


@pytest.fixture
async def verifier(idp: DevIdP) -> AsyncIterator[TokenVerifier]:
    cfg = IssuerConfig(issuer=idp.issuer, audiences=("edgetds",))
    async with TokenVerifier([cfg], min_refresh_interval_s=30.0) as v:
        yield v
