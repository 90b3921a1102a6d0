"""One identity floods the Python relay; another identity's query gets the next free slot
(tests/support/fairness.py says what is promised and asserted). Real connector, real tdslite."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import trio

from tests.support import fairness
from tests.support.e2e_stack import write_conn1_config
from tests.support.relays import start_python_relay


@pytest.mark.timeout(240)
async def test_a_flooding_identity_cannot_starve_another(tmp_path: Path) -> None:
    with trio.fail_after(200):
        async with (
            fairness.idp_and_db(tmp_path) as (idp, db),
            start_python_relay(
                tunnel="demo",
                connector_ids=["conn-1"],
                issuer=idp.issuer,
                limits=fairness.RELAY_LIMITS,
                max_queries_per_identity=fairness.PER_IDENTITY,
            ) as relay,
        ):

            async def state(http: httpx.AsyncClient) -> dict[str, int]:
                stats = (await http.get(f"{relay.http_url}/v1/relay/stats")).json()
                admission: dict[str, int] = stats["tunnels"]["demo"]["admission"]
                return admission

            path = write_conn1_config(
                tmp_path,
                relay,
                idp,
                db_host=db.host,
                db_port=db.port,
                database=db.engine.database,
                **fairness.CONNECTOR_OPTIONS,
            )
            await fairness.run_flood(
                path, query_url=f"{relay.http_url}/v1/tunnels/demo/query", idp=idp, db=db,
                state=state,
            )  # fmt: skip
