"""Size limits at the Worker relay under workerd (the twin of tests/relay/test_relay_sizes.py):
a statement longer than the connector's READY max_statement_bytes is 413 request.too_large; more
than 2,100 parameters, or params over max_param_bytes of canonical JSON, is 400 request.invalid.
The peer (the connector's side of the real protocol) never sees them."""

from __future__ import annotations

import httpx
import pytest
import trio

from edgetds.devidp import DevIdP
from tests.support.relays import statement
from tests.support.worker_relay import TEST_LIMITS, WorkerRelay, open_worker_relay
from tests.worker.helpers import bearer, peer, query_url


async def test_statements_over_the_announced_limit_are_413(
    relay: WorkerRelay, idp: DevIdP, client: httpx.AsyncClient
) -> None:
    token = idp.mint(sub="alice")
    with trio.fail_after(20):
        async with peer(relay, max_statement_bytes=1000) as p:
            over = await client.post(
                query_url(relay), json={"sql": statement(1001)}, headers=bearer(token)
            )
            at = await client.post(
                query_url(relay), json={"sql": statement(1000)}, headers=bearer(token)
            )
    assert over.status_code == 413
    error = over.json()["error"]
    assert error["code"] == "request.too_large"
    assert "1001 bytes" in error["message"]
    assert "up to 1000" in error["message"]
    assert "é" not in error["message"]
    assert at.status_code == 200, at.text
    assert [q.sql for q in p.queries] == [statement(1000)]


async def test_a_connector_that_does_not_say_gets_the_256_kib_default(
    relay: WorkerRelay, idp: DevIdP, client: httpx.AsyncClient
) -> None:
    with trio.fail_after(20):
        async with peer(relay) as p:
            over = await client.post(
                query_url(relay),
                json={"sql": statement(256 * 1024 + 1)},
                headers=bearer(idp.mint(sub="alice")),
            )
    assert over.status_code == 413
    assert over.json()["error"]["code"] == "request.too_large"
    assert p.queries == []


@pytest.mark.parametrize(
    ("params", "status", "words"),
    [
        (
            {f"p{i}": i for i in range(2101)},
            400,
            "2101 parameters; SQL Server accepts at most 2100",
        ),
        ({"blob": "x" * (256 * 1024)}, 400, "this relay accepts at most 262144"),
        ({f"p{i}": i for i in range(2100)}, 200, None),
    ],
    ids=["2101-params", "params-over-262144-bytes", "2100-params"],
)
async def test_parameter_caps_refuse_before_the_connector(
    relay: WorkerRelay,
    idp: DevIdP,
    client: httpx.AsyncClient,
    params: dict[str, object],
    status: int,
    words: str | None,
) -> None:
    with trio.fail_after(20):
        async with peer(relay) as p:
            response = await client.post(
                query_url(relay),
                json={"sql": "select 1", "params": params},
                headers=bearer(idp.mint(sub="alice")),
            )
    assert response.status_code == status, response.text
    if words is None:
        assert len(p.queries) == 1
        return
    assert response.json()["error"]["code"] == "request.invalid"
    assert words in response.json()["error"]["message"]
    assert p.queries == []


async def test_a_configured_max_param_bytes_applies(idp: DevIdP, client: httpx.AsyncClient) -> None:
    limits = {**TEST_LIMITS, "max_param_bytes": 2048}
    with trio.fail_after(30):
        async with open_worker_relay(
            tunnel="demo", connector_ids=["conn-1"], issuer=idp.issuer, limits=limits
        ) as relay:
            async with peer(relay) as p:
                response = await client.post(
                    query_url(relay),
                    json={"sql": "select @x", "params": {"x": "y" * 2048}},
                    headers=bearer(idp.mint(sub="alice")),
                )
    assert response.status_code == 400
    assert "at most 2048" in response.json()["error"]["message"]
    assert p.queries == []
