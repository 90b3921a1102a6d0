"""Fair admission at the Worker relay's tunnel object, against a protocol peer: the same
scenario as the Python relay's (tests/support/fairness.py `relay_admission_scenario`)."""

from __future__ import annotations

import httpx
import trio

from edgetds.devidp import DevIdP
from tests.support import fairness
from tests.support.worker_relay import open_worker_relay
from tests.worker.helpers import peer, query_url


async def test_fair_admission_per_identity_and_per_tunnel(
    idp: DevIdP, client: httpx.AsyncClient
) -> None:
    async with open_worker_relay(
        tunnel="demo",
        connector_ids=["conn-1"],
        issuer=idp.issuer,
        tunnel_settings={"max_queries_per_identity": fairness.SMALL_CAP},
    ) as relay:

        async def state(http: httpx.AsyncClient) -> dict[str, int]:
            admission: dict[str, int] = (await relay.do_state(http))["admission"]
            return admission

        with trio.fail_after(60):
            await fairness.relay_admission_scenario(
                client=client,
                url=query_url(relay),
                idp=idp,
                peer=lambda **options: peer(relay, **options),
                state=state,
            )
