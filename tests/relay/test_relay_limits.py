"""Edge protections: failed-auth rate limit per address, query rate per identity, stats."""

from __future__ import annotations

import hashlib
import time
from functools import partial
from typing import Any

import httpx
import pytest
import trio

from edgetds.devidp import DevIdP
from protocol import SUBPROTOCOL, make_connector_token
from relay.app import RelayApp
from relay.limits import RateLimiter, RefusalCounters, retry_after_header
from tests.relay._relay_helpers import bearer, peer, query_url
from tests.support import fairness
from tests.support.relays import TEST_LIMITS, RelayHandle, open_python_relay, relay_config


async def test_failed_authentications_are_rate_limited_per_address(
    idp: DevIdP, client: httpx.AsyncClient
) -> None:
    limits = {"auth_failure_burst": 3, "auth_failures_per_second": 0.2}
    async with open_python_relay(
        tunnel="demo", connector_ids=["conn-1"], issuer=idp.issuer, limits=limits
    ) as (relay, running):
        with trio.fail_after(10):
            expired = bearer(idp.mint(sub="mallory", expires_in=-120))
            codes = []
            for _ in range(4):
                response = await client.post(
                    query_url(relay), json={"sql": "select 1"}, headers=expired
                )
                codes.append((response.status_code, response.json()["error"]["code"]))
            assert codes == [(401, "auth.expired")] * 3 + [(429, "limits.rate_limited")]
            assert int(response.headers["retry-after"]) >= 1
            # Now even a good token from this address is refused without any token work ...
            fetches = dict(idp.requests)
            good = await client.post(
                query_url(relay), json={"sql": "select 1"}, headers=bearer(idp.mint(sub="alice"))
            )
            assert good.status_code == 429
            assert dict(idp.requests) == fetches
            # ... and so is a connector upgrade.
            from websockets.exceptions import InvalidStatus
            from websockets.trio.client import connect

            token = make_connector_token(
                relay.connector_keys["conn-1"],
                connector_id="conn-1",
                tunnel="demo",
                now=int(time.time()),
            )
            with pytest.raises(InvalidStatus) as info:
                async with connect(
                    f"{relay.ws_url}/v1/tunnels/demo/connect",
                    subprotocols=[SUBPROTOCOL],  # type: ignore[list-item]
                    additional_headers=bearer(token),
                ):
                    pass  # pragma: no cover
            assert info.value.response.status_code == 429
        counts = running.app.counters.refused
        assert counts["auth.expired"] == 3
        assert counts["limits.rate_limited"] == 3


async def test_queries_are_rate_limited_per_identity(
    idp: DevIdP, client: httpx.AsyncClient
) -> None:
    limits = {"query_burst": 2, "queries_per_second": 0.1}
    async with open_python_relay(
        tunnel="demo", connector_ids=["conn-1"], issuer=idp.issuer, limits=limits
    ) as (relay, running):
        with trio.fail_after(10):
            async with peer(relay) as p:
                alice = bearer(idp.mint(sub="alice"))
                statuses = []
                for _ in range(3):
                    response = await client.post(
                        query_url(relay), json={"sql": "select 1"}, headers=alice
                    )
                    statuses.append(response.status_code)
                assert statuses == [200, 200, 429]
                error = response.json()["error"]
                assert error["code"] == "limits.rate_limited"
                assert int(response.headers["retry-after"]) >= 1
                # Another identity is not affected; alice's own new token is (same subject).
                bob = await client.post(
                    query_url(relay), json={"sql": "select 1"}, headers=bearer(idp.mint(sub="bob"))
                )
                assert bob.status_code == 200
                again = await client.post(
                    query_url(relay),
                    json={"sql": "select 1"},
                    headers=bearer(idp.mint(sub="alice")),
                )
                assert again.status_code == 429
        assert len(p.queries) == 3
        assert running.app.counters.refused["limits.rate_limited"] == 2


async def test_stats_count_refusals_by_reason(idp: DevIdP, client: httpx.AsyncClient) -> None:
    async with open_python_relay(tunnel="demo", connector_ids=["conn-1"], issuer=idp.issuer) as (
        relay,
        _running,
    ):
        with trio.fail_after(10):
            await client.get(f"{relay.http_url}/.env")
            await client.get(f"{relay.http_url}/admin")
            await client.post(query_url(relay), json={"sql": "select 1"})
            await client.post(query_url(relay, "nope"), json={"sql": "select 1"})
            stats = (await client.get(f"{relay.http_url}/v1/relay/stats")).json()
    assert stats["refused"] == {
        "auth.missing_token": 1,
        "http.not_found": 2,
        "tunnel.unknown": 1,
    }
    assert stats["tunnels"]["demo"]["connections"] == 0
    assert "uptime_s" in stats


async def _call(app: RelayApp, scope: dict[str, Any]) -> tuple[int, bytes]:
    """Drive the ASGI app with one request (for client addresses loopback tests cannot have)."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


async def test_stats_need_the_stats_token_off_loopback() -> None:
    secret = "s3cret-stats"
    config, _keys = relay_config(
        tunnel="demo", connector_ids=["conn-1"], issuer="https://idp.example"
    )
    from dataclasses import replace

    config = replace(config, stats_token_sha256=hashlib.sha256(secret.encode()).hexdigest())
    async with config.make_verifier() as verifier:
        app = RelayApp(config, verifier)

        def scope(client: str, auth: str | None) -> dict[str, Any]:
            headers = [] if auth is None else [(b"authorization", auth.encode())]
            return {
                "type": "http",
                "method": "GET",
                "path": "/v1/relay/stats",
                "headers": headers,
                "client": (client, 40000),
            }

        assert (await _call(app, scope("203.0.113.7", None)))[0] == 401
        assert (await _call(app, scope("203.0.113.7", "Bearer wrong")))[0] == 401
        status, body = await _call(app, scope("203.0.113.7", f"Bearer {secret}"))
        assert status == 200
        assert b'"refused"' in body
        assert (await _call(app, scope("::1", None)))[0] == 200
        assert app.counters.refused["auth.invalid_token"] == 2
        # Failed-auth limits key IPv6 clients by /64 (one host owns the whole /64).
        key = app.limit_key
        assert key(scope("2001:db8:1:2::1", None)) == key(scope("2001:db8:1:2:ffff::9", None))
        assert key(scope("2001:db8:1:3::1", None)) != key(scope("2001:db8:1:2::1", None))
        assert key(scope("203.0.113.7", None)) == "203.0.113.7"


def test_rate_limiter_burst_refill_and_bound() -> None:
    limiter = RateLimiter(rate=2.0, burst=3, max_keys=2)
    assert [limiter.spend("a", 0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.spend("a", 0.0) == pytest.approx(0.5)
    assert limiter.retry_after("a", 0.25) == pytest.approx(0.25)
    assert limiter.spend("a", 0.5) == 0.0  # one token back after 0.5 s at 2/s
    assert limiter.retry_after("unknown", 0.5) == 0.0
    limiter.spend("b", 0.5)
    limiter.spend("c", 0.5)  # evicts the least recently used key ("a")
    assert len(limiter) == 2
    assert limiter.spend("a", 0.5) == 0.0  # "a" starts with a full bucket again


def test_disabled_limiter_and_retry_after_header() -> None:
    limiter = RateLimiter(rate=0, burst=1, max_keys=10)
    assert all(limiter.spend("x", 0.0) == 0.0 for _ in range(100))
    assert retry_after_header(0.01) == "1"
    assert retry_after_header(2.2) == "3"
    counters = RefusalCounters()
    counters.refuse("b")
    counters.refuse("a")
    counters.refuse("a")
    assert counters.snapshot()["refused"] == {"a": 2, "b": 1}


async def test_a_body_that_never_finishes_is_408(
    relay: RelayHandle, idp: DevIdP, monkeypatch: pytest.MonkeyPatch
) -> None:
    from relay import query as query_module

    monkeypatch.setattr(query_module, "BODY_TIMEOUT_S", 0.3)
    host, port = relay.http_url.removeprefix("http://").rsplit(":", 1)
    token = idp.mint(sub="slow")
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream(host, int(port))
        async with stream:
            await stream.send_all(
                (
                    f"POST /v1/tunnels/demo/query HTTP/1.1\r\nHost: {host}\r\n"
                    f"Authorization: Bearer {token}\r\nContent-Length: 100\r\n\r\n"
                    '{"sql": "sel'
                ).encode()
            )
            received = b""
            while b"\r\n\r\n" not in received:
                received += await stream.receive_some(65536)
    assert received.startswith(b"HTTP/1.1 408")


async def test_fair_admission_per_identity_and_per_tunnel(
    idp: DevIdP, client: httpx.AsyncClient
) -> None:
    """tests/support/fairness.py `relay_admission_scenario` (the Worker runs it too)."""
    async with open_python_relay(
        tunnel="demo",
        connector_ids=["conn-1"],
        issuer=idp.issuer,
        max_queries_per_identity=fairness.SMALL_CAP,
    ) as (relay, _running):

        async def state(http: httpx.AsyncClient) -> dict[str, int]:
            stats = (await http.get(f"{relay.http_url}/v1/relay/stats")).json()
            admission: dict[str, int] = stats["tunnels"]["demo"]["admission"]
            return admission

        with trio.fail_after(30):
            await fairness.relay_admission_scenario(
                client=client,
                url=query_url(relay),
                idp=idp,
                peer=lambda **options: peer(relay, **options),
                state=state,
            )


async def test_a_query_whose_client_left_stops_waiting(
    idp: DevIdP, client: httpx.AsyncClient
) -> None:
    """A client that hangs up while its query waits for a slot leaves the queue at once (no
    QUERY is ever sent for it), however long the admission wait."""
    limits = {**TEST_LIMITS, "admission_wait_ms": 60_000}
    async with open_python_relay(
        tunnel="demo", connector_ids=["conn-1"], issuer=idp.issuer, limits=limits
    ) as (relay, running):
        tunnel = running.app.registry.get("demo")
        gate = trio.Event()

        async def hold(p: Any, q: Any) -> None:
            await gate.wait()
            await p.done(q.stream_id, rows=0, query_id=q.query_id)

        headers = bearer(idp.mint(sub="a"))
        with trio.fail_after(20):
            async with peer(relay, handler=hold, max_streams=1) as p, trio.open_nursery() as n:
                n.start_soon(
                    partial(client.post, query_url(relay), json={"sql": "first"}, headers=headers)
                )
                await p.wait_query(1)
                async with trio.open_nursery() as waiting:
                    waiting.start_soon(
                        partial(
                            client.post, query_url(relay), json={"sql": "left"}, headers=headers
                        )
                    )
                    while not tunnel.admission.waiting():
                        await tunnel.wait_changed()
                    waiting.cancel_scope.cancel()  # the client hangs up
                while tunnel.admission.waiting():
                    await tunnel.wait_changed()
                gate.set()
        assert [q.sql for q in p.queries] == ["first"]
