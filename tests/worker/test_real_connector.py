"""The Durable Object lifecycle with the REAL connector (connector/) and tdslite behind it:
hibernation while the connector stays connected (its WebSocket pings are answered by the runtime
without waking the object), and a reset (ctx.abort()) that the connector recovers from by itself."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import trio

from connector.config import load_config
from connector.runtime import Connector, open_connector
from edgetds.devidp import DevIdP
from tdslite import TdsServer
from tests.support.waiting import eventually
from tests.support.worker_relay import WorkerRelay, idle_until_hibernated, open_worker_relay
from tests.worker.helpers import bearer, connector_config, idp_and_db, ndjson, query_url


@dataclass
class RealStack:
    idp: DevIdP
    relay: WorkerRelay
    connector: Connector
    http: httpx.AsyncClient
    db: TdsServer
    #: the connector's directory (connector.toml, audit.jsonl)
    directory: Path

    async def count_notes(self) -> httpx.Response:
        token = self.idp.mint(sub="alice", groups=["analysts"])
        return await self.http.post(
            query_url(self.relay),
            json={"sql": "SELECT COUNT(*) AS c FROM notes"},
            headers=bearer(token),
        )


@asynccontextmanager
async def real_stack(tmp_path: Path) -> AsyncIterator[RealStack]:
    async with idp_and_db(tmp_path) as (idp, db):
        async with open_worker_relay(
            tunnel="demo", connector_ids=["conn-1"], issuer=idp.issuer
        ) as relay:
            directory = tmp_path / "connector"
            path = connector_config(directory, relay, issuer=idp.issuer, db=db)
            async with (
                open_connector(load_config(path)) as connector,
                httpx.AsyncClient(timeout=20) as http,
            ):
                await connector.wait_ready(connector.config.tunnel.ha_connections)
                yield RealStack(idp, relay, connector, http, db, directory)


@pytest.mark.timeout(90)
async def test_object_hibernates_while_the_real_connector_stays_connected(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with real_stack(tmp_path) as stack:
            response = await stack.count_notes()
            assert ndjson(response.text)[1] == [2]
            before = await stack.relay.do_state(stack.http)
            await idle_until_hibernated()
            response = await stack.count_notes()
            assert response.status_code == 200, response.text
            assert ndjson(response.text)[1] == [2]
            after = await stack.relay.do_state(stack.http)
            assert after["instance"] != before["instance"], "the object did not hibernate"
            assert after["connections"] == before["connections"] == 2
            assert stack.connector.reconnects == 0  # the sockets survived hibernation


async def test_reset_and_the_real_connector_reconnects_by_itself(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with real_stack(tmp_path) as stack:
            assert (await stack.count_notes()).status_code == 200
            await stack.http.post(stack.relay.hook_url("abort"))
            started = trio.current_time()
            answers: list[httpx.Response] = []

            async def answered() -> bool:
                answers.append(response := await stack.count_notes())
                if response.status_code != 200:
                    assert response.json()["error"]["code"] == "tunnel.no_connector"
                return response.status_code == 200

            await eventually(answered)
            response = answers[-1]
            recovered_after = trio.current_time() - started
            assert ndjson(response.text)[1] == [2]
            assert stack.connector.reconnects >= 1
            assert recovered_after < 10
