"""Size limits at the Python relay, before anything is signed or sent to the connector: a
statement longer than the connector's READY max_statement_bytes (UTF-8 bytes) is 413
request.too_large; more than 2,100 parameters, or params over max_param_bytes of canonical JSON,
is 400 request.invalid. The peer (the connector's side of the real protocol) never sees them.
"""

from __future__ import annotations

import httpx
import pytest
import trio
from _relay_helpers import bearer, peer, query_url

from edgetds.devidp import DevIdP
from relay.config import ConfigError, parse_limits
from tests.support.relays import TEST_LIMITS, RelayHandle, open_python_relay, statement


async def test_statements_over_the_announced_limit_are_413(
    relay: RelayHandle, idp: DevIdP, client: httpx.AsyncClient
) -> None:
    token = idp.mint(sub="alice")
    with trio.fail_after(10):
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
    assert [q.sql for q in p.queries] == [statement(1000)]  # the refused one never left the relay


async def test_a_connector_that_does_not_say_gets_the_256_kib_default(
    relay: RelayHandle, idp: DevIdP, client: httpx.AsyncClient
) -> None:
    with trio.fail_after(10):
        async with peer(relay) as p:  # READY with the default max_statement_bytes
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
    relay: RelayHandle,
    idp: DevIdP,
    client: httpx.AsyncClient,
    params: dict[str, object],
    status: int,
    words: str | None,
) -> None:
    with trio.fail_after(10):
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


def test_max_param_bytes_is_configurable() -> None:
    assert parse_limits({}).max_param_bytes == 262_144
    assert parse_limits({"max_param_bytes": 4096}).max_param_bytes == 4096
    with pytest.raises(ConfigError, match="max_param_bytes must be at least 1024"):
        parse_limits({"max_param_bytes": 10})


async def test_a_configured_max_param_bytes_applies(idp: DevIdP, client: httpx.AsyncClient) -> None:
    limits = {**TEST_LIMITS, "max_param_bytes": 2048}
    with trio.fail_after(15):
        async with open_python_relay(
            tunnel="demo", connector_ids=["conn-1"], issuer=idp.issuer, limits=limits
        ) as (relay, _running):
            async with peer(relay) as p:
                response = await client.post(
                    query_url(relay),
                    json={"sql": "select @x", "params": {"x": "y" * 2048}},
                    headers=bearer(idp.mint(sub="alice")),
                )
    assert response.status_code == 400
    assert "at most 2048" in response.json()["error"]["message"]
    assert p.queries == []
