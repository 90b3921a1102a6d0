"""One identity floods the Python relay; another identity's query gets the next free slot
(tests/support/fairness.py says what is promised and asserted). Real connector, real tdslite."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import trio

from connector.config import load_config
from connector.runtime import open_connector
from edgetds.devidp import open_dev_idp
from tdslite import open_server
from tests.e2e.conftest import SETUP_SQL, TDSLITE_USERS, admin_batch, write_key
from tests.support import fairness
from tests.support.connector_stack import write_connector_config
from tests.support.relays import start_python_relay


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
            async with start_python_relay(
                tunnel="demo",
                connector_ids=["conn-1"],
                issuer=idp.issuer,
                limits=fairness.RELAY_LIMITS,
                max_queries_per_identity=fairness.PER_IDENTITY,
            ) as relay:
                path = write_connector_config(
                    tmp_path / "connector",
                    relay_urls=[relay.ws_url],
                    relay_public_keys=[relay.relay_public_key],
                    private_key_file=write_key(
                        tmp_path / "conn-1.key", relay.connector_keys["conn-1"]
                    ),
                    issuer=idp.issuer,
                    db_host=db.host,
                    db_port=db.port,
                    database=db.engine.database,
                    **fairness.CONNECTOR_OPTIONS,
                )

                async def state(http: httpx.AsyncClient) -> dict[str, int]:
                    stats = (await http.get(f"{relay.http_url}/v1/relay/stats")).json()
                    admission: dict[str, int] = stats["tunnels"]["demo"]["admission"]
                    return admission

                async with open_connector(load_config(path)) as connector:
                    await connector.wait_ready(1)
                    outcome = await fairness.flood_and_victim(
                        query_url=f"{relay.http_url}/v1/tunnels/demo/query",
                        idp=idp,
                        db=db,
                        state=state,
                    )
                    print(outcome)  # the figures (pytest -s shows them)
