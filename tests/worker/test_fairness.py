"""One identity floods the Worker relay (the tunnel's Durable Object under workerd); another
identity's query gets the next free slot (tests/support/fairness.py says what is promised and
asserted). Real connector, real tdslite."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import trio

from tests.support import fairness
from tests.support.worker_relay import open_worker_relay
from tests.worker.helpers import connector_config, query_url


@pytest.mark.timeout(240)
async def test_a_flooding_identity_cannot_starve_another(tmp_path: Path) -> None:
    with trio.fail_after(200):
        async with (
            fairness.idp_and_db(tmp_path) as (idp, db),
            open_worker_relay(
                tunnel="demo",
                connector_ids=["conn-1"],
                issuer=idp.issuer,
                limits=fairness.RELAY_LIMITS,
                tunnel_settings={"max_queries_per_identity": fairness.PER_IDENTITY},
            ) as relay,
        ):

            async def state(http: httpx.AsyncClient) -> dict[str, int]:
                admission: dict[str, int] = (await relay.do_state(http))["admission"]
                return admission

            path = connector_config(
                tmp_path / "connector", relay, issuer=idp.issuer, db=db,
                **fairness.CONNECTOR_OPTIONS,
            )  # fmt: skip
            await fairness.run_flood(path, query_url=query_url(relay), idp=idp, db=db, state=state)
