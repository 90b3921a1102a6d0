"""Fixtures for connector tests: real keys, a real dev IdP over HTTP, a scripted rogue relay."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgetds.devidp import DevIdP, open_dev_idp
from identity.keys import GeneratedKey, encode_public_key, generate_key_files, load_private_key
from tests.connector.rogue_relay import RogueRelay, open_rogue_relay
from tests.support.connector_stack import write_connector_config


def closed_port() -> int:
    """A loopback port nothing listens on (a database that is down)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Keys:
    connector: GeneratedKey
    relay: Ed25519PrivateKey

    @property
    def relay_public(self) -> str:
        return encode_public_key(self.relay)


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    return Keys(generate_key_files(tmp_path / "keys", "conn-1"), Ed25519PrivateKey.generate())


@pytest.fixture
async def idp(tmp_path: Path) -> AsyncIterator[DevIdP]:
    async with open_dev_idp(key_dir=tmp_path / "idp") as idp:
        yield idp


@pytest.fixture
async def rogue(keys: Keys) -> AsyncIterator[RogueRelay]:
    pub = load_private_key(keys.connector.private_path).public_key()
    async with open_rogue_relay(
        tunnel="demo", connector_id="conn-1", connector_public_key=pub, relay_key=keys.relay
    ) as relay:
        yield relay


def config_for(
    tmp_path: Path, keys: Keys, idp: DevIdP, relay_url: str, *, db_port: int, **kw: object
) -> Path:
    return write_connector_config(
        tmp_path / "connector",
        relay_urls=[relay_url],
        relay_public_keys=[keys.relay_public],
        private_key_file=keys.connector.private_path,
        issuer=idp.issuer,
        db_host="127.0.0.1",
        db_port=db_port,
        **kw,  # type: ignore[arg-type]
    )
