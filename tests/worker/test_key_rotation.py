"""A connector key rotation on the Worker relay (SPEC.md 8.2), with REAL connectors and tdslite.

TUNNELS registers two keys for one connector id, ``[new, old]`` (a rotation's overlap window):
a connector still on the old key and one already on the new key are both accepted and serve
queries under the same id, while a connector holding a third, unregistered key is refused with
``auth.invalid_token`` before the upgrade and serves nothing.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from connector.config import load_config
from connector.runtime import Connector, open_connector
from edgetds.devidp import DevIdP
from tdslite import TdsServer
from tests.support.waiting import eventually
from tests.support.worker_relay import WorkerRelay, open_worker_relay, public_key_text
from tests.worker.helpers import bearer, connector_config, idp_and_db, ndjson, query_url

CONNECTOR_ID = "conn-1"


@asynccontextmanager
async def connector_with(
    key: Ed25519PrivateKey,
    name: str,
    *,
    tmp_path: Path,
    relay: WorkerRelay,
    idp: DevIdP,
    db: TdsServer,
) -> AsyncIterator[Connector]:
    """A real connector for ``conn-1`` signing its tokens with ``key`` (its own config dir)."""
    path = connector_config(tmp_path / name, relay, issuer=idp.issuer, db=db, key=key)
    async with open_connector(load_config(path)) as connector:
        yield connector


async def count_notes(http: httpx.AsyncClient, relay: WorkerRelay, idp: DevIdP) -> httpx.Response:
    token = idp.mint(sub="alice", groups=["analysts"])
    return await http.post(
        query_url(relay), json={"sql": "SELECT COUNT(*) AS c FROM notes"}, headers=bearer(token)
    )


def refusals(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The connectors' logged dial refusals (HTTP 401 with the relay's error body)."""
    return [r.getMessage() for r in caplog.records if "refused the connection" in r.getMessage()]


@pytest.mark.timeout(90)
async def test_both_registered_keys_serve_and_a_third_key_is_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="edgetds.connector")
    new_key, rogue_key = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    with trio.fail_after(75):
        async with idp_and_db(tmp_path) as (idp, db):
            async with (
                open_worker_relay(
                    tunnel="demo",
                    connector_ids=[CONNECTOR_ID],
                    issuer=idp.issuer,
                    rotation={CONNECTOR_ID: [public_key_text(new_key)]},
                ) as relay,
                httpx.AsyncClient(timeout=20) as http,
            ):
                old_key = relay.handle.connector_keys[CONNECTOR_ID]  # registered second
                parts = {"tmp_path": tmp_path, "relay": relay, "idp": idp, "db": db}

                # 1. the connector still on the OLD key serves
                async with connector_with(old_key, "old", **parts) as old:
                    await old.wait_ready(old.config.tunnel.ha_connections)
                    response = await count_notes(http, relay, idp)
                    assert response.status_code == 200, response.text
                    assert ndjson(response.text)[1] == [2]
                    assert old.statistics().outcomes == {"ok": 1}

                    # 2. the same id on the NEW key connects alongside it, then serves alone
                    async with connector_with(new_key, "new", **parts) as new:
                        await new.wait_ready(new.config.tunnel.ha_connections)
                        state = await relay.do_state(http)
                        assert state["connections"] == 2 * new.config.tunnel.ha_connections
                        await old.shutdown()
                        response = await count_notes(http, relay, idp)
                        assert response.status_code == 200, response.text
                        assert ndjson(response.text)[1] == [2]
                        assert new.statistics().outcomes == {"ok": 1}
                        assert old.statistics().outcomes == {"ok": 1}

                        # 3. a third key for the same id is refused before the upgrade
                        async with connector_with(rogue_key, "rogue", **parts) as rogue:
                            await eventually(lambda: len(refusals(caplog)) >= 2)
                            await new.shutdown()
                            response = await count_notes(http, relay, idp)
                            assert response.status_code == 503, response.text
                            assert response.json()["error"]["code"] == "tunnel.no_connector"
                            assert rogue.ready_links == 0
                            assert rogue.statistics().outcomes == {}
                            assert (await relay.do_state(http))["connections"] == 0
    assert refusals(caplog), "the rogue connector was never refused"
    for message in refusals(caplog):
        assert "HTTP 401" in message, message
        assert "auth.invalid_token" in message, message
    assert "any of its 2 registered keys" in refusals(caplog)[0]
