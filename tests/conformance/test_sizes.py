"""Conformance: size limits at both relays (Python and Worker under workerd), before anything is
signed or sent to the connector. A statement longer than the connector's READY
max_statement_bytes (UTF-8 bytes; 256 KiB when READY does not say) is 413 request.too_large;
more than 2,100 parameters, or params over the relay's max_param_bytes of canonical JSON, is 400
request.invalid. A body with a duplicate member name, or a number beyond a double's range, is 400
request.invalid at both relays too (JavaScript's JSON.parse and Python's json keep the last
duplicate silently, and read 1e400 as Infinity or inf: the relays must not read one body two
ways). The connector's side is a protocol peer (the real protocol/, checking
HELLO and attestations), so each test also sees exactly what reached the connector: nothing
refused."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any

import httpx
import pytest
import trio

from edgetds.devidp import DevIdP, open_dev_idp
from tests.support.conformance import RELAYS
from tests.support.protocol_peer import Peer, open_peer
from tests.support.relays import TEST_LIMITS, RelayHandle, statement
from tests.support.worker_relay import TEST_LIMITS as WORKER_TEST_LIMITS

BASE_LIMITS: dict[str, Mapping[str, Any]] = {"python": TEST_LIMITS, "worker": WORKER_TEST_LIMITS}


@pytest.fixture
async def idp() -> AsyncIterator[DevIdP]:
    async with open_dev_idp() as idp:
        yield idp


def start(kind: str, idp: DevIdP, **limits: Any) -> AbstractAsyncContextManager[RelayHandle]:
    return RELAYS[kind](
        tunnel="demo",
        connector_ids=["conn-1"],
        issuer=idp.issuer,
        limits={**BASE_LIMITS[kind], **limits},
    )


@pytest.fixture(params=sorted(RELAYS))
async def relay(request: pytest.FixtureRequest, idp: DevIdP) -> AsyncIterator[RelayHandle]:
    with trio.fail_after(60):
        async with start(request.param, idp) as relay:
            yield relay


def peer(relay: RelayHandle, **options: Any) -> AbstractAsyncContextManager[Peer]:
    key = relay.connector_keys["conn-1"]
    return open_peer(relay.ws_url, relay.tunnel, "conn-1", key, relay.relay_public_key, **options)


def raw_post(relay: RelayHandle, idp: DevIdP) -> tuple[str, dict[str, str]]:
    """The /query URL and the headers of a JSON body sent as bytes (alice's token)."""
    url = f"{relay.http_url}/v1/tunnels/{relay.tunnel}/query"
    headers = {
        "Authorization": f"Bearer {idp.mint(sub='alice')}",
        "Content-Type": "application/json",
    }
    return url, headers


async def post(relay: RelayHandle, idp: DevIdP, body: dict[str, Any]) -> httpx.Response:
    url = f"{relay.http_url}/v1/tunnels/{relay.tunnel}/query"
    headers = {"Authorization": f"Bearer {idp.mint(sub='alice')}"}
    async with httpx.AsyncClient(timeout=20) as client:
        return await client.post(url, json=body, headers=headers)


async def refused_then_served(relay: RelayHandle, idp: DevIdP, body: bytes) -> dict[str, Any]:
    """Post ``body``: it must get 400 request.invalid with no QUERY made, and the next query
    on the same link must still be served. Returns the error object."""
    url, headers = raw_post(relay, idp)
    with trio.fail_after(30):
        async with peer(relay) as p, httpx.AsyncClient(timeout=20) as client:
            response = await client.post(url, content=body, headers=headers)
            assert response.status_code == 400, response.text
            error: dict[str, Any] = response.json()["error"]
            assert error["code"] == "request.invalid", error
            assert p.queries == []
            after = await client.post(url, json={"sql": "select @x", "params": {"x": 1}},
                                      headers=headers)  # fmt: skip
            assert after.status_code == 200, after.text
            assert len(p.queries) == 1
    return error


async def test_statements_over_the_announced_limit_are_413(relay: RelayHandle, idp: DevIdP) -> None:
    with trio.fail_after(20):
        async with peer(relay, max_statement_bytes=1000) as p:
            over = await post(relay, idp, {"sql": statement(1001)})
            at = await post(relay, idp, {"sql": statement(1000)})
    assert over.status_code == 413
    error = over.json()["error"]
    assert error["code"] == "request.too_large"
    assert "1001 bytes" in error["message"]
    assert "up to 1000" in error["message"]
    assert "é" not in error["message"]
    assert at.status_code == 200, at.text
    assert [q.sql for q in p.queries] == [statement(1000)]  # the refused one never left the relay


async def test_a_connector_that_does_not_say_gets_the_256_kib_default(
    relay: RelayHandle, idp: DevIdP
) -> None:
    with trio.fail_after(20):
        async with peer(relay) as p:  # READY with the default max_statement_bytes
            over = await post(relay, idp, {"sql": statement(256 * 1024 + 1)})
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
    relay: RelayHandle, idp: DevIdP, params: dict[str, object], status: int, words: str | None
) -> None:
    with trio.fail_after(20):
        async with peer(relay) as p:
            response = await post(relay, idp, {"sql": "select 1", "params": params})
    assert response.status_code == status, response.text
    if words is None:
        assert len(p.queries) == 1
        return
    assert response.json()["error"]["code"] == "request.invalid"
    assert words in response.json()["error"]["message"]
    assert p.queries == []


@pytest.mark.parametrize("kind", sorted(RELAYS))
async def test_a_configured_max_param_bytes_applies(kind: str, idp: DevIdP) -> None:
    with trio.fail_after(60):
        async with start(kind, idp, max_param_bytes=2048) as relay, peer(relay) as p:
            response = await post(relay, idp, {"sql": "select @x", "params": {"x": "y" * 2048}})
    assert response.status_code == 400
    assert "at most 2048" in response.json()["error"]["message"]
    assert p.queries == []


@pytest.mark.parametrize(
    "body",
    [
        b'{"sql": "select 1", "sql": "select 2"}',
        b'{"sql": "select @a", "params": {"a": 1, "a": 2}}',
        b'{"sql": "select @a", "params": {"a": {"type": "int", "value": 1, "value": 2}}}',
        b'{"sql": "select 1", "s\\u0071l": "select 2"}',
    ],
    ids=["sql", "params", "typed-param", "escaped-name"],
)
async def test_duplicate_member_names_are_refused_before_the_connector(
    relay: RelayHandle, idp: DevIdP, body: bytes
) -> None:
    error = await refused_then_served(relay, idp, body)
    assert "duplicate" in error["message"]


@pytest.mark.parametrize(
    "number",
    [b"1e400", b"-1E400", b"2" + b"0" * 399, b"1.7976931348623159e308"],
    ids=["exponent", "negative", "integer", "rounds-up"],
)
async def test_numbers_beyond_a_double_are_refused_and_the_link_keeps_serving(
    relay: RelayHandle, idp: DevIdP, number: bytes
) -> None:
    """JavaScript reads each as Infinity, Python as inf (or the integer exactly): a body the two
    would read two ways is refused before anything is signed, bare or as a typed value, and the
    connector's connection keeps serving (an infinite float in a QUERY would fail its encoding
    inside the relay's protocol state)."""
    url, headers = raw_post(relay, idp)
    bodies = [
        b'{"sql": "select @x", "params": {"x": ' + number + b"}}",
        b'{"sql": "select @x", "params": {"x": {"type": "float", "value": ' + number + b"}}}",
    ]
    with trio.fail_after(30):
        async with peer(relay) as p, httpx.AsyncClient(timeout=20) as client:
            for body in bodies:
                response = await client.post(url, content=body, headers=headers)
                assert response.status_code == 400, response.text
                assert response.json()["error"]["code"] == "request.invalid"
            assert p.queries == []
            after = await client.post(
                url, json={"sql": "select @x", "params": {"x": 1.5e300}}, headers=headers
            )
            assert after.status_code == 200, after.text
            assert len(p.queries) == 1


@pytest.mark.parametrize(
    "value",
    [
        b"[" * 2000 + b"]" * 2000,
        b'{"b":' * 2000 + b"1" + b"}" * 2000,
        b"[" * 400 + b"]" * 400,
        b"[1, 2]",
        b'{"type": "int", "value": [1]}',
        b'{"type": "int", "value": 1, "x": 2}',
        b'{"type": "no_such_type", "value": 1}',
        b"9007199254740992",
        b'{"type": "bigint", "value": -9007199254740992}',
    ],
    ids=["deep-list", "deep-object", "list-400", "list", "typed-list", "typed-extra",
         "typed-unknown", "beyond-2^53", "typed-beyond-2^53"],
)  # fmt: skip
async def test_a_parameter_that_is_no_parameter_value_is_refused_before_the_connector(
    relay: RelayHandle, idp: DevIdP, value: bytes
) -> None:
    """A parameter is a JSON scalar or {"type", "value"} with a scalar value (SPEC 12.2), an
    integer within +-(2^53 - 1): anything else is refused with 400 before a QUERY is made, so a
    QUERY never carries what the connector's parser cannot read (nesting deeper than it supports
    would make the QUERY a protocol error and end the connection, and every query on it)."""
    body = b'{"sql": "select @x", "params": {"x": ' + value + b"}}"
    error = await refused_then_served(relay, idp, body)
    assert "x" in error["message"] or "nested" in error["message"], error


@pytest.mark.parametrize("kind", sorted(RELAYS))
async def test_a_statement_over_the_limit_does_not_wait_for_a_slot(kind: str, idp: DevIdP) -> None:
    gate = trio.Event()

    async def hold(p: Any, q: Any) -> None:
        await gate.wait()
        await p.done(q.stream_id, rows=0, query_id=q.query_id)

    # the tunnel is full (one stream, held) and a query would wait up to 60 s for a slot: one no
    # connection accepts is refused before admission, well inside this test's 30 s
    with trio.fail_after(30):
        async with (
            start(kind, idp, admission_wait_ms=60_000) as relay,
            peer(relay, handler=hold, max_streams=1, max_statement_bytes=1000) as p,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(post, relay, idp, {"sql": "select 1"})
            await p.wait_query(1)
            over = await post(relay, idp, {"sql": statement(1001)})
            gate.set()
    assert over.status_code == 413, over.text
    assert over.json()["error"]["code"] == "request.too_large"
    assert [q.sql for q in p.queries] == ["select 1"]
