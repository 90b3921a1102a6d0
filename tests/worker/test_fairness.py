"""One identity floods the Worker relay (the tunnel's Durable Object under workerd); another
identity's query gets the next free slot (tests/support/fairness.py says what is promised and
asserted). Real connector, real tdslite."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import trio

from connector.config import load_config
from connector.runtime import open_connector
from edgetds.devidp import open_dev_idp
from tdslite import open_server
from tests.e2e.conftest import SETUP_SQL, TDSLITE_USERS, admin_batch
from tests.support import fairness
from tests.support.worker_relay import open_worker_relay
from tests.worker.helpers import connector_config, query_url


@pytest.mark.timeout(240)
async def test_a_flooding_identity_cannot_starve_another(tmp_path: Path) -> None:
    users = tmp_path / "users.toml"
    users.write_text(TDSLITE_USERS)
    with trio.fail_after(200):
        async with (
            open_dev_idp(key_dir=tmp_path / "idp") as idp,
            open_server(users=users, db=":memory:") as db,
        ):
            await trio.to_thread.run_sync(admin_batch, db, SETUP_SQL)
            async with open_worker_relay(
                tunnel="demo",
                connector_ids=["conn-1"],
                issuer=idp.issuer,
                limits=fairness.RELAY_LIMITS,
                tunnel_settings={"max_queries_per_identity": fairness.PER_IDENTITY},
            ) as relay:
                path = connector_config(
                    tmp_path / "connector", relay, issuer=idp.issuer, db=db,
                    **fairness.CONNECTOR_OPTIONS,
                )  # fmt: skip

                async def state(http: httpx.AsyncClient) -> dict[str, int]:
                    admission: dict[str, int] = (await relay.do_state(http))["admission"]
                    return admission

                async with open_connector(load_config(path)) as connector:
                    await connector.wait_ready(1)
                    outcome = await fairness.flood_and_victim(
                        query_url=query_url(relay), idp=idp, db=db, state=state
                    )
                    print(outcome)  # the figures (pytest -s shows them)
