"""Fixtures for connector tests: real keys, a real dev IdP over HTTP, a scripted rogue relay, a
count of worker-thread calls, tdslite with the end-to-end tests' logins and table."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import tdslite
from connector._thread import WorkerThread
from edgetds.devidp import DevIdP, open_dev_idp
from identity.keys import generate_key_files, load_private_key
from tests.connector.rogue_relay import RogueRelay, open_rogue_relay
from tests.support.connector_keys import Keys
from tests.support.e2e_stack import SETUP_SQL, TDSLITE_USERS, admin_batch


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


@pytest.fixture
def worker_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A count of worker-thread calls (each goes on to the real `WorkerThread.call`)."""
    calls: list[int] = []
    real = WorkerThread.call

    async def counted(self: WorkerThread, fn: Any, *, checkpoint: bool = True) -> Any:
        calls.append(1)
        return await real(self, fn, checkpoint=checkpoint)

    monkeypatch.setattr(WorkerThread, "call", counted)
    return calls


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Any]:
    """tdslite in memory, the end-to-end tests' logins, SETUP_SQL run (a test module may have a
    ``server`` of its own)."""
    users = tmp_path / "users.toml"
    users.write_text(TDSLITE_USERS)
    async with tdslite.open_server(users=users, db=":memory:") as server:
        await trio.to_thread.run_sync(admin_batch, server, SETUP_SQL)
        yield server
